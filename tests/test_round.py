"""jobs/round.py end to end on the offline demo, on a real local Ray with real training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "jobs"))
import round as round_job  # noqa: E402  (jobs/round.py)

FAST = ["--set", "train.finetune_epochs=2", "--set", "score.batch_size=64"]


def run_job(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """jobs/round.py in a fresh process, for paths that must stop before any Ray work."""
    return subprocess.run([sys.executable, str(REPO / "jobs" / "round.py"), *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})}, cwd=REPO)


def status(state: Path, capsys) -> dict:
    capsys.readouterr()
    assert round_job.main(["--state", str(state), "--status", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.timeout(600)
def test_two_demo_rounds_select_disjoint_budgets(ray_session, tmp_path, capsys):
    state = tmp_path / "state"
    assert status(state, capsys)["rounds"] == []

    assert round_job.main(["--state", str(state), "--budget", "40", *FAST]) == 0
    out = capsys.readouterr().out
    assert "round 1: selected 40 of 897 pool images (0 skipped)" in out
    first = pq.read_table(state / "rounds" / "0001" / "selection.parquet").to_pydict()
    assert list(first) == ["image_id", "uri", "score", "predicted", "rank"]
    assert first["rank"] == list(range(1, 41))
    assert first["score"] == sorted(first["score"], reverse=True)
    manifest = pq.read_table(state / "data" / "digits" / "manifest.parquet").to_pydict()
    pool_ids = set(manifest["image_id"][900:])
    assert set(first["image_id"]) <= pool_ids and len(set(first["image_id"])) == 40

    # The selection is the exact top of all scores written for the round.
    scores = pq.read_table(state / "rounds" / "0001" / "scores").to_pydict()
    assert len(scores["image_id"]) == 897
    order = np.lexsort((np.array(scores["image_id"]), -np.array(scores["score"])))[:40]
    assert [scores["image_id"][i] for i in order] == first["image_id"]

    assert round_job.main(["--state", str(state), "--budget", "30", "--criterion", "entropy", *FAST]) == 0
    round_two = json.loads((state / "rounds" / "0002" / "round.json").read_text())
    assert "train" not in round_two["stage_seconds"] and round_two["model"] == str(state / "models" / "0000")
    second = pq.read_table(state / "rounds" / "0002" / "selection.parquet").to_pydict()
    assert len(second["image_id"]) == 30 and not set(second["image_id"]) & set(first["image_id"])

    report = status(state, capsys)
    assert [(r["round"], r["selected"], r["criterion"]) for r in report["rounds"]] == [
        (1, 40, "least_confidence"), (2, 30, "entropy")]
    assert all(os.path.isfile(r["selection"]) for r in report["rounds"])
    assert report["latest_model"].endswith(os.path.join("models", "0000"))


def test_bad_config_is_refused_before_ray_starts(tmp_path):
    ray_tmp = tmp_path / "ray"  # ray.init would create its session folder here
    result = run_job("--state", str(tmp_path / "state"), "--set", "select.budget=0", env={"RAY_TMPDIR": str(ray_tmp)})
    assert result.returncode == 2
    assert "select.budget" in result.stderr and "must be >= 1" in result.stderr
    assert not ray_tmp.exists() and not (tmp_path / "state").exists()


def test_unknown_config_key_is_refused(tmp_path):
    result = run_job("--state", str(tmp_path), "--set", "score.max_actor=4")
    assert result.returncode == 2 and "score.max_actor: unknown key" in result.stderr


@pytest.mark.timeout(120)
def test_flowers_without_prepared_data_stops_at_once_with_instructions(tmp_path):
    result = run_job("--config", "flowers", "--state", str(tmp_path / "state"),
                     env={"TFDS_DATA_DIR": str(tmp_path / "tfds"), "TFHUB_CACHE_DIR": str(tmp_path / "hub")})
    assert result.returncode == 3, result.stderr[-2000:]
    assert "data.labelled" in result.stderr and "tfds build tf_flowers" in result.stderr
