"""One active-learning round, end to end: bootstrap model, score the pool, select, report.

This is the library function that ``jobs/round.py`` calls; it assumes Ray is initialised.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import ray
import ray.data
from numpy.typing import NDArray

from raysal import pipeline, sources, state
from raysal.config import Config

log = logging.getLogger(__name__)


@dataclass
class RoundSummary:
    round: int
    pool_size: int
    skipped: int
    selected: int
    score_min: float | None
    score_max: float | None
    selection_path: str
    model_dir: str
    stage_seconds: dict[str, float] = field(default_factory=dict)
    train_metrics: dict[str, Any] = field(default_factory=dict)


@contextmanager
def _stage(name: str, seconds: dict[str, float]) -> Iterator[None]:
    log.info("stage %s: started", name)
    start = time.perf_counter()
    yield
    seconds[name] = round(time.perf_counter() - start, 3)
    log.info("stage %s: done in %.1f s", name, seconds[name])


def data_root(cfg: Config, state_dir: str) -> str:
    return cfg.data.root or os.path.join(state_dir, "data")


def training_dataset(cfg: Config, source: Any, root: str) -> ray.data.Dataset:
    """A labelled split, decoded, as ``image`` + ``label`` rows (undecodable images dropped)."""
    decoded = pipeline.decode(sources.read_source(source, cfg.data.classes, root), cfg)
    return decoded.map_batches(pipeline.labelled_images, batch_format="numpy")


def bootstrap_model(cfg: Config, state_dir: str, seconds: dict[str, float]) -> tuple[str, dict[str, Any]]:
    """The round-0 model: reuse the stored one, or train it on the labelled seed set."""
    latest = state.latest_model(state_dir)
    if latest:
        return latest, {}
    root = data_root(cfg, state_dir)
    from raysal import train  # TensorFlow and Ray Train load only when a model is trained

    with _stage("train", seconds):
        # Decoded once and held in the object store, not re-decoded every epoch.
        train_ds = training_dataset(cfg, cfg.data.labelled, root).materialize()
        val_ds = training_dataset(cfg, cfg.data.val, root).materialize()
        result = train.train_model(
            cfg, train_ds, val_ds,
            output_dir=state.model_dir(state_dir, 0), storage_path=os.path.abspath(os.path.join(state_dir, "train")),
            run_name="round-0000")
    log.info("round-0 model: %s", {k: v for k, v in result.metrics.items() if k in ("accuracy", "val_accuracy")})
    return result.model_dir, result.metrics


def run_round(cfg: Config, state_dir: str) -> RoundSummary:
    """Score the pool with the latest model, select ``select.budget`` images, commit the round."""
    seconds: dict[str, float] = {}
    number = len(state.committed_rounds(state_dir)) + 1
    out_dir = state.round_dir(state_dir, number)
    model_dir, train_metrics = bootstrap_model(cfg, state_dir, seconds)
    root = data_root(cfg, state_dir)

    excluded = state.selected_ids(state_dir)
    excluded_ref = ray.put(excluded)
    pool = sources.read_source(cfg.data.pool, cfg.data.classes, root)
    if len(excluded):
        pool = pool.map_batches(pipeline.drop_ids, fn_kwargs={"ids_ref": excluded_ref}, batch_format="numpy")

    scores_dir = os.path.join(out_dir, state.SCORES_DIR)
    with _stage("score", seconds):
        tmp_dir = f"{scores_dir}.tmp-{os.getpid()}"
        pipeline.score(pipeline.decode(pool, cfg), model_dir, cfg).write_parquet(tmp_dir)
        state.replace_dir(tmp_dir, scores_dir)
    scored = ray.data.read_parquet(scores_dir)

    with _stage("select", seconds):
        pool_size = scored.count()  # from Parquet metadata
        selection_result = pipeline.select_top_k(scored, cfg.select.budget, excluded)
        best, skipped_rows = selection_result.rows, selection_result.skipped
        skipped = len(skipped_rows["image_id"])
        budget = cfg.select.budget
        if budget > pool_size - skipped:
            log.warning("budget %d exceeds the %d images left to select: selected all of them",
                        budget, pool_size - skipped)
        selection = pa.table({"image_id": pa.array(best["image_id"], pa.int64()), "uri": pa.array(best["uri"], pa.string()),
                              "score": pa.array(best["score"], pa.float64()),
                              "predicted": pa.array(best["predicted"], pa.int64()),
                              "rank": pa.array(np.arange(1, len(best["image_id"]) + 1), pa.int64())})
        state.write_table(os.path.join(out_dir, state.SELECTION_FILE), selection)
        state.write_table(os.path.join(out_dir, state.SKIPPED_FILE), pa.table({
            "image_id": pa.array(skipped_rows["image_id"], pa.int64()),
            "uri": pa.array(skipped_rows["uri"], pa.string()),
            "reason": pa.array(skipped_rows["reason"], pa.string())}))

    summary = RoundSummary(
        round=number, pool_size=pool_size, skipped=skipped, selected=len(selection),
        score_min=selection_result.score_min, score_max=selection_result.score_max,
        selection_path=os.path.join(out_dir, state.SELECTION_FILE), model_dir=model_dir,
        stage_seconds=seconds, train_metrics=train_metrics)
    state.write_json(os.path.join(out_dir, state.ROUND_FILE), {
        "round": number, "criterion": cfg.select.criterion, "budget": budget, "selected": summary.selected,
        "pool_size": pool_size, "skipped": skipped, "score_min": summary.score_min, "score_max": summary.score_max,
        "model": model_dir, "stage_seconds": seconds, "train_metrics": train_metrics, "config": cfg.to_dict(),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return summary


def format_summary(s: RoundSummary) -> str:
    """The human summary printed at the end of a round."""
    score_range = "n/a" if s.score_min is None else f"{s.score_min:.4f} .. {s.score_max:.4f}"
    stages = ", ".join(f"{name} {sec:.1f} s" for name, sec in s.stage_seconds.items())
    lines = [
        f"round {s.round}: selected {s.selected} of {s.pool_size} pool images ({s.skipped} skipped)",
        f"  scores: {score_range}",
        f"  selection: {s.selection_path}",
        f"  model: {s.model_dir}",
        f"  wall time: {stages}",
    ]
    if s.train_metrics:
        shown = {k: round(float(v), 4) for k, v in s.train_metrics.items() if k in ("accuracy", "val_accuracy")}
        lines.append(f"  round-0 model: {shown}")
    return "\n".join(lines)
