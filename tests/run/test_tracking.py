"""What MLflow tracking refuses before any work, and what it would log, without a server
(tests/report/test_report_run.py logs to a real one)."""

from __future__ import annotations

import sys

import pytest

from raysal.config import ConfigError, load_config
from raysal.run import tracking
from raysal.run.state import RunState


def test_tracking_is_off_unless_asked_for(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert tracking.tracking_uri(load_config("demo")) is None  # the variable alone turns nothing on
    assert tracking.tracking_uri(load_config("demo", {"track.mlflow": True})) == "http://127.0.0.1:1"
    assert tracking.tracking_uri(load_config("demo", {"track.mlflow_uri": "https://m:5000"})) == "https://m:5000"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"track.mlflow_uri": "ftp://m"}, "track.mlflow_uri: must be an http:// or https:// address"),
    ({"track.timeout_s": 0}, "track.timeout_s: must be in (0, 300] seconds"),
])
def test_a_bad_tracking_field_is_refused_naming_it(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
        load_config("demo", overrides)


def test_tracking_that_cannot_work_is_refused_before_any_work(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ConfigError, match="track.mlflow = true needs a server: set MLFLOW_TRACKING_URI"):
        tracking.check(load_config("demo", {"track.mlflow": True}))
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as where MLflow is not installed: import fails
    with pytest.raises(ConfigError, match=r"pip install 'raysal\[mlflow\]'"):
        tracking.check(load_config("demo", {"track.mlflow_uri": "http://m:5000"}))
    tracking.check(load_config("demo"))  # off: nothing to check


def test_params_are_the_flat_config_and_metric_keys_are_what_mlflow_takes(tmp_path):
    params = tracking.flatten(load_config("demo").to_dict())
    assert params["select.budget"] == "100" and params["data.pool.kind"] == "digits" and "track.mlflow" in params
    assert tracking.metric_key("test_accuracy_class/<Hund & Katze>") == "test_accuracy_class/_Hund _ Katze_"
    state = RunState(str(tmp_path))
    state.write_json("rounds/0002/round.json", {
        "round": 2, "test_accuracy_after": 0.9, "kappa": None, "test_per_class_after": {"a": 1.0, "b": None},
        "stage_seconds": {"train": 12.5}})
    state.write_json("rounds/0002/stages/train.json", {"metrics": {"epochs": [
        {"epoch": 1, "phase": "head", "loss": 0.5}, {"epoch": 2, "phase": "finetune", "loss": 0.25}]}})
    assert sorted(tracking.round_metrics(state, 2)) == [
        ("epoch/loss", 0.25, 2), ("epoch/loss", 0.5, 1), ("seconds/train", 12.5, 2),
        ("test_accuracy_after", 0.9, 2), ("test_accuracy_class/a", 1.0, 2)]  # no figure for what was not measured
