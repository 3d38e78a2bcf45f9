"""What a run reports: each round's state, the history and learning curve, and the summary
printed at the end of a round."""

from __future__ import annotations

from typing import Any

from raysal.report.metrics import ROUND_FIGURES
from raysal.report.plots import learning_curve_png
from raysal.run import lease as lease_lib
from raysal.run.context import DONE, WAITING
from raysal.run.state import HISTORY_FILE, LEARNING_CURVE_FILE, REPORT_DIR, RunState
from raysal.selection.stopping import AGREEMENT_FIELDS, agreement_lines
from raysal.selection.strategies import get_strategy


def history(state: RunState) -> list[dict[str, Any]]:
    out = []
    for number in state.rounds():
        record = state.round_record(number)
        if record and not record.get("cold_start"):  # a cold start's round 0 trains no model: no figures
            out.append({**{k: record[k] for k in ("round", "selected", "labelled_total", "test_accuracy_before",
                                                  "test_accuracy_after", "selection_accuracy_before")},
                        **{k: record.get(k) for k in ROUND_FIGURES}})  # None for a round recorded before them
    return out


CURVES = {"accuracy": "accuracy", "balanced accuracy": "balanced_accuracy", "macro-F1": "macro_f1"}  # label: figure


def curve_points(rows: list[dict[str, Any]], curves: dict[str, str] = CURVES
                 ) -> tuple[list[int], dict[str, list[float | None]]]:
    """The learning curve's points from ``history`` rows: labelled images (the first round's
    before-figure first), and each of ``curves`` (label: figure) before round 1, then after each round."""
    xs = [rows[0]["labelled_total"] - rows[0]["selected"]] + [h["labelled_total"] for h in rows]
    return xs, {label: [rows[0][f"test_{figure}_before"]] + [h[f"test_{figure}_after"] for h in rows]
                for label, figure in curves.items()}


def redraw(state: RunState, name: str) -> None:
    """Rewrite ``history.json`` and the learning curve (test accuracy, balanced accuracy and
    macro-F1) from the rounds done."""
    rows = history(state)
    state.write_json(HISTORY_FILE, rows)
    if rows:
        state.write_bytes(LEARNING_CURVE_FILE, learning_curve_png(*curve_points(rows), f"raysal: {name}"))


def round_state(state: RunState, number: int) -> str:
    """``done``, ``waiting for labels``, ``incomplete: next stage X`` or ``not started``."""
    if state.round_record(number):
        return DONE
    if not state.exists(state.files(number).config):
        return "not started"
    next_stage = state.next_stage(number)
    if next_stage == "label" and state.exists(state.files(number).to_label):
        return WAITING
    return f"incomplete: next stage {next_stage}"


def status(state_root: str) -> dict[str, Any]:
    """The state as plain data, for ``--status --json``."""
    state = RunState(state_root)
    rounds = []
    for number in state.rounds():
        record = state.round_record(number)
        if record:
            rounds.append({**record, "state": DONE})
            continue
        select = state.stage_done(number, "select") or {}
        rounds.append({"round": number, "selected": select.get("selected"),
                       "selection": state.uri(state.files(number).selection) if select else None,
                       "state": round_state(state, number),
                       **{k: select.get(k) for k in AGREEMENT_FIELDS}})
    latest = state.latest_model()
    return {"state": state.root, "rounds": rounds, "leased_by": lease_lib.current(state),
            "latest_model": None if latest is None else state.uri(state.model_key(latest)),
            "history": state.uri(HISTORY_FILE), "learning_curve": state.uri(LEARNING_CURVE_FILE),
            "report": state.uri(REPORT_DIR, "index.html") if state.exists(f"{REPORT_DIR}/index.html") else None}


def _strategy(record: dict[str, Any]) -> str:
    return get_strategy(record.get("strategy", "top_k")).describe(record.get("beta", 1.0), record.get("candidates", 4))


def format_outcome(outcome: Any, log_path: str | None = None) -> str:
    """The human summary printed at the end of a round."""
    report = getattr(outcome, "report", None)
    if outcome.status == WAITING:
        return "\n".join([outcome.message, *([f"  report: {report}"] if report else []),
                          *([f"  log: {log_path}"] if log_path else [])])
    rec = outcome.record
    before = [outcome.message] if outcome.message else []  # round 0 of a cold start, done in the same run
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    stages = ", ".join(f"{name} {sec:.0f} s" for name, sec in outcome.stage_seconds.items())
    per_class = rec.get("test_per_class_after") or {}
    lines = before + [
        f"round {rec['round']}: selected {rec['selected']} of {rec['pool_size']} pool images "
        f"({rec['skipped']} skipped) by {rec['criterion']}{_strategy(rec)}, {rec['labelled_total']} labelled in all",
        f"  test accuracy: {fmt(rec['test_accuracy_before'])} before retraining, "
        f"{fmt(rec['test_accuracy_after'])} after; on the selected images before retraining "
        f"{fmt(rec['selection_accuracy_before'])}",
        f"  test balanced accuracy: {fmt(rec.get('test_balanced_accuracy_before'))} before, "
        f"{fmt(rec.get('test_balanced_accuracy_after'))} after; macro-F1: {fmt(rec.get('test_macro_f1_before'))} "
        f"before, {fmt(rec.get('test_macro_f1_after'))} after",
    ]
    if per_class:
        lines.append("  test accuracy per class: " + ", ".join(
            f"{name} {'n/a' if acc is None else f'{acc:.2f}'}" for name, acc in per_class.items()))
    if rec.get("unlabelled"):
        lines.append(f"  {rec['unlabelled']} selected images got no label (skipped, missing or tied): back to the "
                     "pool for later rounds")
    if rec.get("rescored_from"):
        lines.append(f"  scored by model {rec['round'] - 1}'s head alone, from the embeddings in "
                     f"{rec['rescored_from']} (its backbone made them: no image decoded)")
    lines += agreement_lines(rec)
    if not stages:
        lines.append("  (resumed after its last stage had committed: only its record was written now)")
    lines += [f"  selection:      {rec['selection']}",
              f"  metrics:        {rec.get('metrics', 'n/a')}",
              f"  learning curve: {rec.get('learning_curve', 'n/a')}"]
    if report:
        lines.append(f"  report:         {report}")
    if log_path:
        lines.append(f"  log:            {log_path}")
    return "\n".join(lines)
