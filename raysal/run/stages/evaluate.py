"""The evaluate stage: test accuracy, balanced accuracy and macro-F1 before and after
retraining, and the old model's accuracy on the images it selected."""

from __future__ import annotations

from typing import Any

from raysal import faults
from raysal.data.decode import decode
from raysal.report import progress
from raysal.report.metrics import BALANCED_FIGURES, TEST_METRICS_FILE, accuracy_report
from raysal.run import scoring
from raysal.run.context import DONE, Round
from raysal.run.stages.label import selection


def test_accuracy(r: Round, model: int) -> dict[str, Any]:
    """Accuracy of model ``model`` on the test split; computed once and kept with the model.

    Training computes it for the model it trains when the decoded test split fits in
    ``train.in_memory_mb``: rank 0 holds the model already, and the evaluate stage then has no
    actor pool to start. A larger test split is scored here by the actor pool.
    """
    key = f"{r.state.model_key(model)}/{TEST_METRICS_FILE}"
    cached = r.state.read_json(key)
    if cached is not None:
        return cached
    test, size = r.sized_source(r.cfg.data.test)
    with progress.watch(r.board, f"testing model {model}", size) as board:
        rows = scoring.score(decode(test, r.cfg), r.model_uri(model), r.cfg, board=board) \
            .select_columns(["predicted", "label", "error"]).to_pandas()
    rows = rows[(rows["error"] == "") & rows["label"].notna()]
    report = accuracy_report(rows["predicted"].to_numpy(), rows["label"].to_numpy(), r.cfg.data.classes)
    r.state.write_json(key, report)
    return report


def stage_evaluate(r: Round, label_file: str | None) -> str:
    chosen = selection(r).to_pandas()
    labelled = r.state.read_table(r.files.labels).to_pandas()
    joined = chosen.merge(labelled, on="image_id")
    on_selection = accuracy_report(joined["predicted"].to_numpy(), joined["label"].to_numpy(), r.cfg.data.classes)
    before = test_accuracy(r, r.number - 1)
    faults.point("evaluate:first-model-evaluated")
    after = test_accuracy(r, r.number)
    metrics = {"test_before": before, "test_after": after, "selection_before": on_selection}
    r.state.write_json(r.files.metrics, metrics)
    # A model tested before raysal measured the balanced figures keeps its cached report: None there.
    r.state.commit_stage(r.number, "evaluate", {
        "test_accuracy_before": before["accuracy"], "test_accuracy_after": after["accuracy"],
        **{f"test_{figure}_{when}": report.get(figure) for figure in BALANCED_FIGURES
           for when, report in (("before", before), ("after", after))},
        "test_per_class_after": after["per_class"], "selection_accuracy_before": on_selection["accuracy"]})
    return DONE
