"""Real Ray clusters on this machine for the job tests: a head, and worker nodes that share no
``/tmp`` with it (started in a private mount namespace, as a second machine would be)."""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = str(Path(sys.executable).parent)
RAY = os.path.join(VENV_BIN, "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@dataclass
class Cluster:
    """A running cluster: its job API address, its GCS address and the environment of its clients."""

    address: str
    gcs: str
    env: dict[str, str]
    procs: list[subprocess.Popen] = field(default_factory=list)

    def add_private_tmp_node(self, num_cpus: int, num_gpus: int = 0) -> None:
        """A worker node with a ``/tmp`` of its own: it cannot see a file the driver puts in ``/tmp``.

        Only this checkout (with its venv) is mounted back at its own path, should it lie under
        ``/tmp``, as a real node has raysal installed where the head has it.
        """
        code = shlex.quote(str(REPO))
        keep = "/run/raysal-test-code"  # outside /tmp; only a mount point, left empty
        script = (f"mkdir -p {keep} && mount --bind {code} {keep} && mount -t tmpfs none /tmp && "
                  f"mkdir -p {code} && mount --bind {keep} {code} && "
                  f"exec {RAY} start --address={self.gcs} --num-cpus={num_cpus} --num-gpus={num_gpus} "
                  f"--node-ip-address=127.0.0.1 --disable-usage-stats --block")
        self.procs.append(subprocess.Popen(["unshare", "-m", "--propagation", "private", "bash", "-c", script],
                                           env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                           start_new_session=True))

    def python(self, code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run ``code`` in a fresh process connected to the cluster (Ray reads auth once per process)."""
        return subprocess.run([sys.executable, "-c", code, *args], env={**self.env, "RAY_ADDRESS": self.gcs},
                              capture_output=True, text=True, timeout=timeout)

    def wait_for_nodes(self, count: int, timeout: float = 120) -> None:
        code = "import ray; ray.init(); print(sum(n['Alive'] for n in ray.nodes()))"
        deadline = time.monotonic() + timeout
        while True:
            out = self.python(code)
            if out.returncode == 0 and int(out.stdout.strip().splitlines()[-1]) >= count:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not reach {count} nodes: {out.stdout[-500:]}{out.stderr[-1500:]}")
            time.sleep(2)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc)
        shutil.rmtree(os.path.dirname(self.env["RAY_AUTH_TOKEN_PATH"]), ignore_errors=True)


def start_head(num_cpus: int, env: dict[str, str] | None = None, timeout: float = 120, num_gpus: int = 0) -> Cluster:
    """``ray start --head`` on free ports, accepting jobs once this returns. ``num_gpus``: fake GPU
    slots (TensorFlow finds no CUDA device and runs on the CPU; Ray schedules as on GPU nodes).

    The head runs in its own process group with this venv first on PATH: a job's ``python`` is
    whatever was on PATH when the head started.
    """
    ports = {flag: free_port() for flag in ("--port", "--dashboard-port", "--dashboard-agent-listen-port",
                                            "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
                                            "--metrics-export-port", "--ray-client-server-port")}
    temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's socket paths have a length limit
    token = Path(tempfile.mkdtemp(prefix="raysal-token-", dir="/var/tmp")) / "auth_token"  # every node reads it
    token.write_text(secrets.token_hex(32))  # Ray 2.60 clusters authenticate every client and node
    full_env = {**os.environ, **(env or {}), "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
                "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    full_env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen([RAY, "start", "--head", "--block", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}",
                             "--include-dashboard=true",
                             "--dashboard-host=127.0.0.1", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                             f"--temp-dir={temp_dir}", *(f"{flag}={port}" for flag, port in ports.items())],
                            env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    cluster = Cluster(f"http://127.0.0.1:{ports['--dashboard-port']}", f"127.0.0.1:{ports['--port']}", full_env,
                      [head])
    deadline = time.monotonic() + timeout
    while True:  # jobs are accepted once the dashboard and its agent are up
        probe = subprocess.run([RAY, "job", "submit", "--address", cluster.address, "--", "true"],
                               env=full_env, capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            return cluster
        if time.monotonic() > deadline or head.poll() is not None:
            cluster.stop()
            raise RuntimeError(f"the Ray head did not start: {probe.stderr[-2000:]}")
        time.sleep(2)


def ray_job_submit(cluster: Cluster, submission_id: str, *entrypoint: str, working_dir: str,
                   timeout: float = 600) -> subprocess.CompletedProcess:
    """``ray job submit`` and wait: its exit status is the job's."""
    return subprocess.run([RAY, "job", "submit", "--address", cluster.address, "--submission-id", submission_id,
                           "--working-dir", working_dir, "--", *entrypoint],
                          env=cluster.env, capture_output=True, text=True, timeout=timeout, cwd=working_dir)
