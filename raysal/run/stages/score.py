"""The score stage: every pool image not yet selected, scored by the last round's model.

When that model's backbone made the embeddings in an earlier round's score files and the pool
still has the images it had then, those files are rescored with the head alone instead.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import ray
from numpy.typing import NDArray

from raysal.data.decode import decode
from raysal.errors import StateError
from raysal.model import embeddings
from raysal.report import progress
from raysal.run import embedding_cache, scoring
from raysal.run.context import DONE, Round
from raysal.run.state import embeddings_key
from raysal.run.topk import score_columns

log = logging.getLogger(__name__)


def drop_ids(batch: dict[str, NDArray], ids_ref: ray.ObjectRef) -> dict[str, NDArray]:
    """The batch without the ids in ``ids_ref`` (images selected by earlier rounds)."""
    keep = ~np.isin(batch["image_id"], ray.get(ids_ref))
    return {name: column[keep] for name, column in batch.items()}


def stage_score(r: Round, label_file: str | None) -> str:
    """Score the pool with the last round's model; or, when its backbone made the embeddings
    in an earlier round's score files (``embedding_cache.lookup``) and the pool still has the images it
    had then, rescore those with its head alone."""
    excluded = r.state.excluded_ids(before=r.number)
    scores_key = r.files.scores
    r.state.delete_dir(scores_key)  # a partial write by a crashed run
    pool, pool_size = r.sized_source(r.cfg.data.pool)
    total = pool_size - len(excluded)  # every excluded id is a pool image
    model_key = r.state.model_key(r.number - 1)
    digest = embedding_cache.read_checkpoint_digest(r.state, model_key)
    done = {"model": r.number - 1, "excluded": int(len(excluded))}
    cached = _cached_embeddings(r, digest, total, len(excluded))
    if cached is not None:
        log.info("stage score: the backbone of model %d made the embeddings in %s: rescoring them with its head "
                 "alone (no image decoded)", r.number - 1, r.state.uri(cached["scores"]))
        with progress.watch(r.board, "rescoring from embeddings", total) as board:
            written = scoring.rescore(r.state.uri(cached["scores"]), r.state.uri(scores_key),
                                      r.state.uri(model_key, embeddings.HEAD_FILE), excluded, r.cfg,
                                      scoring.writes_embeddings(r.cfg, reusable=False), board, round_number=r.number)
        if written != total:  # the cached files lost rows since: never select from a partial pool
            raise StateError(f"round {r.number}: rescoring {r.state.uri(cached['scores'])} gave {written} rows, not "
                             f"the pool's {total}; remove {r.state.uri(embeddings_key(digest))} and run again "
                             "to score the images in full")
        r.state.commit_stage(r.number, "score", {**done, "rescored_from": cached["scores"]})
        return DONE
    if len(excluded):
        pool = pool.map_batches(drop_ids, fn_kwargs={"ids_ref": ray.put(excluded)}, batch_format="numpy")
    keep = scoring.writes_embeddings(r.cfg, reusable=digest is not None)
    with progress.watch(r.board, "scoring", total) as board:
        scoring.write_scores(scoring.score(decode(pool, r.cfg), r.model_uri(r.number - 1), r.cfg,
                                           board=board, embeddings=keep, round_number=r.number),
                             r.state.uri(scores_key), total)
    if keep and digest is not None:
        embedding_cache.record(r.state, digest, scores_key, r.number, r.number - 1, total, len(excluded))
    r.state.commit_stage(r.number, "score", done)
    return DONE


def _cached_embeddings(r: Round, digest: str | None, total: int, excluded: int) -> dict[str, Any] | None:
    """The cache entry to rescore from: for this backbone, from an earlier round, whose files
    have embeddings and whose pool had as many images as the pool has now (a pool that gained
    or lost images is scored in full)."""
    entry = embedding_cache.lookup(r.state, digest, r.number) if r.cfg.score.reuse_embeddings else None
    if entry is None or entry["rows"] - (excluded - entry["excluded"]) != total:
        return None
    return entry if embeddings.EMBEDDING in score_columns(r.state.uri(entry["scores"])) else None
