"""Two nodes that share no ``/tmp``, as a real cluster's machines share none: a head that runs no
work (``--num-cpus=0``, as in cluster.yaml) and a worker node in a private mount namespace. The
state is on a local S3 server, the images in a folder both nodes see (as NFS would be), and
every round goes through ``ray job submit`` or a scheduled ``jobs/submit.py``. Needs root and util-linux
``unshare``, as CI has."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest

from raysal.selection.stopping import cohen_kappa

from _cluster import Cluster, ray_job_submit, start_head
from _jobs import FAST, REPO, TWO_WORKERS

BUCKET = "raysal-test"

@pytest.fixture(scope="module")
def two_nodes(s3_env) -> Cluster:
    cluster = start_head(num_cpus=0, env=s3_env)
    try:
        cluster.add_private_tmp_node(num_cpus=2, num_gpus=1)  # a fake GPU slot: its work runs on the CPU
        cluster.wait_for_nodes(2)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture()
def shared_folder():
    """A folder outside /tmp: both nodes see it, as they would an NFS mount."""
    folder = Path("/var/tmp") / f"raysal-test-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


_SEES = """
import os, sys, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On
ray.init()
path = sys.argv[1]
open(path, "w").close()
seen = {n["NodeID"]: ray.get(ray.remote(num_cpus=0)(os.path.exists).options(
    scheduling_strategy=On(n["NodeID"], soft=False)).remote(path)) for n in ray.nodes() if n["Alive"]}
os.remove(path)
print(sorted(seen.values()))
"""


_LEFT_IN_TMP = """
import glob, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On
ray.init()
worker = next(n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU"))
print(ray.get(ray.remote(num_cpus=0)(glob.glob).options(
    scheduling_strategy=On(worker["NodeID"], soft=False)).remote("/tmp/raysal-*")))
"""


@pytest.mark.timeout(300)
def test_the_worker_node_does_not_see_the_drivers_tmp(two_nodes, shared_folder):
    """The fixture is what it claims: a file in the driver's /tmp exists on one node only."""
    private = two_nodes.python(_SEES, f"/tmp/raysal-probe-{uuid.uuid4().hex}")
    shared = two_nodes.python(_SEES, str(shared_folder / "probe"))
    assert private.returncode == 0 and shared.returncode == 0, private.stderr[-2000:] + shared.stderr[-2000:]
    assert private.stdout.strip().splitlines()[-1] == "[False, True]"
    assert shared.stdout.strip().splitlines()[-1] == "[True, True]"


def _round(cluster: Cluster, job_id: str, *args: str) -> tuple[int, str]:
    done = ray_job_submit(cluster, job_id, "python", "jobs/round.py", *args, working_dir=str(REPO))
    return done.returncode, done.stdout + done.stderr


@pytest.mark.timeout(300)
def test_a_state_in_the_drivers_tmp_is_refused_at_once(two_nodes, shared_folder):
    state = f"/tmp/raysal-state-{uuid.uuid4().hex[:8]}"
    code, out = _round(two_nodes, f"tmp-state-{uuid.uuid4().hex[:6]}", "--state", state,
                       "--set", f'data.root="{shared_folder / "data"}"', *FAST, *TWO_WORKERS)
    assert code != 0, out[-3000:]
    assert "exit code 2" in out, out[-3000:]
    assert re.search(rf"--state: {state} is a path on this machine's disk, and node\(s\) \S+ \(node [0-9a-f]{{8}}\) "
                     "of the cluster do not see it there", out), out[-3000:]
    assert not Path(state).exists()  # refused before anything was written
    assert "stage score" not in out


@pytest.mark.timeout(300)
def test_the_plan_names_the_gpu_node_and_what_the_cluster_can_never_host_is_refused(two_nodes, shared_folder):
    """The head runs no work (0 CPUs) and the worker node has one (fake) GPU: the plan places
    the GPU actors and the train worker there; two 1-GPU train workers are refused, in seconds."""
    gpu = ["--set", "score.gpus_per_actor=0.5", "--set", "score.min_actors=2", "--set", "score.max_actors=2",
           "--set", "train.gpus_per_worker=1"]
    code, out = _round(two_nodes, f"plan-{uuid.uuid4().hex[:6]}", "--plan", *gpu, "--set", "train.num_workers=1")
    assert code == 0, out[-3000:]
    assert "cluster: 2 nodes; no autoscaler" in out, out[-3000:]
    assert re.search(r"\n  \S+ \(node [0-9a-f]{8}\): 0 CPUs, 0 GPUs; free now: 0 CPUs, 0 GPUs\n", out), out[-3000:]
    worker = re.search(r"\n  (\S+ \(node [0-9a-f]{8}\)): 2 CPUs, 1 GPU; free now: 2 CPUs, 1 GPU\n", out).group(1)
    assert f"2 scoring actors, 0.5 CPU + 0.5 GPU each: can run on {worker} (up to 2)\n" in out  # not the head
    assert f"1 Ray Train worker, 0.5 CPU + 1 GPU each: can run on {worker} (up to 1)\n" in out
    state = shared_folder / "state"
    started = time.monotonic()
    code, out = _round(two_nodes, f"two-gpus-{uuid.uuid4().hex[:6]}", "--state", str(state), *FAST, *gpu,
                       *TWO_WORKERS)
    assert code != 0 and "exit code 2" in out, out[-3000:]
    assert ("error: stage train: train.num_workers = 2 Ray Train workers at 0.5 CPU + 1 GPU each need 2 GPUs at "
            "once, but this cluster can host 1 (nodes: 0 CPUs, 0 GPUs, 2 CPUs, 1 GPU)") in out, out[-3000:]
    assert not state.exists() and "Traceback" not in out
    print(f"two 1-GPU workers on a 1-GPU cluster: refused through ray job submit in {time.monotonic() - started:.1f} s")


def job_statuses(cluster: Cluster) -> dict[str, str]:
    """Status by submission id, asked by a fresh process: Ray reads its auth mode once per process."""
    code = ("import json, sys; from ray.job_submission import JobSubmissionClient as Client; "
            "print(json.dumps({j.submission_id: j.status.value for j in Client(sys.argv[1]).list_jobs() "
            "if j.submission_id}))")
    out = cluster.python(code, cluster.address)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def fire_schedule(cluster: Cluster, run: str, *round_args: str) -> subprocess.CompletedProcess:
    """One firing of a nightly schedule: jobs/submit.py, as cron would run it."""
    return subprocess.run([sys.executable, str(REPO / "jobs" / "submit.py"), "--address", cluster.address,
                           "--run", run, "--working-dir", str(REPO), "--", *round_args],
                          env=cluster.env, capture_output=True, text=True, timeout=120, cwd=REPO)


@pytest.mark.timeout(1200)
def test_bootstrap_and_two_rounds_on_two_nodes_with_the_state_on_s3(two_nodes, shared_folder, s3):
    """Round 1 (with the round-0 model) through ``ray job submit``; round 2 from a schedule that
    fires twice, through jobs/submit.py; round 2 retrains from round 1's model."""
    from raysal import storage
    from raysal.run import rounds
    from raysal.run.state import RunState

    run = f"two-nodes-{uuid.uuid4().hex[:6]}"
    root = f"s3://{BUCKET}/{run}"
    args = ["--state", root, "--set", f'data.root="{shared_folder / "data"}"', *FAST, *TWO_WORKERS]
    before = set(Path("/tmp").glob("raysal-*"))
    first_id = f"raysal-{run}-round-0001"
    code, out = _round(two_nodes, first_id, *args)
    assert code == 0, out[-5000:]
    assert "round 1: selected 40 of 897 pool images" in out, out[-3000:]
    code, out = _round(two_nodes, first_id, *args)  # the same job id again: refused, nothing runs
    assert code != 0 and first_id in out
    assert rounds.current_round(RunState(root)) == 2 and not RunState(root).exists("rounds/0002")

    # Round 2 keeps its decoded training set in a cache on S3, as a set larger than the object
    # store would: shards written by tasks on either node, read back by the workers each epoch.
    fired = [fire_schedule(two_nodes, run, *args, "--set", 'train.data="cache"') for _ in range(2)]
    assert all(f.returncode == 0 for f in fired), [f.stdout[-1000:] + f.stderr[-2000:] for f in fired]
    second_id = f"raysal-{run}-round-0002"
    assert f"round 2 of {run}: submitted {second_id} (not submitted yet)" in fired[0].stdout
    assert f"round 2 of {run}: nothing to submit (job {second_id} is" in fired[1].stdout
    deadline = time.monotonic() + 600
    while (status := job_statuses(two_nodes)[second_id]) not in ("SUCCEEDED", "FAILED", "STOPPED"):
        assert time.monotonic() < deadline, "round 2's job did not finish"
        time.sleep(3)
    assert status == "SUCCEEDED"
    assert sorted(j for j in job_statuses(two_nodes) if run in j) == [first_id, second_id]

    state = RunState(root)
    report = rounds.status(root)
    assert [(r["round"], r["state"], r["labelled_total"]) for r in report["rounds"]] == [
        (1, "done", 340), (2, "done", 380)]
    second = state.round_record(2)
    assert second["model_before"] == "models/0001" and second["model_after"] == "models/0002"
    # The stopping signal: round 2's scoring model (1) against round 1's (0), on the pool images both
    # scored (the stop set holds them all: the pool is smaller than it), as the scores themselves give it.
    assert state.round_record(1)["kappa"] is None
    by_model = [dict(zip(*state.read_table(state.files(n).scores, columns=["image_id", "predicted"])
                         .to_pydict().values(), strict=True)) for n in (1, 2)]
    common = sorted(set(by_model[0]) & set(by_model[1]))
    assert second["kappa_images"] == len(common) == 857  # 897 less the 40 selected in round 1
    assert second["kappa"] == pytest.approx(cohen_kappa(np.array([by_model[1][i] for i in common]),
                                                        np.array([by_model[0][i] for i in common])), abs=1e-6)
    assert second["kappa_mean"] is None and second["stop_labelling"] is False  # three rounds' kappas are needed
    assert second["strategy"] == "top_k" and second["beta"] == 1.0
    assert state.is_published("models/0001") and state.is_published("models/0002")
    selected = [set(state.read_table(state.files(n).selection)["image_id"].to_pylist()) for n in (1, 2)]
    assert len(selected[0]) == len(selected[1]) == 40 and not selected[0] & selected[1]
    assert [h["round"] for h in json.loads(state.read_bytes("history.json"))] == [1, 2]
    assert state.read_bytes("learning_curve.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert state.exists("models/0002/test_metrics.json") and report["leased_by"] is None
    fs, logs = storage.resolve(state.uri("logs"))  # the rounds' logs, copied to the state as each ended
    texts = [fs.open_input_stream(f.path).read().decode() for f in fs.get_file_info(pafs.FileSelector(logs))]
    cached = [t for t in texts if "training set: up to" in t]
    assert len(cached) == 1 and f"{root}/train/decoded-0002" in cached[0], [t[-2000:] for t in texts]
    assert state.stage_done(2, "train")["train_size"] == 380  # every image once, counted as written
    assert not state.exists("train/decoded-0002")  # the cache is removed
    # the driver's downloads were removed (what other processes remove meanwhile is theirs)
    assert not set(Path("/tmp").glob("raysal-*")) - before
    workers = two_nodes.python(_LEFT_IN_TMP)  # and the worker node's (models read by actors and train workers)
    assert workers.returncode == 0 and workers.stdout.strip().splitlines()[-1] == "[]", workers.stderr[-2000:]
