"""A real Label Studio server for the tests: installed from the package registry into a virtualenv
of its own (``LABEL_STUDIO_VENV``, kept between runs), started with sqlite on loopback, and a
user with a personal access token made as a user does in the UI (log in, create the token)."""

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
VERSION = "1.23.2"
LABEL_STUDIO_VENV = REPO / ".labelstudio-venv"  # ~1 GB; git ignores it
EMAIL, PASSWORD = "annotator@example.com", "raysal-test-1"


def install() -> Path:
    """The ``label-studio`` command of a virtualenv holding Label Studio ``VERSION``; made once."""
    return venv_command(LABEL_STUDIO_VENV, f"label-studio=={VERSION}", "label-studio")


@dataclass
class Server:
    url: str
    token: str  # a personal access token (a JWT refresh token)
    session: requests.Session  # logged in, as a browser would be
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


def start(data_dir: Path, files_root: str, timeout_s: float = 240) -> Server:
    """Label Studio on a free loopback port, its data (sqlite) in ``data_dir``, serving local files
    below ``files_root``; returns once it answers and a user with a token exists."""
    command = install()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = data_dir / "label-studio.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
           "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": files_root, "LATEST_VERSION_CHECK": "false",
           "COLLECT_ANALYTICS": "false"}
    with open(log, "w") as out:
        process = subprocess.Popen([str(command), "start", "--no-browser", "--port", str(port), "--internal-host",
                                    "127.0.0.1", "--data-dir", str(data_dir), "--username", EMAIL, "--password",
                                    PASSWORD], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=data_dir,
                                   start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if requests.get(f"{url}/health", timeout=2).ok:
                break
        except requests.RequestException:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            raise RuntimeError(f"Label Studio did not start in {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")
        time.sleep(1)
    session = requests.Session()
    session.get(f"{url}/user/login/", timeout=30)
    session.post(f"{url}/user/login/", data={"email": EMAIL, "password": PASSWORD,
                                             "csrfmiddlewaretoken": session.cookies.get("csrftoken")},
                 headers={"Referer": url}, timeout=30)
    # Account & Settings > Personal Access Token > Create: what the UI calls.
    response = session.post(f"{url}/api/token/", headers={"X-CSRFToken": session.cookies.get("csrftoken"),
                                                          "Referer": url}, timeout=30)
    response.raise_for_status()
    return Server(url, response.json()["token"], session, process, log)
