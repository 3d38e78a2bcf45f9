"""Running jobs/round.py in a subprocess, and killing it where a fault test says, for the end-to-end tests."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
# A quick round: 40 images, 2 epochs on one Ray Train worker (the tests of multi-worker training
# ask for two), a 200-image test split, blocks of 64 images (scored in 4 batches).
FAST = ["--budget", "40", "--set", "train.finetune_epochs=2", "--set", "train.num_workers=1",
        "--set", "data.test.rows=\"500:700\"", "--set", "score.batch_size=16", "--num-cpus", "2"]
# After FAST: MultiWorkerMirroredStrategy across two workers, whatever the set size.
TWO_WORKERS = ["--set", "train.num_workers=2", "--set", "train.images_per_worker=0"]
HUMAN = ["--set", "label.mode=\"human\""]


def job(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.Popen:
    """jobs/round.py in a fresh process group (so a test can SIGKILL it with its local Ray)."""
    return subprocess.Popen([sys.executable, str(REPO / "jobs" / "round.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=cwd, start_new_session=True,
                            env={**os.environ, **(env or {})})


def run_job(*args: str, env: dict[str, str] | None = None, timeout: float = 400,
            cwd: Path = REPO) -> tuple[int, str]:
    proc = job(*args, env=env, cwd=cwd)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def run_until_killed(args: list[str], point: str | None = None, fire: Callable[[str, int], bool] | None = None,
                     env: dict[str, str] | None = None, timeout: float = 400) -> str:
    """Run a round that must die by SIGKILL, with its local Ray and no clean-up; return its output.

    Args:
        point: a failpoint (``raysal.faults``) at which the round kills itself.
        fire: polled with the output so far and the round's process group (also its session);
            when it returns True the test kills that group (for faults whose evidence is outside the driver: files that
            Ray workers wrote, a line that a training worker logged). It may also kill one worker
            of the group itself and return False, to let the round go on.
    """
    from raysal.faults import KILL_AT_ENV

    proc = job(*args, env={**(env or {}), **({KILL_AT_ENV: point} if point else {})})
    seen: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            seen.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if fire is not None and fire("".join(seen), proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)  # no clean-up: the lease and partial files stay
            break
        assert time.monotonic() < deadline, "".join(seen)[-3000:]
        time.sleep(0.02)
    proc.wait(timeout=60)
    reader.join(timeout=60)
    out = "".join(seen)
    assert proc.returncode == -signal.SIGKILL, out[-3000:]
    if point:
        assert f"raysal fault: killed at {point}" in out, out[-3000:]
    return out


class Running:
    """A round running in the background (``job``), its output collected as it comes."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = job(*args, env=env)
        self.pid = self.proc.pid
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._ended = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for text in self.proc.stdout:
            with self._changed:
                self._lines.append(text)
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    @property
    def out(self) -> str:
        with self._changed:
            return "".join(self._lines)

    def wait_for(self, line: str, timeout: float = 400) -> str:
        """Wait until the output has ``line``; fails (with the output) if the round ends or the time
        runs out first. Returns the output so far."""
        with self._changed:
            self._changed.wait_for(lambda: self._ended or any(line in text for text in self._lines), timeout)
        out = self.out
        assert line in out, f"no {line!r} in the round's output:\n{out[-3000:]}"
        return out

    def finish(self, timeout: float = 400) -> int:
        """Its exit code, once it ends by itself within ``timeout`` (else it is killed, failing)."""
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self.kill()
        self._reader.join(timeout=60)
        return self.proc.returncode

    def kill(self) -> None:
        """End it and its local Ray, if it still runs (or is stopped)."""
        if self.proc.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=60)


def run_until_signalled(args: list[str], line: str, signum: int, env: dict[str, str] | None = None,
                        timeout: float = 400, before: Callable[[str], None] | None = None) -> str:
    """Run a round, send its driver ``signum`` (as Ctrl-C or ``ray job stop`` would) once its
    output has ``line``, and return the output; the driver must exit with 128 + signum within 60 s.
    ``before``: called with the output so far just before the signal (to check what it interrupts)."""
    running = Running(*args, env=env)
    try:
        out = running.wait_for(line, timeout)
        if before is not None:
            before(out)
        sent = time.monotonic()
        os.kill(running.pid, signum)
        code = running.finish(timeout=60)  # a driver that does not stop fails here
        print(f"signal {signum}: the driver exited {time.monotonic() - sent:.1f} s after it")  # for the notes
    finally:
        running.kill()
    assert code == 128 + signum, running.out[-3000:]
    return running.out


def kill_processes(session: int, title: str) -> list[int]:
    """SIGKILL the processes of session ``session`` whose title (Ray sets it) contains ``title``.

    A round's Ray workers are in its session (``job`` starts one) but each in a process group
    of its own.
    """
    import psutil

    killed = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if os.getsid(proc.pid) == session and title in " ".join(proc.info["cmdline"] or []):
                proc.kill()
                killed.append(proc.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return killed


def copy_state(source: Path, target: Path, keep_rounds: bool) -> Path:
    shutil.copytree(source, target)
    if not keep_rounds:  # only the run identity and the round-0 model remain
        for name in ("rounds", "history.json", "learning_curve.png", "lease"):
            path = target / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    return target


def snapshot(state: Path, ignore: tuple[str, ...] = ("train",)) -> dict[str, str]:
    """Every file of the state and a hash of it, but those under the folders ``ignore``."""
    return {str(p.relative_to(state)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(state.rglob("*")) if p.is_file() and not set(ignore) & set(p.relative_to(state).parts)}


def round_file(state: Path, number: int, name: str) -> Path:
    """Round ``number``'s file ``name`` (``selection.parquet``, ``scores``, ...) where raysal reads
    it: in the folder of the lease generation that committed its stage."""
    from raysal.run.state import RunState

    run = RunState(str(state))
    return Path(run.uri(run.files(number).file(name)))


def written_in_round(state: Path, number: int, name: str) -> bool:
    """Whether any generation of round ``number`` wrote ``name``, committed or not."""
    return any((state / "rounds" / f"{number:04d}").glob(f"g*/{name}"))
