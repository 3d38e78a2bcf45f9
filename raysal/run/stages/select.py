"""The select stage: the round's budget chosen from its scores by the configured strategy, with
the exact distributed top-k; the images that could not be scored; the stop set's predictions,
compared with the previous round's (the stopping signal); and, for human labelling, the tasks
to hand out."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from raysal import faults
from raysal.model.embeddings import EMBEDDING
from raysal.run.context import DONE, Round
from raysal.run.stages.label import selection, write_tasks
from raysal.run.topk import select_top_k
from raysal.selection import stopping
from raysal.selection.strategies import get_strategy

log = logging.getLogger(__name__)


def stage_select(r: Round, label_file: str | None) -> str:
    # The scores folder itself, read by plain tasks: no Ray Data job to start for it.
    s = r.cfg.select
    strategy = get_strategy(s.strategy)
    keys = strategy.keys(s.beta, r.cfg.seed, r.number)
    columns = ("image_id", "uri", "score", "predicted", *([EMBEDDING] if strategy.spread else []))
    result = select_top_k(r.state.uri(r.files.scores), strategy.rows_to_find(s.budget, s.candidates),
                          r.state.excluded_ids(before=r.number), columns=columns, sample=stopping.STOP_SET,
                          keys=keys if keys.perturbs else None,
                          per_class=len(r.cfg.data.classes) if strategy.per_class else 0)
    best, skipped, pool_size = result.rows, result.skipped, result.rows_read
    picks = strategy.pick(best.get(EMBEDDING), s.budget)  # diversity: the budget among the candidates
    if picks is not None:
        best = {c: values[picks] for c, values in best.items()}
    left = pool_size - len(skipped["image_id"])
    if s.budget > left:
        log.warning("budget %d exceeds the %d images left to select: selected all of them", r.cfg.select.budget, left)
    if len(skipped["image_id"]):
        log.warning("%d pool images could not be scored and were skipped (e.g. %s: %s); the list with reasons is "
                    "%s", len(skipped["image_id"]), skipped["uri"][0], skipped["reason"][0],
                    r.state.uri(r.files.skipped))
    r.state.write_table(r.files.selection, pa.table({
        "image_id": pa.array(best["image_id"], pa.int64()), "uri": pa.array(best["uri"], pa.string()),
        "score": pa.array(best["score"], pa.float64()), "predicted": pa.array(best["predicted"], pa.int64()),
        "rank": pa.array(np.arange(1, len(best["image_id"]) + 1), pa.int64())}))
    faults.point("select:selection-written")
    r.state.write_table(r.files.skipped, pa.table({
        "image_id": pa.array(skipped["image_id"], pa.int64()), "uri": pa.array(skipped["uri"], pa.string()),
        "reason": pa.array(skipped["reason"], pa.string())}))
    stop_set = result.stop_set
    r.state.write_table(r.files.stop_set, pa.table({
        "image_id": pa.array(stop_set["image_id"], pa.int64()),
        "predicted": pa.array(stop_set["predicted"], pa.int64())}))
    if r.cfg.label.mode != "oracle":  # the tasks for people: part of the selection, committed with it
        write_tasks(r, selection(r))
    r.state.commit_stage(r.number, "select", {
        "pool_size": int(pool_size), "skipped": int(len(skipped["image_id"])), "selected": int(len(best["image_id"])),
        "score_min": result.score_min, "score_max": result.score_max, **agreement(r, stop_set)})
    return DONE


def agreement(r: Round, stop_set: dict[str, NDArray[np.int64]]) -> dict[str, Any]:
    """The stopping signal's fields for this round (``stopping.agreement``): its stop set against
    the previous round's, and the kappas of the rounds before it."""
    before = r.state.read_table(r.state.files(r.number - 1).stop_set) if r.number > 1 else None
    earlier = [(r.state.stage_done(n, "select") or {}).get("kappa")
               for n in range(r.number - stopping.STOP_WINDOW + 1, r.number)]
    return stopping.agreement(
        stop_set, None if before is None else {c: before[c].to_numpy() for c in ("image_id", "predicted")},
        earlier, r.number, r.cfg.select.stop_kappa)
