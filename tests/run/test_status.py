"""raysal.run.status and ``raysal status`` on hand-written round records: balanced accuracy and
macro-F1 beside accuracy, and a round recorded before they were measured shown as n/a."""

from __future__ import annotations

import json

import pytest

from raysal.cli.status import print_status
from raysal.report.metrics import ROUND_FIGURES
from raysal.run import rounds
from raysal.run.state import HISTORY_FILE, LEARNING_CURVE_FILE, RunState
from raysal.run.status import history, redraw

OLD = {"round": 1, "selected": 40, "pool_size": 857, "skipped": 0, "criterion": "least_confidence",
       "labelled_total": 340, "test_accuracy_before": 0.8, "test_accuracy_after": 0.85,
       "selection_accuracy_before": 0.5, "selection": "s", "metrics": "m", "learning_curve": "l"}
NEW = {**OLD, "round": 2, "labelled_total": 380, "test_accuracy_before": 0.85, "test_accuracy_after": 0.9,
       "test_balanced_accuracy_before": 0.75, "test_balanced_accuracy_after": 0.875,
       "test_macro_f1_before": 0.7, "test_macro_f1_after": 0.8125}


@pytest.fixture()
def state(tmp_path) -> RunState:
    """A run of two done rounds: round 1 recorded before the balanced figures, round 2 after."""
    state = RunState(str(tmp_path / "state"))
    for record in (OLD, NEW):
        state.write_json(state.files(record["round"]).record, record)
    return state


def test_status_shows_the_balanced_figures_and_na_for_an_older_round(state, capsys):
    print_status(rounds.status(state.root), as_json=False)
    lines = capsys.readouterr().out.splitlines()
    assert ("  round 1: done, selected 40, test accuracy 0.8000 -> 0.8500, balanced accuracy n/a -> n/a, "
            "macro-F1 n/a -> n/a, on the selection before retraining 0.5000") in lines, lines
    assert ("  round 2: done, selected 40, test accuracy 0.8500 -> 0.9000, balanced accuracy 0.7500 -> 0.8750, "
            "macro-F1 0.7000 -> 0.8125, on the selection before retraining 0.5000") in lines, lines


def test_history_and_learning_curve_hold_the_balanced_figures(state):
    rows = history(state)
    assert [{k: row[k] for k in ROUND_FIGURES} for row in rows] == [
        dict.fromkeys(ROUND_FIGURES), {k: NEW[k] for k in ROUND_FIGURES}]
    redraw(state, "demo")
    assert json.loads(state.read_bytes(HISTORY_FILE)) == rows
    assert state.read_bytes(LEARNING_CURVE_FILE)[:8] == b"\x89PNG\r\n\x1a\n"  # the gaps of round 1 drawn, no crash


def test_the_round_summary_shows_the_balanced_figures():
    outcome = lambda record: rounds.format_outcome(rounds.RoundOutcome(  # noqa: E731
        record["round"], rounds.DONE, record=record, stage_seconds={"score": 1.0})).splitlines()
    assert ("  test balanced accuracy: 0.7500 before, 0.8750 after; macro-F1: 0.7000 before, 0.8125 after"
            in outcome(NEW))
    assert "  test balanced accuracy: n/a before, n/a after; macro-F1: n/a before, n/a after" in outcome(OLD)


def test_the_round_summary_ends_with_the_reports_path_done_or_waiting():
    done = rounds.format_outcome(rounds.RoundOutcome(2, rounds.DONE, record=NEW, stage_seconds={"score": 1.0},
                                                     report="/s/report/index.html"), "/s/logs/x.log").splitlines()
    assert done[-2:] == ["  report:         /s/report/index.html", "  log:            /s/logs/x.log"]
    waiting = rounds.format_outcome(rounds.RoundOutcome(3, rounds.WAITING, message="round 3 is waiting for labels",
                                                        report="/s/report/index.html")).splitlines()
    assert waiting == ["round 3 is waiting for labels", "  report: /s/report/index.html"]
    assert "report" not in rounds.format_outcome(rounds.RoundOutcome(2, rounds.DONE, record=NEW))  # none written
