"""A real MLflow tracking server for the tests: ``mlflow server`` from the package registry, in a
virtualenv of its own (``MLFLOW_VENV``, kept between runs: the server's pins need not agree with
raysal's), with a sqlite backend store and local artifacts, on a loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from _servers import free_port, venv_command

REPO = Path(__file__).resolve().parents[1]
VERSION = "3.17.2"  # the server; raysal's client is mlflow-skinny (constraints.txt)
MLFLOW_VENV = REPO / ".mlflow-venv"  # git ignores it


def install() -> Path:
    """The ``mlflow`` command of a virtualenv holding MLflow ``VERSION``; made once."""
    return venv_command(MLFLOW_VENV, f"mlflow=={VERSION}", "mlflow")


@dataclass
class Server:
    url: str
    port: int
    data_dir: Path
    process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 180) -> None:
        """Start (or start again, on the same port and store) and wait until it answers."""
        log = self.data_dir / "mlflow-server.log"
        with open(log, "a") as out:
            self.process = subprocess.Popen(
                [str(install()), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                 "--backend-store-uri", f"sqlite:///{self.data_dir / 'mlflow.db'}",
                 "--artifacts-destination", str(self.data_dir / "artifacts")],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.data_dir, start_new_session=True,
                env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"})
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if requests.get(f"{self.url}/health", timeout=2).ok:
                    # the tracking API too: its first request loads the server's handlers and store
                    requests.get(f"{self.url}/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                                 timeout=timeout_s).raise_for_status()
                    return
            except requests.RequestException:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mlflow server did not start in {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        """End the server this test started (its process group), and wait until the port is free."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        self.process = None


def server(data_dir: Path) -> Server:
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    return Server(f"http://127.0.0.1:{port}", port, data_dir)
