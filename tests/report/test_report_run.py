"""A tracked run and its report, for real: rounds logged to a real ``mlflow server`` that goes down
and comes back, and the report the rounds wrote, opened in Debian's headless Chromium."""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from raysal.config import load_config
from raysal.run import tracking
from raysal.run.state import RunState

from _jobs import FAST, copy_state, round_file
from _mlflow import server as mlflow_server

SECTIONS = ("rounds", "learning-curve", "per-class", "confusion", "stopping", "selections", "skipped")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,2000")


def _browser(user_data: Path):
    """Debian's Chromium through its ChromeDriver (``make test`` installs both): a browser that
    cannot start fails the test."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary and driver, "Chromium and ChromeDriver are missing: `make browser` installs Debian's packages"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={user_data}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def _run_of(client, experiment_id: str, number: int):
    runs = client.search_runs([experiment_id], filter_string=f"tags.`raysal.round` = '{number}'")
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


@pytest.mark.timeout(600)
def test_a_tracked_run_in_mlflow_and_its_report_in_chromium(ray_session, waiting_state, tmp_path, capfd):
    """Round 1 (its labels imported) is logged to a live MLflow server; round 2 runs whole with the
    server down and ends with one warning; once the server answers, round 2 is logged too. The
    report the rounds wrote opens in Chromium with no console error, every section, round 1's and
    round 2's selections as thumbnails, and a screenshot that is not blank."""
    from mlflow import MlflowClient

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "jobs"))
    import round as round_job  # jobs/round.py, in this process, with the session's Ray

    state = copy_state(waiting_state, tmp_path / "state", keep_rounds=True)
    server = mlflow_server(tmp_path / "mlflow")
    server.start()
    try:
        selected = pq.read_table(round_file(state, 1, "selection.parquet"))["image_id"].to_pylist()
        manifest = pq.read_table(state / "data" / "digits" / "manifest.parquet").to_pydict()
        truth = dict(zip(manifest["image_id"], manifest["label"], strict=True))
        labels = tmp_path / "labels.csv"
        labels.write_text("image_id,label\n" + "".join(f"{i},{truth[i]}\n" for i in selected))
        track = ["--set", f'track.mlflow_uri="{server.url}"', "--set", "track.timeout_s=60"]  # a busy CI machine
        capfd.readouterr()
        assert round_job.main(["--state", str(state), *FAST, *track, "--import-labels", str(labels)]) == 0
        out = capfd.readouterr().out
        assert f"MLflow at {server.url}: logged round(s) 1 in experiment 'demo'" in out, out[-3000:]
        assert f"  report:         {state / 'report' / 'index.html'}" in out

        client = MlflowClient(tracking_uri=server.url)
        experiment = client.get_experiment_by_name("demo")
        run = _run_of(client, experiment.experiment_id, 1)
        record = RunState(str(state)).round_record(1)
        assert run.info.status == "FINISHED" and run.info.run_name == "round 1"
        assert run.data.params["select.budget"] == "40" and run.data.params["label.mode"] == "human"
        assert run.data.params["data.test.rows"] == "500:700" and run.data.tags["raysal.state"] == str(state)
        for key in ("test_accuracy_after", "test_balanced_accuracy_after", "selection_accuracy_before",
                    "labelled_total"):
            assert run.data.metrics[key] == pytest.approx(record[key]), key
        assert run.data.metrics["test_accuracy_class/3"] == pytest.approx(record["test_per_class_after"]["3"])
        assert run.data.metrics["seconds/train"] == pytest.approx(record["stage_seconds"]["train"])
        [history] = [client.get_metric_history(run.info.run_id, "epoch/loss")]
        assert [m.step for m in history] == [1, 2]  # FAST: 2 fine-tuning epochs, each with its step
        assert [m.step for m in client.get_metric_history(run.info.run_id, "test_accuracy_after")] == [1]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert artifacts == {"selection.parquet", "learning_curve.png", "report"}, artifacts
        assert "report/index.html" in {a.path for a in client.list_artifacts(run.info.run_id, "report")}

        server.stop()  # down for all of round 2, which runs whole (the pool's labels)
        assert round_job.main(["--state", str(state), *FAST, *track]) == 0
        out = capfd.readouterr().out
        warnings = [line for line in out.splitlines() if "MLflow at" in line]
        assert len(warnings) == 1 and "did not take round(s) 2" in warnings[0], out[-3000:]
        assert "Traceback" not in out and "round 2: selected 40 of" in out

        server.start()  # answers again: the next round's end logs what it missed, as this call does
        cfg = load_config("demo", {"track.mlflow_uri": server.url})
        assert tracking.log_rounds(RunState(str(state)), cfg) == [2]
        assert _run_of(client, experiment.experiment_id, 2).data.metrics["labelled_total"] == 380
        assert tracking.log_rounds(RunState(str(state)), cfg) == []  # each round once
    finally:
        server.stop()

    browser = _browser(tmp_path / "chromium")
    try:
        browser.get((state / "report" / "index.html").as_uri())
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
        for section in SECTIONS:
            assert browser.find_element("id", section).is_displayed(), section
        for number in (1, 2):
            chosen = pq.read_table(round_file(state, number, "selection.parquet"))["image_id"].to_pylist()
            cards = browser.find_elements("css selector", f"#gallery-{number} figure")
            assert [int(c.get_attribute("data-image-id")) for c in cards] == chosen
            loaded = browser.execute_script(
                f"return [...document.querySelectorAll('#gallery-{number} img')].map(i => i.naturalWidth)")
            assert len(loaded) == len(chosen) and min(loaded) > 0  # every thumbnail decoded by the browser
        pixels = np.asarray(Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("L"))
        assert pixels.std() > 10 and len(np.unique(pixels)) > 50, "the screenshot is blank"
    finally:
        browser.quit()
