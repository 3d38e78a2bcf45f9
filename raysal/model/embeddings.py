"""Embeddings beside the scores, and the cache that lets a later round skip the backbone.

Scoring can write each image's penultimate-layer embedding (``embedding``, float16 ``[d]``) into
the score files (``pipeline.writes_embeddings``). When training keeps the backbone frozen, the
next round's model differs from the last only in its head: the round rescores the pool from
those embeddings with the head alone (``pipeline.rescore``), with no image decoded and no
backbone run. The cache is the state's ``embeddings/<digest>.json``: which round's score files
hold the embeddings that the backbone with that digest (``models.backbone_digest``: its weights
and input side) made. A changed backbone has another digest, so its model never finds
embeddings it did not make: that is the invalidation.

Numpy, scipy and pyarrow only: no Ray, no TensorFlow (the rescoring tasks import this).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray
from scipy.special import softmax

EMBEDDING = "embedding"  # the score files' column
CACHE = "embeddings"  # the state's folder of cache entries
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


def cache_key(digest: str) -> str:
    return f"{CACHE}/{digest}.json"


def record(state: Any, digest: str, scores_key: str, round_number: int, model: int, rows: int,
           excluded: int) -> None:
    """Note that ``scores_key`` (round ``round_number``'s score files by model ``model``: ``rows``
    pool images, the ``excluded`` selected before it left out) holds the embeddings of the
    backbone with ``digest``."""
    state.write_json(cache_key(digest), {"digest": digest, "scores": scores_key, "round": round_number,
                                         "model": model, "rows": rows, "excluded": excluded})


def read_checkpoint_digest(state: Any, model_key: str) -> str | None:
    """The backbone digest of the checkpoint at ``model_key`` in ``state`` when it has one and a
    head that rescoring can apply (``HEAD_FILE``); else None (a checkpoint from before digests)."""
    meta = state.read_json(f"{model_key}/{CONFIG_FILE}") or {}
    return meta.get(DIGEST) if state.exists(f"{model_key}/{HEAD_FILE}") else None


def lookup(state: Any, digest: str | None, before_round: int) -> dict[str, Any] | None:
    """The cache entry for ``digest`` whose score files an earlier round than ``before_round``
    wrote and which still exist, or None."""
    if not digest:
        return None
    entry = state.read_json(cache_key(digest))
    if not entry or entry.get("digest") != digest or entry.get("round", before_round) >= before_round:
        return None  # a round's own folder is being rewritten by it
    return entry if state.exists(entry["scores"]) else None
