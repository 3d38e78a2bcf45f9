"""Running jobs/round.py in a subprocess, and killing it, for the end-to-end tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# A quick round: 40 images, 2 epochs, a 200-image test split.
FAST = ["--budget", "40", "--set", "train.finetune_epochs=2", "--set", "data.test.rows=\"500:700\"",
        "--num-cpus", "2"]
HUMAN = ["--set", "label.mode=\"human\""]


def job(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """jobs/round.py in a fresh process group (so a test can SIGKILL it with its local Ray)."""
    return subprocess.Popen([sys.executable, str(REPO / "jobs" / "round.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=REPO, start_new_session=True,
                            env={**os.environ, **(env or {})})


def run_job(*args: str, env: dict[str, str] | None = None, timeout: float = 400) -> tuple[int, str]:
    proc = job(*args, env=env)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def kill_at(args: list[str], marker: str, delay: float, env: dict[str, str] | None = None) -> str:
    """Start a round, SIGKILL it and its Ray ``delay`` seconds after ``marker`` is logged."""
    proc = job(*args, env=env)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            time.sleep(delay)
            os.killpg(proc.pid, signal.SIGKILL)  # no cleanup: the lock and partial files stay
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)[-3000:]
    return "".join(seen)


def copy_state(source: Path, target: Path, keep_rounds: bool) -> Path:
    shutil.copytree(source, target)
    if not keep_rounds:  # only the run identity and the round-0 model remain
        for name in ("rounds", "history.json", "learning_curve.png", "lock.json"):
            path = target / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    return target
