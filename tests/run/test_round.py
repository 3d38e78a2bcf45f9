"""jobs/round.py end to end on the offline demo: real Ray, real training, real crashes.

The round-0 model is trained once (module fixture) and copied into each test's state, so every
test starts from the same model and their selections can be compared exactly.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "jobs"))
import round as round_job  # noqa: E402  (jobs/round.py)

from _jobs import (  # noqa: E402
    FAST,
    copy_state,
    job,
    kill_processes,
    round_file,
    run_job,
    run_until_killed,
    run_until_signalled,
    snapshot,
    written_in_round,
)

pytestmark = pytest.mark.timeout(600)


def outcome(state: Path, number: int = 1) -> tuple[list, list]:
    """The round's selection (id, score, rank) and labels (id, label)."""
    selection = pq.read_table(round_file(state, number, "selection.parquet"),
                              columns=["image_id", "score", "rank"]).to_pylist()
    labels = pq.read_table(round_file(state, number, "labels.parquet")).to_pylist()
    return selection, labels


@pytest.fixture(scope="module")
def reference_round(waiting_state, tmp_path_factory) -> Path:
    """Two rounds started at once on one state: exactly one runs. Its result is the reference."""
    state = copy_state(waiting_state, tmp_path_factory.mktemp("ref") / "state", keep_rounds=False)
    progress_each_second = {"RAYSAL_PROGRESS_S": "1"}  # so that short scoring shows progress lines too
    first, second = (job("--state", str(state), *FAST, env=progress_each_second) for _ in range(2))
    results = sorted([(p.wait(timeout=400), p.stdout.read()) for p in (first, second)], key=lambda r: r[0])
    (code_a, out_a), (code_b, out_b) = results
    assert (code_a, code_b) == (0, 4), out_a[-2000:] + out_b[-2000:]
    # The loser found the winner's lease, or lost the race to create it: either way it says so.
    assert f"state {state}" in out_b and "another round" in out_b and "Traceback" not in out_b
    assert "round 1: selected 40 of 897 pool images" in out_a
    (state.parent / "console.txt").write_text(out_a)
    return state


def test_the_console_shows_raysal_lines_only_and_the_log_has_the_rest(reference_round):
    lines = (reference_round.parent / "console.txt").read_text().splitlines()
    ours = re.compile(r"^\d\d:\d\d:\d\d raysal ")
    summary = [line for line in lines if not ours.match(line)]
    # Nothing from Ray or TensorFlow: every line is raysal's, or the summary at the end.
    assert summary and summary[0].startswith("round 1: selected 40") and lines[-len(summary):] == summary, lines
    assert all(line.startswith("  ") for line in summary[1:]), summary
    assert len(lines) <= 40, lines
    assert any(re.search(r"raysal scoring: \d+/897 images \(\d+%\), \d+ images/s", line) for line in lines), lines
    assert any(re.search(r"raysal train: finetune epoch 2/2: loss \d\.\d{4}, accuracy", line) for line in lines)
    assert any(line.startswith("  test accuracy per class: 0 ") for line in summary), summary
    assert any(re.fullmatch(r"  test balanced accuracy: 0\.\d{4} before, 0\.\d{4} after; macro-F1: 0\.\d{4} "
                            r"before, 0\.\d{4} after", line) for line in summary), summary
    (named,) = [line.split(":", 1)[1].strip() for line in summary if line.startswith("  log:")]
    log = Path(named)
    assert log.parent == reference_round / "logs" and log.is_file()  # the waiting state's own log is there too
    text = log.read_text()
    assert "(RayTrainWorker pid=" in text and "Running Dataset" in text  # the workers' and Ray Data's lines
    assert text.count("raysal stage train: started") == 1  # and raysal's own, once each


def test_training_stores_the_test_accuracy_that_scoring_the_test_split_gives(ray_session, reference_round, tmp_path):
    """Rank 0 evaluates the model it trained, so the evaluate stage scores nothing; what it
    stored is what the evaluate stage's actor pool computes for the same model."""
    from raysal.config import config_from_dict
    from raysal.run import context
    from raysal.run.stages import evaluate as evaluate_stage
    from raysal.run.state import RunState

    assert "raysal testing model" not in (reference_round.parent / "console.txt").read_text()
    state = copy_state(reference_round, tmp_path / "state", keep_rounds=True)
    cfg = config_from_dict(json.loads((state / "rounds" / "0001" / "config.json").read_text()))
    r = context.Round(RunState(str(state)), cfg, 1, {})
    for model in (0, 1):  # by the bootstrap's training, and by round 1's
        stored = state / "models" / f"{model:04d}" / "test_metrics.json"
        by_training = json.loads(stored.read_text())
        stored.unlink()
        assert 0 < by_training["balanced_accuracy"] <= 1 and 0 < by_training["macro_f1"] <= 1, by_training
        assert by_training["count"] == 200 and evaluate_stage.test_accuracy(r, model) == by_training, model


def test_two_rounds_at_once_exactly_one_runs(reference_round):
    from raysal.run import lease
    from raysal.run.state import RunState

    assert lease.current(RunState(str(reference_round))) is None  # released at the end
    assert json.loads((reference_round / "rounds" / "0001" / "round.json").read_text())["selected"] == 40


def _stages(state: Path) -> set[str]:
    return {p.stem for p in (state / "rounds" / "0001" / "stages").glob("*.json")}


def _score_files(state: Path) -> list[Path]:
    return list((state / "rounds" / "0001").glob("g*/scores/*.parquet"))


@pytest.mark.timeout(900)  # eleven killed runs and a final one, each starting Ray
def test_faults_at_every_stage_boundary_and_inside_every_stage_lose_nothing(reference_round, tmp_path):
    """One round, killed eleven times on its way, ends as the uninterrupted reference round did.

    Each fault lands where it claims, and the test checks that it did: the driver dies (SIGKILL,
    with its local Ray) at every stage boundary and inside every stage once the stage's partial
    output exists; a scoring actor is killed once some score files exist, and a Ray Train worker
    once an epoch is logged; both are restarted by Ray. Each rerun takes the dead driver's lease
    over at once and resumes at the first stage not committed.
    """
    state = copy_state(reference_round, tmp_path / "state", keep_rounds=False)
    shutil.rmtree(state / "models" / "0001")  # the reference's: this round must publish its own
    (state / "models" / "0000" / "test_metrics.json").unlink()  # so that evaluate has work to be killed in
    args = ["--state", str(state), *FAST]  # as the reference round: the same training, to compare accuracy

    # score: the driver dies once score files exist; then a scoring actor is killed the same way.
    run_until_killed(args, fire=lambda out, group: bool(_score_files(state)))
    assert _score_files(state) and "score" not in _stages(state)
    actors: list[int] = []

    def kill_actor(out: str, group: int) -> bool:
        if not actors and _score_files(state) and "score" not in _stages(state):
            # Ray titles the scoring actor ray::MapWorker(...(Scorer)), with .submit while it scores
            # a batch: it dies in the middle of its work.
            actors.extend(kill_processes(group, "(Scorer)).submit"))
        return False

    run_until_killed(args, point="score:ended", fire=kill_actor)
    assert actors, "no scoring actor was found scoring a batch while score files were being written"
    assert _stages(state) == {"score"}

    for point, name, committed in [
        ("select:selection-written", "selection.parquet", {"score"}),
        ("select:ended", "selection.parquet", {"score", "select"}),
        ("label:labels-written", "labels.parquet", {"score", "select"}),
        ("label:ended", "labels.parquet", {"score", "select", "label"}),
    ]:
        run_until_killed(args, point=point)
        assert written_in_round(state, 1, name) and _stages(state) == committed, point

    # train: the driver dies after an epoch is logged; then a worker is killed, and Ray Train restarts it.
    run_until_killed(args, fire=lambda out, group: "raysal train: finetune epoch 1/2" in out)
    assert _stages(state) == {"score", "select", "label"}
    workers: list[int] = []

    def kill_worker(out: str, group: int) -> bool:
        if not workers and "raysal train: finetune epoch 1/2" in out:
            workers.extend(kill_processes(group, "RayTrainWorker"))
        return False

    out = run_until_killed(args, point="train:ended", fire=kill_worker)  # a clean end of training, then the kill
    assert workers, "no Ray Train worker was found to kill after its first epoch"
    # The killed group's first epoch, then the restarted group's: training started again after the restart.
    assert out.count("raysal train: finetune epoch 1/2") >= 2, out[-3000:]
    assert _stages(state) == {"score", "select", "label", "train"}

    run_until_killed(args, point="evaluate:first-model-evaluated")
    assert (state / "models" / "0000" / "test_metrics.json").exists() and "evaluate" not in _stages(state)
    run_until_killed(args, point="evaluate:ended")
    assert "evaluate" in _stages(state) and not (state / "rounds" / "0001" / "round.json").exists()

    code, out = run_job(*args)
    assert code == 0, out[-3000:]
    assert outcome(state) == outcome(reference_round)
    ours, reference = (json.loads((s / "rounds" / "0001" / "round.json").read_text()) for s in (state, reference_round))
    assert abs(ours["test_accuracy_after"] - reference["test_accuracy_after"]) < 0.05
    assert not list((state / "models").glob("*.tmp-*"))


def test_the_gpu_shape_on_a_fake_gpu_selects_what_the_cpu_shape_selects(reference_round, gpu_cluster, tmp_path):
    """Two scoring actors at 0.5 GPU each, decoding in CPU tasks beside them, and one GPU Ray
    Train worker, on a local Ray with one fake GPU slot: the round completes, and the same
    round-0 model selects the same images as the CPU-shaped reference round."""
    state = copy_state(reference_round, tmp_path / "state", keep_rounds=False)
    shutil.rmtree(state / "models" / "0001")
    proc = job("--state", str(state), *FAST, "--set", "score.gpus_per_actor=0.5", "--set", "score.min_actors=2",
               "--set", "score.max_actors=2", "--set", "train.gpus_per_worker=1",
               env={**gpu_cluster.env, "RAY_ADDRESS": gpu_cluster.gcs})
    out, _ = proc.communicate(timeout=500)
    assert proc.returncode == 0, out[-3000:]
    assert "waiting for resources" not in out and "Traceback" not in out
    (ours, labels), (reference, reference_labels) = outcome(state), outcome(reference_round)
    assert [(r["image_id"], r["rank"]) for r in ours] == [(r["image_id"], r["rank"]) for r in reference]
    # Two actors batch the pool differently from one: scores may differ in the last bits, no more.
    assert max(abs(a["score"] - b["score"]) for a, b in zip(ours, reference, strict=True)) < 1e-5
    assert labels == reference_labels
    log = sorted((state / "logs").iterdir())[-1].read_text()  # this round's: Ray Data's executed plan
    assert re.search(r"TaskPoolMapOperator\[MapBatches\(decode_batch\)\] -> "
                     r"ActorPoolMapOperator\[MapBatches\(Scorer\)\]", log), log[-3000:]


def test_ctrl_c_while_scoring_stops_the_round_within_seconds_and_releases_the_lease(reference_round, tmp_path):
    """SIGINT once the actors are scoring (a progress line is out): the driver leaves Ray Data's
    pass, releases the lease and exits 130; running the round again resumes it."""
    from raysal.errors import Locked
    from raysal.run.lease import Lease
    from raysal.run.state import RunState

    state = copy_state(reference_round, tmp_path / "state", keep_rounds=False)
    shutil.rmtree(state / "models" / "0001")
    out = run_until_signalled(["--state", str(state), *FAST], "raysal scoring: ", signal.SIGINT,
                              env={"RAYSAL_PROGRESS_S": "1"})
    assert "interrupted (SIGINT): the round stopped and released its lease" in out and "Traceback" not in out
    assert "score" not in _stages(state)
    try:
        Lease(RunState(str(state))).observe()  # raises Locked while a live round holds the lease
    except Locked:
        pytest.fail("the interrupted round left its lease live")


def test_a_relative_state_never_reaches_what_workers_read(waiting_state):
    """The fixture's round ran with ``--state state`` from its own folder: every path it wrote is
    absolute, so a round started from any other directory (as every other test is) finds the images."""
    manifest = pq.read_table(waiting_state / "data" / "digits" / "manifest.parquet")["uri"].to_pylist()
    tasks = round_file(waiting_state, 1, "to_label.csv").read_text().splitlines()[1:]
    selection = pq.read_table(round_file(waiting_state, 1, "selection.parquet"))["uri"].to_pylist()
    config = json.loads((waiting_state / "rounds" / "0001" / "config.json").read_text())
    for uri in [*manifest, *(line.split(",", 1)[1] for line in tasks), *selection]:
        assert Path(uri).is_absolute() and Path(uri).is_file(), uri
    assert Path(manifest[0]).is_relative_to(waiting_state.resolve())
    assert config["data"]["root"] == ""  # the default, <state>/data, resolved against the absolute state


def test_human_labels_are_validated_then_applied(ray_session, waiting_state, tmp_path, capsys):
    """A bad file is refused whole; a good one finishes the round, here in this process, as a
    notebook would call jobs/round.py's main with Ray already started."""
    state = copy_state(waiting_state, tmp_path / "state", keep_rounds=True)
    tasks = round_file(state, 1, "to_label.csv").read_text().splitlines()
    assert tasks[0] == "image_id,uri" and len(tasks) == 41
    selected = [int(line.split(",")[0]) for line in tasks[1:]]
    manifest = pq.read_table(state / "data" / "digits" / "manifest.parquet").to_pydict()
    truth = dict(zip(manifest["image_id"], manifest["label"], strict=True))
    not_selected = next(i for i in manifest["image_id"][900:] if i not in selected)

    bad = tmp_path / "bad.csv"
    bad.write_text("image_id,label\n" + "".join(f"{i},{truth[i]}\n" for i in selected[2:]) +
                   f"{selected[2]},{truth[selected[2]]}\n99999999,3\n{not_selected},1\n{selected[0]},zebra\n")
    # The file is checked against the round's scores under the round's lease: only the lease's
    # own bookkeeping may change.
    before = snapshot(state, ignore=("train", "lease"))
    code, out = run_job("--state", str(state), *FAST, "--import-labels", str(bad))
    assert code == 2, out[-3000:]
    for problem in ("unknown image_ids [99999999]", f"image_ids not selected in round 1: [{not_selected}]",
                    "unknown classes ['zebra']"):
        assert problem in out, problem
    assert snapshot(state, ignore=("train", "lease")) == before  # nothing applied

    good = tmp_path / "good.csv"
    good.write_text("image_id,label\n" + "".join(f"{i},{truth[i]}\n" for i in selected))
    capsys.readouterr()
    assert round_job.main(["--state", str(state), *FAST, "--import-labels", str(good)]) == 0
    assert "round 1: selected 40 of 897 pool images" in capsys.readouterr().out
    labels = pq.read_table(round_file(state, 1, "labels.parquet")).to_pydict()
    assert dict(zip(labels["image_id"], labels["label"], strict=True)) == {i: truth[i] for i in selected}

    report = status(state, capsys)
    assert [(r["round"], r["state"], r["labelled_total"]) for r in report["rounds"]] == [(1, "done", 340)]
    assert 0 <= report["rounds"][0]["selection_accuracy_before"] <= 1 and report["leased_by"] is None
    from raysal.report.metrics import ROUND_FIGURES
    from raysal.run.state import RunState

    evaluated = RunState(str(state)).stage_done(1, "evaluate")
    for key in ROUND_FIGURES:  # the evaluate stage's marker holds them, and the round's record takes them
        assert 0 < evaluated[key] <= 1 and report["rounds"][0][key] == evaluated[key], key
    assert round_job.main(["--state", str(state), "--status"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("  round 1: done"))
    assert (f"balanced accuracy {evaluated['test_balanced_accuracy_before']:.4f} -> "
            f"{evaluated['test_balanced_accuracy_after']:.4f}, macro-F1 {evaluated['test_macro_f1_before']:.4f} -> "
            f"{evaluated['test_macro_f1_after']:.4f}") in line, line
    assert (state / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (state / "models" / "0001" / "test_metrics.json").exists()


def status(state: Path, capsys) -> dict:
    capsys.readouterr()
    assert round_job.main(["--state", str(state), "--status", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


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
