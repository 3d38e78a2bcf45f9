"""The embedding cache of a run: which round's score files hold the embeddings that a backbone
made, so that a later round whose model has that backbone rescores them with its head alone.

An entry (``state.embeddings_key(digest)``) names the score files, the round and model that
wrote them, and the pool's size then; a checkpoint's digest is in its ``model.json``.
"""

from __future__ import annotations

from typing import Any

from raysal.model.embeddings import CONFIG_FILE, DIGEST, HEAD_FILE
from raysal.run.state import RunState, embeddings_key


def record(state: RunState, digest: str, scores_key: str, round_number: int, model: int, rows: int,
           excluded: int) -> None:
    """Note that ``scores_key`` (round ``round_number``'s score files by model ``model``: ``rows``
    pool images, the ``excluded`` selected before it left out) holds the embeddings of the
    backbone with ``digest``."""
    state.write_json(embeddings_key(digest), {"digest": digest, "scores": scores_key, "round": round_number,
                                         "model": model, "rows": rows, "excluded": excluded})


def read_checkpoint_digest(state: RunState, model_key: str) -> str | None:
    """The backbone digest of the checkpoint at ``model_key`` in ``state`` when it has one and a
    head that rescoring can apply (``HEAD_FILE``); else None (a checkpoint from before digests)."""
    meta = state.read_json(f"{model_key}/{CONFIG_FILE}") or {}
    return meta.get(DIGEST) if state.exists(f"{model_key}/{HEAD_FILE}") else None


def lookup(state: RunState, digest: str | None, before_round: int) -> dict[str, Any] | None:
    """The cache entry for ``digest`` whose score files an earlier round than ``before_round``
    wrote and which still exist, or None."""
    if not digest:
        return None
    entry = state.read_json(embeddings_key(digest))
    if not entry or entry.get("digest") != digest or entry.get("round", before_round) >= before_round:
        return None  # a round's own folder is being rewritten by it
    if entry["scores"] != state.files(entry["round"]).scores:
        return None  # written by a round that lost the run: not the files its score stage committed
    return entry if state.exists(entry["scores"]) else None
