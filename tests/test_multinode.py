"""Two nodes that share no ``/tmp``, as a real cluster's machines share none: a head that runs no
work (``--num-cpus=0``, as in cluster.yaml) and a worker node in a private mount namespace. The
state is on a local S3 server, the images in a folder both nodes see (as NFS would be), and
every round goes through ``ray job submit``."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path

import pytest

from _cluster import Cluster, ray_job_submit, start_head
from _jobs import FAST, REPO

BUCKET = "raysal-test"

pytestmark = pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare (root)")


@pytest.fixture(scope="module")
def two_nodes(s3_env) -> Cluster:
    cluster = start_head(num_cpus=0, env=s3_env)
    try:
        cluster.add_private_tmp_node(num_cpus=2)
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
                       "--set", f'data.root="{shared_folder / "data"}"', *FAST)
    assert code != 0, out[-3000:]
    assert "exit code 2" in out, out[-3000:]
    assert re.search(rf"--state: {state} is a path on this machine's disk, and node\(s\) \S+ \(node [0-9a-f]{{8}}\) "
                     "of the cluster do not see it there", out), out[-3000:]
    assert not Path(state).exists()  # refused before anything was written
    assert "stage score" not in out


@pytest.mark.timeout(1200)
def test_bootstrap_and_two_rounds_on_two_nodes_with_the_state_on_s3(two_nodes, shared_folder, s3):
    from raysal import rounds
    from raysal.state import RunState

    root = f"s3://{BUCKET}/two-nodes-{uuid.uuid4().hex[:6]}"
    args = ["--state", root, "--set", f'data.root="{shared_folder / "data"}"', *FAST]
    before = set(Path("/tmp").glob("raysal-*"))
    for number in (1, 2):
        code, out = _round(two_nodes, f"two-nodes-{uuid.uuid4().hex[:6]}-round-{number}", *args)
        assert code == 0, out[-5000:]
        assert f"round {number}: selected 40 of {897 - 40 * (number - 1)} pool images" in out, out[-3000:]

    state = RunState(root)
    report = rounds.status(root)
    assert [(r["round"], r["state"], r["labelled_total"]) for r in report["rounds"]] == [
        (1, "done", 340), (2, "done", 380)]
    second = state.round_record(2)
    assert second["model_before"] == "models/0001" and second["model_after"] == "models/0002"
    assert state.is_published("models/0001") and state.is_published("models/0002")
    selected = [set(state.read_table(f"rounds/{n:04d}/selection.parquet")["image_id"].to_pylist()) for n in (1, 2)]
    assert len(selected[0]) == len(selected[1]) == 40 and not selected[0] & selected[1]
    assert json.loads(state.read_bytes("history.json"))[-1]["round"] == 2
    assert set(Path("/tmp").glob("raysal-*")) == before  # the driver's downloads were removed
