"""The cluster path: a real Ray head on loopback, rounds submitted as Ray jobs, scheduled firings."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from _jobs import FAST, REPO, copy_state
from raysal import schedule

VENV_BIN = str(Path(sys.executable).parent)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """``ray start --head`` on free ports (in its own process group, stopped by killing that group)."""
    ports = {flag: _free_port() for flag in ("--port", "--dashboard-port", "--dashboard-agent-listen-port",
                                             "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
                                             "--metrics-export-port", "--ray-client-server-port")}
    temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's socket paths have a length limit
    # The entrypoint's `python` is whatever is on PATH when the head starts: this venv's.
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen([os.path.join(VENV_BIN, "ray"), "start", "--head", "--block", "--num-cpus=2",
                             "--include-dashboard=true", "--dashboard-host=127.0.0.1", "--disable-usage-stats",
                             f"--temp-dir={temp_dir}", *(f"{flag}={port}" for flag, port in ports.items())],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{ports['--dashboard-port']}"
    deadline = time.monotonic() + 120
    while True:  # jobs are accepted once the dashboard and its agent are up
        probe = subprocess.run([os.path.join(VENV_BIN, "ray"), "job", "submit", "--address", address, "--", "true"],
                               env=env, capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            break
        if time.monotonic() > deadline or head.poll() is not None:
            os.killpg(head.pid, signal.SIGKILL)
            pytest.fail(f"the Ray head did not start: {probe.stderr[-2000:]}")
        time.sleep(2)
    yield address, env
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)


def ray_job_submit(address: str, env: dict, submission_id: str, *round_args: str) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(VENV_BIN, "ray"), "job", "submit", "--address", address,
                           "--submission-id", submission_id, "--working-dir", str(REPO), "--",
                           "python", "jobs/round.py", *round_args],
                          env=env, capture_output=True, text=True, timeout=500, cwd=REPO)


def job_statuses(address: str, env: dict) -> dict[str, str]:
    """Status by submission id, asked by a fresh process: Ray reads its auth mode once per process."""
    code = ("import json, sys; from ray.job_submission import JobSubmissionClient as Client; "
            "print(json.dumps({j.submission_id: j.status.value for j in Client(sys.argv[1]).list_jobs() "
            "if j.submission_id}))")
    out = subprocess.run([sys.executable, "-c", code, address], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def submit_entry(address: str, env: dict, run: str, *round_args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "jobs" / "submit.py"), "--address", address, "--run", run,
                           "--working-dir", str(REPO), "--", *round_args],
                          env=env, capture_output=True, text=True, timeout=120, cwd=REPO)


@pytest.mark.timeout(900)
def test_rounds_as_ray_jobs_and_a_schedule_that_fires_twice(ray_head, waiting_state, tmp_path):
    address, env = ray_head
    state = copy_state(waiting_state, tmp_path / "state", keep_rounds=False)
    round_args = ["--state", str(state), *FAST]

    first = ray_job_submit(address, env, "raysal-e2e-round-0001", *round_args)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    assert "round 1: selected 40 of 897 pool images" in first.stdout
    assert (state / "rounds" / "0001" / "round.json").exists()

    again = ray_job_submit(address, env, "raysal-e2e-round-0001", *round_args)
    assert again.returncode != 0 and "raysal-e2e-round-0001" in again.stdout + again.stderr
    assert not (state / "rounds" / "0002").exists()  # the refused submission ran nothing

    # A schedule that fires twice: the second firing finds round 2's job and submits nothing.
    fired = [submit_entry(address, env, "e2e", *round_args) for _ in range(2)]
    assert all(f.returncode == 0 for f in fired), [f.stderr[-2000:] for f in fired]
    assert "round 2 of e2e: submitted raysal-e2e-round-0002 (not submitted yet)" in fired[0].stdout
    assert "round 2 of e2e: nothing to submit (job raysal-e2e-round-0002 is" in fired[1].stdout
    deadline = time.monotonic() + 500
    while (status := job_statuses(address, env)["raysal-e2e-round-0002"]) not in ("SUCCEEDED", "FAILED", "STOPPED"):
        assert time.monotonic() < deadline, "round 2's job did not finish"
        time.sleep(3)
    assert status == "SUCCEEDED"
    assert (state / "rounds" / "0002" / "round.json").exists()
    jobs = [job_id for job_id in job_statuses(address, env) if job_id.startswith("raysal-e2e")]
    assert sorted(jobs) == ["raysal-e2e-round-0001", "raysal-e2e-round-0002"]


@pytest.mark.parametrize(("statuses", "submit", "job_id"), [
    ({}, True, "raysal-demo-round-0003"),
    ({"raysal-demo-round-0003": "RUNNING"}, False, "raysal-demo-round-0003"),
    ({"raysal-demo-round-0003": "PENDING"}, False, "raysal-demo-round-0003"),
    ({"raysal-demo-round-0003": "SUCCEEDED"}, False, "raysal-demo-round-0003"),
    ({"raysal-demo-round-0003": "FAILED"}, True, "raysal-demo-round-0003-retry-1"),
    ({"raysal-demo-round-0003": "FAILED", "raysal-demo-round-0003-retry-1": "STOPPED"}, True,
     "raysal-demo-round-0003-retry-2"),
    ({"raysal-demo-round-0003": "FAILED", "raysal-demo-round-0003-retry-1": "RUNNING"}, False,
     "raysal-demo-round-0003-retry-1"),
])
def test_schedule_decision(statuses, submit, job_id):
    decision = schedule.decide("demo", 3, statuses)
    assert (decision.submit, decision.submission_id) == (submit, job_id)


def test_submission_ids_are_stable_and_safe():
    assert schedule.submission_id("my run/2026", 12) == "raysal-my-run-2026-round-0012"
    assert schedule.submission_id("demo", 1) == schedule.submission_id("demo", 1)
