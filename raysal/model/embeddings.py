"""Embeddings beside the scores, and the numpy head that rescores them without the backbone.

Scoring can write each image's penultimate-layer embedding (``embedding``, float16 ``[d]``) into
the score files (``raysal.run.scoring.writes_embeddings``). When training keeps the backbone frozen, the
next round's model differs from the last only in its head: the round rescores the pool from
those embeddings with the head alone (``raysal.run.scoring.rescore``), with no image decoded and no
backbone run. The cache (``raysal.run.embedding_cache``) is the state's ``embeddings/<digest>.json``:
which round's score files
hold the embeddings that the backbone with that digest (``models.backbone_digest``: its weights
and input side) made. A changed backbone has another digest, so its model never finds
embeddings it did not make: that is the invalidation.

Numpy, scipy and pyarrow only: no Ray, no TensorFlow (the rescoring tasks import this).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray
from scipy.special import softmax

EMBEDDING = "embedding"  # the score files' column
HEAD_FILE = "head.npz"  # in a checkpoint: its head's kernel and bias (``models.save_checkpoint``)
CONFIG_FILE = "model.json"  # a checkpoint's config, classes and backbone digest (``models.save_checkpoint``)
DIGEST = "backbone_digest"  # its field


FLOAT16_MAX = float(np.finfo(np.float16).max)


def to_float16(values: NDArray[np.floating]) -> NDArray[np.float16]:
    """Embeddings as stored: float16, clipped to its range (65,504) rather than overflowing to inf."""
    return np.clip(values, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)


@dataclass(frozen=True)
class DenseHead:
    """A model's head as numpy: its output is ``softmax(x @ kernel + bias)``."""

    kernel: NDArray[np.float32]  # [d, c]
    bias: NDArray[np.float32]  # [c]

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, kernel=self.kernel, bias=self.bias)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> DenseHead:
        with np.load(io.BytesIO(data)) as arrays:
            return cls(arrays["kernel"], arrays["bias"])

    def probs(self, embeddings: NDArray[np.floating]) -> NDArray[np.float32]:
        """Class probabilities ``[n, c]`` for embeddings ``[n, d]``."""
        logits = np.asarray(embeddings, np.float32) @ self.kernel + self.bias  # [n, c]
        return softmax(logits, axis=1).astype(np.float32)  # [n, c]


def column_matrix(column: pa.ChunkedArray | pa.Array) -> NDArray:
    """A column of equal-length vectors (``embedding``, ``top_probs``) as ``[n, d]``: a Ray tensor
    column or a list column alike."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(array, pa.ExtensionArray):  # Ray's tensor type: a (large) list underneath
        array = array.storage
    n = len(array)
    values = array.flatten().to_numpy(zero_copy_only=False)  # flatten(): only this slice's values
    return values.reshape(n, -1) if n else values.reshape(0, 0)
