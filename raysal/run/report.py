"""A run's HTML report (``raysal.report.html``), made from its state and written beside it.

Every round writes it into ``<state>/report/`` when it ends, done or waiting for labels, and
``raysal report`` writes it anywhere. It reads only what the rounds committed: their records and
stage markers, each selection and skipped list, and the latest model's test metrics. Thumbnails
are made once per round (``raysal.run.thumbnails``).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from raysal.config import Config, config_from_dict
from raysal.model.embeddings import column_matrix
from raysal.report import html, plots
from raysal.report.metrics import TEST_METRICS_FILE
from raysal.run import status as status_lib
from raysal.run import thumbnails
from raysal.run.state import REPORT_DIR, STAGES, RunState
from raysal.run.store import Store

log = logging.getLogger(__name__)

ROUND_FIELDS = ("selected", "labelled_total", "skipped", "test_accuracy_before", "test_accuracy_after",
                "test_balanced_accuracy_before", "test_balanced_accuracy_after", "selection_accuracy_before", "kappa")


def _config(state: RunState, number: int) -> Config | None:
    stored = state.read_json(state.files(number).config)
    return None if stored is None else config_from_dict(stored)


def _round_row(state: RunState, number: int) -> dict[str, Any]:
    """A round's line of the table: its record when done, else what its committed stages say."""
    record = state.round_record(number)
    if record:
        row = {k: record.get(k) for k in ROUND_FIELDS}
        if record.get("cold_start"):
            row["labelled_total"] = record.get("labelled")
        return {**row, "round": number, "state": "done" + (" (cold start)" if record.get("cold_start") else ""),
                "stage_seconds": record.get("stage_seconds") or {}}
    select = state.stage_done(number, "select") or {}
    return {**{k: select.get(k) for k in ROUND_FIELDS}, "round": number,
            "state": status_lib.round_state(state, number), "stage_seconds": {}}


def _top(state: RunState, number: int, ids: pa.Array) -> dict[int, float]:
    """image_id -> the scoring model's probability of its top class, from the round's scores;
    none where no model scored them (a cold start's round 0: its scores hold features alone)."""
    if not state.exists(state.files(number).scores):
        return {}
    try:
        found = state.read_table(state.files(number).scores, columns=["image_id", "top_probs"],
                                 filters=pc.field("image_id").isin(ids))
    except pa.ArrowInvalid:  # no top_probs column
        return {}
    if found is None or not found.num_rows:
        return {}
    return dict(zip(found["image_id"].to_pylist(), column_matrix(found["top_probs"])[:, 0].tolist(), strict=True))


def _class_name(classes: tuple[str, ...], index: int | None) -> str | None:
    return classes[index] if index is not None and 0 <= index < len(classes) else None


def _gallery(state: RunState, cfg: Config, number: int, cache: bool) -> list[html.Picture]:
    chosen = state.read_table(state.files(number).selection)
    if chosen is None:
        return []
    scored = "predicted" in chosen.column_names and chosen["predicted"].null_count < chosen.num_rows
    top = _top(state, number, chosen["image_id"]) if scored else {}
    thumbs = thumbnails.thumbnails(state, cfg, number, chosen.select(["image_id", "uri"]), cache=cache)
    classes = cfg.data.classes
    rows = chosen.to_pylist()
    return [html.Picture(
        image_id=row["image_id"], uri=row["uri"], rank=row.get("rank") or i + 1, score=row.get("score") or 0.0,
        predicted=_class_name(classes, row.get("predicted")) if top else None,
        probability=top.get(row["image_id"]), thumbnail=thumbs[row["image_id"]][0], error=thumbs[row["image_id"]][1])
        for i, row in enumerate(rows)]


def _skipped(state: RunState, number: int) -> list[dict[str, Any]]:
    table = state.read_table(state.files(number).skipped) if state.stage_done(number, "select") else None
    return [] if table is None else [{"round": number, **row} for row in table.to_pylist()]


def _figures(state: RunState, cfg: Config, report: html.Report, history: list[dict[str, Any]]) -> None:
    """The learning curve, per-class accuracy, confusion matrix and kappa of ``report``."""
    if history:
        xs, curves = status_lib.curve_points(history, {"accuracy": "accuracy",
                                                       "balanced accuracy": "balanced_accuracy"})
        report.learning_curve = plots.learning_curve_png(xs, curves, f"raysal: {report.name}")
        records = [state.round_record(h["round"]) for h in history]
        per_class = [r.get("test_per_class_after") or {} for r in records]
        classes = cfg.data.classes
        report.per_class = plots.heatmap_png(
            [[p.get(c) for p in per_class] for c in classes], classes, [str(h["round"]) for h in history],
            "test accuracy per class, after each round's retraining", "round", "class", vmax=1.0)
    latest = state.latest_model()
    metrics = None if latest is None else state.read_json(f"{state.model_key(latest)}/{TEST_METRICS_FILE}")
    if metrics and metrics.get("confusion"):
        report.confusion_model = latest
        report.confusion = plots.heatmap_png(metrics["confusion"], cfg.data.classes, cfg.data.classes,
                                             f"model {latest} on the test split ({metrics['count']} images)",
                                             "predicted class", "true class", number_format="{:.0f}")
    kappas = [(row["round"], row["kappa"]) for row in report.rounds if row.get("kappa") is not None]
    if kappas:
        report.kappa = plots.kappa_png([k[0] for k in kappas], [k[1] for k in kappas], report.stop_kappa)


def build(state: RunState, cache: bool = True) -> html.Report:
    """The report of the run in ``state``, from what its rounds committed; ``cache``: keep the
    thumbnails it makes in the state."""
    numbers = state.rounds()
    configs = {n: cfg for n in numbers if (cfg := _config(state, n)) is not None}
    latest_cfg = configs[max(configs)] if configs else None
    report = html.Report(
        name=latest_cfg.name if latest_cfg else "(no round yet)", state=state.root,
        generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        rounds=[_round_row(state, n) for n in numbers], stage_names=list(STAGES),
        stop_kappa=latest_cfg.select.stop_kappa if latest_cfg else 0.0)
    for number, cfg in configs.items():
        if state.stage_done(number, "select"):
            report.galleries[number] = _gallery(state, cfg, number, cache)
            report.skipped += _skipped(state, number)
    if latest_cfg is not None:
        _figures(state, latest_cfg, report, status_lib.history(state))
    return report


def write(state: RunState, out: str | None = None) -> str:
    """Build the report of ``state`` and write its files into ``out`` (a folder or URI; default
    the state's ``report/``, and the thumbnails it makes are kept in the state; elsewhere, the
    state is only read); returns the index's path."""
    started = time.monotonic()
    files = html.render(build(state, cache=out is None))
    target = Store(out) if out is not None else None
    for name, data in files.items():
        if target is None:
            state.write_bytes(f"{REPORT_DIR}/{name}", data)
        else:
            target.write_bytes(name, data)
    index = state.uri(REPORT_DIR, html.INDEX) if target is None else target.uri(html.INDEX)
    log.debug("report: %d files in %.1f s", len(files), time.monotonic() - started)
    return index
