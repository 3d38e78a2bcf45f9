"""The resources a round asks for: planned, refused when no node could host them, and waited for
visibly and for a bounded time when the cluster could host them but has them busy.

The GPU shape runs on fake GPU slots: a local Ray started with ``--num-gpus=1`` (``gpu_cluster``)
schedules GPU actors and Ray Train workers as a GPU node would, and TensorFlow runs them on the CPU.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raysal.config import ConfigError, load_config
from raysal.run.resources import Node, decode_fused, plan, problems

from _jobs import FAST, job, run_job, run_until_signalled

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(600)

GPU_SHAPE = ["--set", "score.gpus_per_actor=0.5", "--set", "score.min_actors=2", "--set", "score.max_actors=2",
             "--set", "train.gpus_per_worker=1"]


def cfg(**overrides):
    return load_config("demo", overrides)


# --- the plan, on nodes described by hand -------------------------------------------------------


def test_two_half_gpu_actors_share_one_gpu_and_two_whole_gpu_workers_do_not():
    one_gpu = [Node("gpu", cpus=2, gpus=1)]
    shape = cfg(**{"score.gpus_per_actor": 0.5, "score.min_actors": 2, "score.max_actors": 2,
                   "train.gpus_per_worker": 1, "train.num_workers": 1})
    assert problems(plan(shape), one_gpu) == []
    assert not decode_fused(shape)  # GPU actors: decoding is a stage of its own, on CPUs
    assert [a.what for a in plan(shape) if a.stage == "score"] == ["scoring actor", "decode task"]
    found = problems(plan(cfg(**{"train.gpus_per_worker": 1, "train.num_workers": 2})), one_gpu)
    assert found == ["stage train: train.num_workers = 2 Ray Train workers at 0.5 CPU + 1 GPU each need 2 GPUs at "
                     "once, but this cluster can host 1 (nodes: 2 CPUs, 1 GPU); set train.num_workers = 1, lower "
                     "train.gpus_per_worker, or add GPU nodes"]
    third = cfg(**{"score.gpus_per_actor": 1 / 3, "score.min_actors": 3, "score.max_actors": 3,
                   "score.cpus_per_actor": 0.25, "score.decode_cpus": 0.25})
    assert problems(plan(third), one_gpu) == []  # three thirds of a GPU fit on one


def test_what_no_node_has_is_named_with_the_largest_node():
    cpu_only = [Node("head", cpus=0, gpus=0), Node("worker", cpus=2, gpus=0)]
    assert problems(plan(cfg(**{"score.gpus_per_actor": 1})), cpu_only) == [
        "stage score: score.gpus_per_actor = 1 but no node of this cluster has a GPU (largest: 2 CPUs, 0 GPUs); set "
        "score.gpus_per_actor = 0 or add GPU nodes"]
    found = problems(plan(cfg(**{"score.gpus_per_actor": 2})), [Node("gpu", cpus=8, gpus=1)])
    assert found[0].startswith("stage score: score.gpus_per_actor = 2 but no node of this cluster has that many GPUs "
                               "(largest: 8 CPUs, 1 GPU); set score.gpus_per_actor <= 1")
    found = problems(plan(cfg(**{"train.cpus_per_worker": 4})), cpu_only)
    assert found[0].startswith("stage train: train.cpus_per_worker = 4 but no node of this cluster has that many CPUs")
    # Each fits some node, but no node has both: a GPU node with one CPU, a CPU node without GPUs.
    found = problems(plan(cfg(**{"score.gpus_per_actor": 1, "score.cpus_per_actor": 2})),
                     [Node("gpu", cpus=1, gpus=1), Node("cpu", cpus=4, gpus=0)])
    assert found[0].startswith("stage score: a scoring actor asks for 2 CPU + 1 GPU (score.cpus_per_actor, "
                               "score.gpus_per_actor) but no node of this cluster has both")


def test_a_stage_whose_workers_cannot_run_together_is_refused():
    """An actor of 1.5 CPUs and a decode task of 1 CPU each fit a 2-CPU node, but not at once:
    the actor would wait for images that no decode task could ever be started to make."""
    found = problems(plan(cfg(**{"score.cpus_per_actor": 1.5, "score.decode_cpus": 1.0})), [Node("n", cpus=2, gpus=0)])
    assert len(found) == 1 and found[0].startswith("stage score: 1 scoring actor (1.5 CPU each) and 1+ decode tasks "
                                                   "(1 CPU each) do not fit at once")
    # Fused (the same CPUs, no GPU), decoding runs inside the actor: nothing else to place.
    assert problems(plan(cfg(**{"score.cpus_per_actor": 2.0, "score.decode_cpus": 2.0})),
                    [Node("n", cpus=2, gpus=0)]) == []


def test_node_types_the_autoscaler_can_add_count_as_nodes():
    head = Node("head", cpus=0, gpus=0)
    two_gpu_workers = cfg(**{"train.gpus_per_worker": 1, "train.num_workers": 2})
    assert problems(plan(two_gpu_workers), [head, Node("node type gpu", cpus=8, gpus=1, most=4)]) == []
    assert problems(plan(two_gpu_workers), [head, Node("node type gpu", cpus=8, gpus=1, most=-1)]) == []
    found = problems(plan(two_gpu_workers), [head, Node("node type gpu", cpus=8, gpus=1, most=1)])
    assert len(found) == 1 and "this cluster, or any node type its autoscaler adds, can host 1" in found[0]


def test_resource_timeouts_are_validated():
    assert cfg(**{"score.resource_timeout_s": 0}).score.resource_timeout_s == 0  # 0: wait forever
    assert cfg().train.resource_timeout_s == 600
    for field in ("score.resource_timeout_s", "train.resource_timeout_s"):
        with pytest.raises(ConfigError, match=rf"{field}: must be >= 0 seconds \(0 waits forever\), got -1"):
            cfg(**{field: -1})


# --- a CPU-only machine: raysal's own local Ray ----------------------------------------------------


def test_a_gpu_on_a_cpu_only_machine_is_refused_in_seconds_and_writes_nothing(tmp_path):
    state = tmp_path / "state"
    started = time.monotonic()
    code, out = run_job("--state", str(state), "--set", "score.gpus_per_actor=1", "--set", "train.gpus_per_worker=1",
                        "--num-cpus", "2", timeout=120)
    took = time.monotonic() - started
    assert code == 2, out[-3000:]
    assert ("error: stage score: score.gpus_per_actor = 1 but no node of this cluster has a GPU (largest: 2 CPUs, "
            "0 GPUs); set score.gpus_per_actor = 0 or add GPU nodes; stage train: train.gpus_per_worker = 1 but no "
            "node of this cluster has a GPU") in out, out[-3000:]
    assert "Traceback" not in out and "stage " not in out.split("error:")[0]
    assert not state.exists()  # refused before the lease: nothing written, not even a log
    print(f"refused in {took:.1f} s")  # for the closing note; speed is measured in benchmarks, not asserted


def test_plan_prints_each_stage_and_exits_0_when_it_fits(tmp_path):
    code, out = run_job("--plan", "--state", str(tmp_path / "state"), "--num-cpus", "2", timeout=120)
    assert code == 0, out[-3000:]
    assert "resource plan for demo:" in out and "no autoscaler" in out
    assert "1 scoring actor, 0.5 CPU each: can run on" in out
    assert "decoding runs inside the scoring actors" in out
    assert "2 Ray Train workers, 0.5 CPU each: can run on" in out
    assert "fits: every stage can be placed on this cluster" in out
    assert not (tmp_path / "state").exists()


# --- one fake GPU --------------------------------------------------------------------------------


def on(cluster) -> dict[str, str]:
    """The environment of a job that joins ``cluster`` (its address and auth token)."""
    return {**cluster.env, "RAY_ADDRESS": cluster.gcs}


def test_plan_on_one_fake_gpu_fits_half_gpu_actors_and_refuses_two_gpu_workers(gpu_cluster, tmp_path):
    code, out = run_job("--plan", "--state", str(tmp_path / "state"), *GPU_SHAPE, "--set", "train.num_workers=1",
                        env=on(gpu_cluster))
    assert code == 0, out[-3000:]
    assert "2 scoring actors, 0.5 CPU + 0.5 GPU each: can run on" in out and "(up to 2)" in out
    assert "1+ decode tasks, 0.5 CPU each, as many as the free CPUs allow, beside the actors" in out
    assert "1 Ray Train worker, 0.5 CPU + 1 GPU each: can run on" in out
    started = time.monotonic()
    code, out = run_job("--state", str(tmp_path / "state"), *GPU_SHAPE, "--set", "train.num_workers=2",
                        "--set", "train.images_per_worker=0", env=on(gpu_cluster))
    assert code == 2, out[-3000:]
    assert ("error: stage train: train.num_workers = 2 Ray Train workers at 0.5 CPU + 1 GPU each need 2 GPUs at "
            "once, but this cluster can host 1") in out, out[-3000:]
    assert "Traceback" not in out and not (tmp_path / "state").exists()
    print(f"2 GPU workers on 1 GPU refused in {time.monotonic() - started:.1f} s")


_HOLD_GPU = """
import sys, time, ray
ray.init()
holder = ray.remote(num_gpus=1, num_cpus=0)(type("Holder", (), {"ping": lambda self: "held"})).remote()
print(ray.get(holder.ping.remote()), flush=True)
sys.stdin.read()  # until the test closes it
"""


@pytest.fixture()
def held_gpu(gpu_cluster):
    """Another job holds the cluster's one GPU until the test ends: feasible, but busy."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_GPU], env=on(gpu_cluster),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield
    finally:
        proc.stdin.close()  # its driver exits, and Ray frees the GPU
        proc.wait(timeout=60)


def _lease_live(state: Path) -> bool:
    from raysal.errors import Locked
    from raysal.run.lease import Lease
    from raysal.run.state import RunState

    try:
        Lease(RunState(str(state))).observe()
    except Locked:
        return True
    return False


def test_a_busy_gpu_is_waited_for_visibly_then_the_round_stops_with_exit_3(gpu_cluster, held_gpu, tmp_path):
    state = tmp_path / "state"
    started = time.monotonic()
    code, out = run_job("--state", str(state), *FAST, "--set", "train.gpus_per_worker=1",
                        "--set", "train.resource_timeout_s=8", env=on(gpu_cluster))
    took = time.monotonic() - started
    assert code == 3, out[-3000:]
    assert ("raysal stage train: waiting for resources: 1 Ray Train worker (0.5 CPU + 1 GPU each) not placed yet"
            in out), out[-3000:]
    assert "cluster: 0 of 1 GPU free" in out and "stops after train.resource_timeout_s = 8 s" in out
    assert ("error: stage train: the cluster did not free 1 Ray Train worker (0.5 CPU + 1 GPU each) within "
            "train.resource_timeout_s = 8 s") in out
    assert "committed stages stay; running the round again resumes it" in out and "Traceback" not in out
    assert not _lease_live(state)  # released: the next round need not wait for its TTL
    assert list((state / "logs").iterdir())  # the round had started: its log is kept
    print(f"busy GPU: exit 3 after {took:.1f} s")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_during_a_wait_stops_the_round_within_seconds(gpu_cluster, held_gpu, tmp_path, signum):
    state = tmp_path / "state"

    def waiting(out: str) -> None:  # the signal lands in the wait, not before it
        assert "waits forever (train.resource_timeout_s = 0)" in out and _lease_live(state)

    out = run_until_signalled(["--state", str(state), *FAST, "--set", "train.gpus_per_worker=1",
                               "--set", "train.resource_timeout_s=0"], "waiting for resources", signum,
                              env=on(gpu_cluster), before=waiting)
    name = signal.Signals(signum).name
    assert f"interrupted ({name}): the round stopped and released its lease" in out and "Traceback" not in out
    assert not _lease_live(state)


_SCORE_PLAN = """
import json, sys, io, logging
import numpy as np
from PIL import Image
import ray, ray.data
from raysal.config import load_config
from raysal.data.decode import decode
from raysal.errors import ResourceTimeout
from raysal.run import scoring
from raysal.run.cluster import init_ray

logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")
init_ray()
ray.data.DataContext.get_current().enable_progress_bars = False
checkpoint, shape = sys.argv[1], sys.argv[2]
def png(i):
    out = io.BytesIO()
    Image.fromarray(np.full((20, 20, 3), i * 7 % 255, np.uint8)).save(out, format="PNG")
    return out.getvalue()
rows = [{"image_id": i, "uri": f"img{i}.png", "label": float(i % 3), "image_bytes": png(i)} for i in range(64)]
gpu = {"score.gpus_per_actor": 0.5, "score.min_actors": 2, "score.max_actors": 2} if shape == "gpu" else {}
cfg = load_config("demo", {"model.input_size": 16, "score.batch_size": 16, "score.resource_timeout_s": 6, **gpu})
if shape == "busy":
    holder = ray.remote(num_gpus=1, num_cpus=0)(type("Holder", (), {"ping": lambda self: 1})).remote()
    ray.get(holder.ping.remote())
    cfg = load_config("demo", {"model.input_size": 16, "score.batch_size": 16, "score.resource_timeout_s": 6,
                               "score.gpus_per_actor": 1})
    try:
        scoring.score(decode(ray.data.from_items(rows), cfg), checkpoint, cfg)
    except ResourceTimeout as exc:
        print("TIMEOUT", exc)
    sys.exit(0)
scored = scoring.score(decode(ray.data.from_items(rows), cfg), checkpoint, cfg).materialize()
print("ROWS", scored.count())
print("STATS", json.dumps(scored.stats()))
"""


def _score(cluster, checkpoint: str, shape: str) -> str:
    done = subprocess.run([sys.executable, "-c", _SCORE_PLAN, checkpoint, shape], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env=on(cluster))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_gpu_actors_only_infer_while_decoding_runs_in_cpu_tasks_beside_them(gpu_cluster, tiny_checkpoint):
    """The executed plan, from the dataset's stats: with GPU actors, decode_batch is a task
    operator of its own; in the CPU shape Ray Data fuses it into the actors."""
    gpu = _score(gpu_cluster, tiny_checkpoint, "gpu")
    assert "ROWS 64" in gpu
    stats = json.loads(gpu.split("STATS ", 1)[1].splitlines()[0])
    assert "MapBatches(decode_batch)->MapBatches(Scorer)" not in stats, stats
    assert "MapBatches(decode_batch)" in stats and "MapBatches(Scorer)" in stats  # two operators
    cpu = json.loads(_score(gpu_cluster, tiny_checkpoint, "cpu").split("STATS ", 1)[1].splitlines()[0])
    assert "MapBatches(decode_batch)->MapBatches(Scorer)" in cpu, cpu


def test_scoring_waits_for_a_busy_gpu_visibly_and_gives_up_at_its_timeout(gpu_cluster, tiny_checkpoint):
    out = _score(gpu_cluster, tiny_checkpoint, "busy")
    assert ("stage score: waiting for resources: 1 scoring actor (0.5 CPU + 1 GPU each) and 1 decode task "
            "(0.5 CPU each) not placed yet") in out, out[-3000:]
    assert "stops after score.resource_timeout_s = 6 s" in out
    assert "TIMEOUT stage score: the cluster did not free 1 scoring actor" in out


# --- an autoscaling cluster: the node types `ray up` leaves on the head ---------------------------


def _bootstrap(tmp_path: Path, gpu_worker: dict) -> Path:
    """A home with cluster.yaml as `ray up` leaves it on the head (resources filled in, or not)."""
    import yaml

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    config["available_node_types"]["gpu_worker"]["resources"] = gpu_worker
    home = tmp_path / "home"
    home.mkdir()
    (home / "ray_bootstrap_config.yaml").write_text(yaml.safe_dump(config))
    return home


def test_the_launchers_node_types_are_read_and_unknown_sizes_refuse_nothing(tmp_path):
    from raysal.run.resources import bootstrap_node_types

    [filled] = bootstrap_node_types(str(_bootstrap(tmp_path, {"CPU": 8, "GPU": 1}) / "ray_bootstrap_config.yaml"))
    assert (filled.name, filled.cpus, filled.gpus, filled.most) == ("node type gpu_worker", 8, 1, 8)  # not the head
    [unknown] = bootstrap_node_types(str(REPO / "cluster.yaml"))  # resources: {} - detected when a node starts
    head = Node("head", cpus=0, gpus=0)
    assert problems(plan(cfg(**{"score.gpus_per_actor": 4, "train.gpus_per_worker": 1})), [head, unknown]) == []
    assert problems(plan(cfg(**{"score.gpus_per_actor": 1, "score.min_actors": 8, "score.max_actors": 8})),
                    [head, filled]) == []  # eight workers, each added for one actor
    assert problems(plan(cfg(**{"score.gpus_per_actor": 1, "score.min_actors": 9, "score.max_actors": 9})),
                    [head, filled])[0].startswith("stage score: score.min_actors = 9 scoring actors")


def test_plan_on_a_cluster_with_no_gpu_yet_counts_the_gpu_nodes_its_autoscaler_can_add(tmp_path):
    """GPU workers scale from 0 (cluster.yaml): the round is not refused for the GPUs the
    autoscaler would add; only what even those node types lack is."""
    env = {"HOME": str(_bootstrap(tmp_path, {"CPU": 8, "GPU": 1}))}
    proc = job("--plan", "--set", "score.gpus_per_actor=1", "--set", "train.gpus_per_worker=1", "--num-cpus", "2",
               env=env)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    assert "cluster: 1 node and 1 node type its autoscaler can add" in out
    assert "\n  node type gpu_worker: 8 CPUs, 1 GPU, up to 8\n" in out
    assert "1 scoring actor, 0.5 CPU + 1 GPU each: can run on node type gpu_worker (up to 1)" in out
    proc = job("--plan", "--set", "score.gpus_per_actor=2", "--num-cpus", "2", env=env)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out[-3000:]
    assert ("refused: stage score: score.gpus_per_actor = 2 but no node of this cluster, or any node type its "
            "autoscaler adds, has that many GPUs (largest: 8 CPUs, 1 GPU)") in out
