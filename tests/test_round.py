"""jobs/round.py end to end on the offline demo: real Ray, real training, real crashes.

The round-0 model is trained once (module fixture) and copied into each test's state, so every
test starts from the same model and their selections can be compared exactly.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "jobs"))
import round as round_job  # noqa: E402  (jobs/round.py)

from _jobs import FAST, copy_state, job, kill_at, run_job  # noqa: E402

pytestmark = pytest.mark.timeout(600)


def snapshot(state: Path) -> dict[str, str]:
    return {str(p.relative_to(state)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(state.rglob("*")) if p.is_file() and "train" not in p.relative_to(state).parts}


def outcome(state: Path, number: int = 1) -> tuple[list, list]:
    """The round's selection (id, score, rank) and labels (id, label)."""
    key = state / "rounds" / f"{number:04d}"
    selection = pq.read_table(key / "selection.parquet", columns=["image_id", "score", "rank"]).to_pylist()
    labels = pq.read_table(key / "labels.parquet").to_pylist()
    return selection, labels


@pytest.fixture(scope="module")
def reference_round(waiting_state, tmp_path_factory) -> Path:
    """Two rounds started at once on one state: exactly one runs. Its result is the reference."""
    state = copy_state(waiting_state, tmp_path_factory.mktemp("ref") / "state", keep_rounds=False)
    first, second = job("--state", str(state), *FAST), job("--state", str(state), *FAST)
    results = sorted([(p.wait(timeout=400), p.stdout.read()) for p in (first, second)], key=lambda r: r[0])
    (code_a, out_a), (code_b, out_b) = results
    assert (code_a, code_b) == (0, 4), out_a[-2000:] + out_b[-2000:]
    assert f"state {state} is locked by pid" in out_b and "another round is running" in out_b
    assert "round 1: selected 40 of 897 pool images" in out_a
    return state


def test_two_rounds_at_once_exactly_one_runs(reference_round):
    assert not (reference_round / "lock.json").exists()  # released at the end
    assert json.loads((reference_round / "rounds" / "0001" / "round.json").read_text())["selected"] == 40


def test_killed_while_scoring_resumes_to_the_same_state(reference_round, tmp_path):
    state = copy_state(reference_round, tmp_path / "state", keep_rounds=False)
    kill_at(["--state", str(state), *FAST], "stage score: started", delay=1.5)
    assert (state / "lock.json").exists() and not (state / "rounds" / "0001" / "stages" / "score.json").exists()
    code, out = run_job("--state", str(state), *FAST)  # the stale lock is taken over without --break-lock
    assert code == 0, out[-3000:]
    assert outcome(state) == outcome(reference_round)


def test_killed_while_training_resumes_to_the_same_state(reference_round, tmp_path):
    state = copy_state(reference_round, tmp_path / "state", keep_rounds=False)
    kill_at(["--state", str(state), *FAST], "stage train: started", delay=6)
    stages = state / "rounds" / "0001" / "stages"
    assert (stages / "label.json").exists() and not (stages / "train.json").exists()
    code, out = run_job("--state", str(state), *FAST)
    assert code == 0, out[-3000:]
    assert "resuming at stage train" in out
    assert outcome(state) == outcome(reference_round)
    assert (state / "models" / "0001" / "weights.h5").exists()


def test_human_labels_are_validated_then_applied(waiting_state, tmp_path):
    state = copy_state(waiting_state, tmp_path / "state", keep_rounds=True)
    tasks = (state / "rounds" / "0001" / "to_label.csv").read_text().splitlines()
    assert tasks[0] == "image_id,uri" and len(tasks) == 41
    selected = [int(line.split(",")[0]) for line in tasks[1:]]
    manifest = pq.read_table(state / "data" / "digits" / "manifest.parquet").to_pydict()
    truth = dict(zip(manifest["image_id"], manifest["label"]))
    not_selected = next(i for i in manifest["image_id"][900:] if i not in selected)

    bad = tmp_path / "bad.csv"
    bad.write_text("image_id,label\n" + "".join(f"{i},{truth[i]}\n" for i in selected[2:]) +
                   f"{selected[2]},{truth[selected[2]]}\n99999999,3\n{not_selected},1\n{selected[0]},zebra\n")
    before = snapshot(state)
    code, out = run_job("--state", str(state), *FAST, "--import-labels", str(bad))
    assert code == 2, out[-3000:]
    for problem in (f"duplicate image_ids [{selected[2]}]", "unknown image_ids [99999999]",
                    f"image_ids not selected in round 1: [{not_selected}]", "unknown classes ['zebra']",
                    f"1 selected images have no label, e.g. [{selected[1]}]"):
        assert problem in out, problem
    assert snapshot(state) == before  # nothing applied

    good = tmp_path / "good.csv"
    good.write_text("image_id,label\n" + "".join(f"{i},{truth[i]}\n" for i in selected))
    code, out = run_job("--state", str(state), *FAST, "--import-labels", str(good))
    assert code == 0, out[-3000:]
    labels = pq.read_table(state / "rounds" / "0001" / "labels.parquet").to_pydict()
    assert dict(zip(labels["image_id"], labels["label"])) == {i: truth[i] for i in selected}


def status(state: Path, capsys) -> dict:
    capsys.readouterr()
    assert round_job.main(["--state", str(state), "--status", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_rounds_grow_the_labelled_set_and_never_select_twice(ray_session, waiting_state, tmp_path, capsys):
    state = copy_state(waiting_state, tmp_path / "state", keep_rounds=False)
    for number in (1, 2):
        assert round_job.main(["--state", str(state), *FAST]) == 0
        assert f"round {number}: selected 40 of {897 - 40 * (number - 1)} pool images" in capsys.readouterr().out
    selections = [set(pq.read_table(state / "rounds" / f"{n:04d}" / "selection.parquet")["image_id"].to_pylist())
                  for n in (1, 2)]
    assert len(selections[0]) == len(selections[1]) == 40 and not selections[0] & selections[1]

    report = status(state, capsys)
    assert [(r["round"], r["state"], r["labelled_total"]) for r in report["rounds"]] == [
        (1, "done", 340), (2, "done", 380)]
    for r in report["rounds"]:
        assert 0 <= r["selection_accuracy_before"] <= 1 and 0 < r["test_accuracy_after"] <= 1
    history = json.loads((state / "history.json").read_text())
    assert [h["round"] for h in history] == [1, 2]
    assert (state / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (state / "models" / "0002" / "test_metrics.json").exists()


def test_a_config_that_changes_the_pool_is_refused(waiting_state, tmp_path):
    state = copy_state(waiting_state, tmp_path / "state", keep_rounds=False)
    code, out = run_job("--state", str(state), *FAST, "--set", "data.pool.rows=\"1000:\"", timeout=120)
    assert code == 1 and "config changes what a run cannot change (pool:" in out


def test_bad_config_is_refused_before_ray_starts(tmp_path):
    ray_tmp = tmp_path / "ray"  # ray.init would create its session folder here
    code, out = run_job("--state", str(tmp_path / "state"), "--set", "select.budget=0",
                        env={"RAY_TMPDIR": str(ray_tmp)}, timeout=120)
    assert code == 2
    assert "select.budget" in out and "must be >= 1" in out
    assert not ray_tmp.exists() and not (tmp_path / "state").exists()


def test_unknown_config_key_is_refused(tmp_path):
    code, out = run_job("--state", str(tmp_path), "--set", "score.max_actor=4", timeout=120)
    assert code == 2 and "score.max_actor: unknown key" in out


@pytest.mark.timeout(120)
def test_flowers_without_prepared_data_stops_at_once_with_instructions(tmp_path):
    code, out = run_job("--config", "flowers", "--state", str(tmp_path / "state"), timeout=100,
                        env={"TFDS_DATA_DIR": str(tmp_path / "tfds"), "TFHUB_CACHE_DIR": str(tmp_path / "hub")})
    assert code == 3, out[-2000:]
    assert "data.labelled" in out and "tfds build tf_flowers" in out
