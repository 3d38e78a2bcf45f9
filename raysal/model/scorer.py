"""The model side of scoring: one model per actor, a batch of decoded images in, its score
columns out (``Scorer``), and the columns from class probabilities (``score_rows``), which the
rescoring from embeddings writes too. TensorFlow loads in the actor, not on import.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

from raysal import storage
from raysal.model import keras_env
from raysal.model.embeddings import EMBEDDING, to_float16

NON_FINITE = "model output is not finite (NaN or inf)"
SCORE_COLUMNS = ("image_id", "uri", "label", "score", "predicted", "top_classes", "top_probs", "error")


def score_rows(probs: NDArray[np.float32], rows: NDArray[np.intp], ids: NDArray[np.int64], errors: NDArray,
               criterion: Callable[[NDArray[np.floating], NDArray[np.int64]], NDArray[np.float64]],
               top: int, samples: NDArray[np.float32] | None = None) -> dict[str, NDArray]:
    """A batch's score columns from the class probabilities ``[m, c]`` of its ``rows`` (the rest
    could not be decoded): NaN scores for those, and a non-finite output is skipped and reported
    (``NON_FINITE`` in ``error``, a copy). What the scorer and the rescoring from embeddings write.
    ``samples`` ``[T, m, c]``: what a ``criteria.SAMPLED`` criterion scores instead of ``probs``
    (the predicted and top classes stay the model's own, without dropout)."""
    n = len(ids)
    errors = errors.copy()
    scores = np.full(n, np.nan)  # [n], NaN = skipped, never selected
    predicted = np.full(n, -1, dtype=np.int64)
    top_classes = np.full((n, top), -1, dtype=np.int64)  # [n, k]
    top_probs = np.zeros((n, top), dtype=np.float32)  # [n, k]
    finite = np.isfinite(probs).all(axis=1)  # [m]
    if samples is not None:
        finite &= np.isfinite(samples).all(axis=(0, 2))
    errors[rows[~finite]] = NON_FINITE
    ok, probs = rows[finite], probs[finite]
    if ok.size:
        scores[ok] = criterion(probs if samples is None else samples[:, finite], ids[ok].astype(np.int64))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :top]  # [m, k]
        predicted[ok] = order[:, 0]
        top_classes[ok] = order
        top_probs[ok] = np.take_along_axis(probs, order, axis=1)
    return {"score": scores, "predicted": predicted, "top_classes": top_classes, "top_probs": top_probs,
            "error": errors}


class Scorer:
    """Holds one model per actor; ``__call__`` scores one batch of decoded images."""

    def __init__(self, model_dir: str, criterion: str, seed: int, batch_size: int, top_probs: int,
                 xla: bool = False, mixed_precision: bool = False, board: Any = None,
                 embeddings: bool = False, mc_samples: int = 20, round_number: int = 0) -> None:
        keras_env.use_legacy_keras()
        import tensorflow as tf
        import tf_keras as keras

        from raysal.errors import ModelRefused
        from raysal.model import models
        from raysal.model.sampling import bald_sampler
        from raysal.selection import criteria

        keras_env.share_gpus()  # share the GPU, don't grab it all
        if mixed_precision:  # this actor's process only; float32 weights, float16 compute
            keras.mixed_precision.set_global_policy("mixed_float16")
        with storage.local_copy(model_dir) as local:  # a download is removed once the weights are loaded
            self.model, model_cfg, self.classes = models.load_checkpoint(local)
        self.criterion = criteria.get_criterion(criterion, seed)
        self.sampler = None  # bald: the head's members, or its MC dropout passes, over each image's embedding
        if criterion in criteria.SAMPLED:
            head = models.dense_head(self.model)
            if head is None or not (model_cfg.dropout > 0 or head.num_members > 1):
                raise ModelRefused(f"model {model_dir}: select.criterion {criterion!r} needs a Dropout + Dense "
                                   "softmax head with model.dropout > 0, or model.heads > 1 such heads, to sample, "
                                   "and this model has neither")
            self.sampler = bald_sampler(head, model_cfg.dropout, mc_samples, seed, round_number)
        self.board = board  # a progress.Board that counts scored images, or None
        self.batch_size = batch_size
        self.top = min(top_probs, len(self.classes))
        size = model_cfg.input_size
        spec = tf.TensorSpec([batch_size, size, size, 3], tf.uint8)  # fixed: traced once, XLA-friendly
        # With embeddings, one call gives both outputs: the backbone runs once per image.
        self.embeddings = embeddings  # written beside the scores
        self.embed = embeddings or self.sampler is not None  # computed: written, or sampled by the head
        net = keras.Model(self.model.inputs, [self.model.output, models.embedding_model(self.model).output]) \
            if self.embed else self.model
        self._predict = tf.function(lambda images: tf.nest.map_structure(
            lambda out: tf.cast(out, tf.float32), net(images, training=False)), input_signature=[spec], jit_compile=xla)
        out = self._predict(tf.zeros(spec.shape, tf.uint8))  # trace (and compile) now, as part of the actor's start
        self.dims = int(out[1].shape[-1]) if self.embed else 0  # known once run: a hub model may leave it open

    def outputs(self, images: NDArray[np.uint8]) -> tuple[NDArray[np.float32], NDArray[np.float16] | None]:
        """Class probabilities ``[n, c]``, and when embeddings are computed, the embeddings ``[n, d]``."""
        n = len(images)
        probs, embeddings = [], []
        for start in range(0, n, self.batch_size):
            chunk = images[start:start + self.batch_size]
            pad = self.batch_size - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.uint8)])
            out = self._predict(chunk)
            if self.embed:
                probs.append(out[0].numpy()[: self.batch_size - pad])
                embeddings.append(to_float16(out[1].numpy()[: self.batch_size - pad]))
            else:
                probs.append(out.numpy()[: self.batch_size - pad])
        empty = np.zeros((0, len(self.classes)), np.float32)
        return (np.concatenate(probs) if probs else empty,
                (np.concatenate(embeddings) if embeddings else np.zeros((0, self.dims), np.float16))
                if self.embed else None)

    def __call__(self, batch: dict[str, NDArray]) -> dict[str, NDArray]:
        n = len(batch["image_id"])
        decoded = np.flatnonzero(batch["error"] == "")
        probs, embeddings = self.outputs(batch["image"][decoded]) if decoded.size else (
            np.zeros((0, len(self.classes)), np.float32), np.zeros((0, self.dims), np.float16))
        # bald samples the float16 embeddings, as stored: rescoring them later gives the same scores
        samples = self.sampler(embeddings) if self.sampler is not None else None
        out = {"image_id": batch["image_id"], "uri": batch["uri"], "label": batch["label"],
               **score_rows(probs, decoded, batch["image_id"], batch["error"], self.criterion, self.top, samples)}
        if self.embeddings:  # NaN for an image that was not decoded
            out[EMBEDDING] = np.full((n, self.dims), np.nan, np.float16)  # [n, d]
            out[EMBEDDING][decoded] = embeddings
        if self.board is not None:
            self.board.add.remote(n)  # not awaited: progress never slows scoring
        return out
