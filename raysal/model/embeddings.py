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

import hashlib
import io
import json
import posixpath
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
from numpy.typing import NDArray
from scipy.special import softmax

from raysal import storage
from raysal.errors import ModelRefused

EMBEDDING = "embedding"  # the score files' column
HEAD_FILE = "head.npz"  # in a checkpoint: its head's kernel and bias, K members' stacked (``models.save_checkpoint``)
CONFIG_FILE = "model.json"  # a checkpoint's config, classes and backbone digest (``models.save_checkpoint``)
DIGEST = "backbone_digest"  # its field
FILE_DIGESTS = "sha256"  # its field: the sha256 of each file published beside it, checked on loading
_CHECKED: set[tuple[Any, ...]] = set()  # checkpoints (and their files' sizes and times) found whole here


FLOAT16_MAX = float(np.finfo(np.float16).max)


def sha256_file(fs: pafs.FileSystem, path: str) -> str:
    """The sha256 of a file, read in pieces (a model's weights can be hundreds of MB)."""
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as stream:
        while piece := stream.read(8 << 20):
            digest.update(piece)
    return digest.hexdigest()


def check_files(checkpoint: str, names: Sequence[str] | None = None) -> dict[str, Any]:
    """Refuse a checkpoint (a local folder or a URI) whose files are not those its ``model.json``
    recorded when it was published (``FILE_DIGESTS``): a file changed or swapped since, in a
    shared bucket say, is never loaded (``ModelRefused``, exit 2). ``names``: only these files.
    A checkpoint from before digests is taken as it is. Returns its ``model.json``."""
    fs, base = storage.resolve(checkpoint)
    with fs.open_input_stream(posixpath.join(base, CONFIG_FILE)) as stream:
        meta = json.loads(stream.read())
    recorded = {name: value for name, value in (meta.get(FILE_DIGESTS) or {}).items()
                if names is None or name in names}
    infos = fs.get_file_info([posixpath.join(base, name) for name in recorded])
    missing = [name for name, info in zip(recorded, infos, strict=True) if info.type != pafs.FileType.File]
    if missing:
        raise ModelRefused(f"model {checkpoint}: {', '.join(missing)} missing, though its {CONFIG_FILE} records it")
    # Hashed again only when a file's size or modification time changed since this process did.
    key = (checkpoint, json.dumps(recorded, sort_keys=True), tuple((i.size, i.mtime_ns) for i in infos))
    if key in _CHECKED:
        return meta
    for name, expected in recorded.items():
        found = sha256_file(fs, posixpath.join(base, name))
        if found != expected:
            raise ModelRefused(f"model {checkpoint}: {name} is not the file that was published (sha256 "
                               f"{found[:16]}..., {CONFIG_FILE} records {expected[:16]}...): it was changed since; it "
                               "is not loaded. Restore it, or remove the model folder to train it again")
    _CHECKED.add(key)
    return meta


def to_float16(values: NDArray[np.floating]) -> NDArray[np.float16]:
    """Embeddings as stored: float16, clipped to its range (65,504) rather than overflowing to inf."""
    return np.clip(values, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)


@dataclass(frozen=True)
class DenseHead:
    """A model's head as numpy: one Dense softmax layer, or an ensemble of K of them on the same
    embedding (``model.heads``), whose output is the mean of its members' probabilities.

    Arrays of one member are ``kernel [d, c]`` and ``bias [c]``; of K members, ``[K, d, c]`` and ``[K, c]``.
    """

    kernel: NDArray[np.float32]  # [d, c] or [K, d, c]
    bias: NDArray[np.float32]  # [c] or [K, c]

    def __post_init__(self) -> None:
        if self.kernel.ndim not in (2, 3) or self.kernel.shape[:-2] + self.kernel.shape[-1:] != self.bias.shape:
            raise ValueError(f"a head's kernel [d, c] or [K, d, c] and bias [c] or [K, c] do not fit: "
                             f"{self.kernel.shape} and {self.bias.shape}")

    @property
    def num_members(self) -> int:
        """K: 1 for one Dense layer."""
        return 1 if self.kernel.ndim == 2 else self.kernel.shape[0]

    @property
    def num_classes(self) -> int:
        return self.bias.shape[-1]

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, kernel=self.kernel, bias=self.bias)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> DenseHead:
        with np.load(io.BytesIO(data)) as arrays:
            return cls(arrays["kernel"], arrays["bias"])

    def members(self, embeddings: NDArray[np.floating]) -> NDArray[np.float32]:
        """Each member's class probabilities ``[K, n, c]`` for embeddings ``[n, d]``: what ``bald``
        scores the disagreement of. The K kernels are one ``[d, K * c]`` matrix: one product."""
        kernel = self.kernel.reshape(-1, *self.kernel.shape[-2:])  # [K, d, c]
        k, d, c = kernel.shape
        stacked = kernel.transpose(1, 0, 2).reshape(d, k * c)  # [d, K * c]
        logits = np.asarray(embeddings, np.float32) @ stacked + self.bias.reshape(k * c)  # [n, K * c]
        return softmax(logits.reshape(-1, k, c), axis=2).astype(np.float32).transpose(1, 0, 2)  # [K, n, c]

    def probs(self, embeddings: NDArray[np.floating]) -> NDArray[np.float32]:
        """Class probabilities ``[n, c]`` for embeddings ``[n, d]``: the members' mean."""
        if self.num_members == 1:
            logits = np.asarray(embeddings, np.float32) @ self.kernel + self.bias  # [n, c]
            return softmax(logits, axis=1).astype(np.float32)  # [n, c]
        return self.members(embeddings).mean(axis=0)  # [n, c]


def column_matrix(column: pa.ChunkedArray | pa.Array) -> NDArray:
    """A column of equal-length vectors (``embedding``, ``top_probs``) as ``[n, d]``: a Ray tensor
    column or a list column alike."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(array, pa.ExtensionArray):  # Ray's tensor type: a (large) list underneath
        array = array.storage
    n = len(array)
    values = array.flatten().to_numpy(zero_copy_only=False)  # flatten(): only this slice's values
    return values.reshape(n, -1) if n else values.reshape(0, 0)
