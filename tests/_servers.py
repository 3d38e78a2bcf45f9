"""What the tests' real servers share: a free loopback port, and a virtualenv of its own for a
server whose pins need not agree with raysal's (Label Studio, MLflow), made once and kept."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def venv_command(venv: Path, requirement: str, command: str) -> Path:
    """``command`` of the virtualenv ``venv`` holding ``requirement`` (``name==version``): made
    with pip from the package registry the first time, kept for later runs (git ignores it)."""
    marker = venv / f".installed-{requirement.split('==')[-1]}"
    if not marker.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        result = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                                 "--disable-pip-version-check", requirement], capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"pip install {requirement} failed:\n{result.stderr[-3000:]}")
        marker.touch()
    return venv / "bin" / command
