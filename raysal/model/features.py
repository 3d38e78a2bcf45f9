"""A cold start's features: what round 0 clusters before any model is trained.

A pretrained backbone (``ModelConfig.pretrained``: a hub handle, your Keras model, InceptionV3
with its weights file) gives each image the embedding scoring would give it
(``models.embedding_model``), on an actor pool like scoring's (``BackboneFeatures``). A model
trained from scratch says nothing before it is trained: the image's pixels, downsampled to
``PIXEL_SIDE`` x ``PIXEL_SIDE`` (``typical.pixel_features``), stand in (``pixel_rows``). Either is
the ``embedding`` column (float16 ``[d]``, NaN where the image could not be decoded) of round 0's
score files. TensorFlow loads in the actor, not on import.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from raysal.model import keras_env
from raysal.model.embeddings import EMBEDDING, to_float16

PIXEL_SIDE = 8  # 8 x 8 x 3 = 192 values per image: the shape of a digit, the colours of a photo
FEATURE_COLUMNS = ("image_id", "uri", "label", "error", EMBEDDING)


def _rows(batch: dict[str, NDArray], features: NDArray[np.floating], decoded: NDArray[np.intp],
          board: Any) -> dict[str, NDArray]:
    """The batch's ``FEATURE_COLUMNS``: ``features`` ``[m, d]`` for its ``decoded`` rows, NaN elsewhere."""
    n = len(batch["image_id"])
    out = np.full((n, features.shape[1]), np.nan, np.float16)  # [n, d]
    out[decoded] = to_float16(features)
    if board is not None:
        board.add.remote(n)  # not awaited
    return {"image_id": batch["image_id"], "uri": batch["uri"], "label": batch["label"], "error": batch["error"],
            EMBEDDING: out}


def pixel_rows(batch: dict[str, NDArray], board: Any = None) -> dict[str, NDArray]:
    """A decoded batch's pixel features (``FEATURE_COLUMNS``), for a model trained from scratch."""
    from raysal.selection.typical import pixel_features

    decoded = np.flatnonzero(batch["error"] == "")
    images = batch["image"][decoded]
    dims = PIXEL_SIDE * PIXEL_SIDE * (images.shape[-1] if images.ndim == 4 else 3)
    features = pixel_features(images, PIXEL_SIDE) if decoded.size else np.zeros((0, dims), np.float32)
    return _rows(batch, features, decoded, board)


class BackboneFeatures:
    """A pretrained backbone on one actor: decoded images in, their embeddings out
    (``FEATURE_COLUMNS``). The backbone is built as a round builds it (``models.build_model``:
    the same files, checks and preprocessing), its new head unused."""

    def __init__(self, model: dict[str, Any], num_classes: int, batch_size: int, board: Any = None) -> None:
        keras_env.use_legacy_keras()
        import tensorflow as tf

        from raysal.config import ModelConfig
        from raysal.model import models

        keras_env.share_gpus()  # share the GPU, don't grab it all
        cfg = ModelConfig.from_dict(model)
        net = models.embedding_model(models.build_model(cfg, num_classes))
        size = cfg.input_size
        spec = tf.TensorSpec([batch_size, size, size, 3], tf.uint8)  # fixed: traced once
        self._predict = tf.function(lambda images: tf.cast(net(images, training=False), tf.float32),
                                    input_signature=[spec])
        self.dims = int(self._predict(tf.zeros(spec.shape, tf.uint8)).shape[-1])  # traced now, as the actor starts
        self.batch_size = batch_size
        self.board = board

    def features(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        """``[n, d]`` embeddings of ``[n, s, s, 3]`` images, in padded batches of the traced size."""
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            pad = self.batch_size - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.uint8)])
            out.append(self._predict(chunk).numpy()[: self.batch_size - pad])
        return np.concatenate(out) if out else np.zeros((0, self.dims), np.float32)

    def __call__(self, batch: dict[str, NDArray]) -> dict[str, NDArray]:
        decoded = np.flatnonzero(batch["error"] == "")
        return _rows(batch, self.features(batch["image"][decoded]), decoded, self.board)
