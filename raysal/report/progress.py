"""Progress of work that runs in Ray workers, shown on the driver's console.

Workers report to a ``Board`` actor (images scored, a training epoch's line), without waiting
for an answer; a thread on the driver polls it and logs what is new: lines at once, counts at
most every ``interval_s`` seconds, as images done of total, images/s and time left. Works the
same on a cluster, where the workers' own output never reaches the driver's console.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

import ray

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 5.0  # at most one progress line per this many seconds, unless RAYSAL_PROGRESS_S says
PROGRESS_ENV = "RAYSAL_PROGRESS_S"
POLL_S = 0.5


@ray.remote(num_cpus=0)
class Board:
    """Counts and lines reported by workers, drained by the driver."""

    def __init__(self) -> None:
        self.done = 0
        self.lines: list[str] = []

    def reset(self) -> None:
        self.done = 0
        self.lines = []

    def add(self, count: int) -> None:
        self.done += count

    def say(self, line: str) -> None:
        self.lines.append(line)

    def drain(self) -> tuple[int, list[str]]:
        lines, self.lines = self.lines, []
        return self.done, lines


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def progress_line(task: str, done: int, total: int | None, elapsed_s: float, rate: float | None = None) -> str:
    """``scoring: 400/897 images (45%), 38 images/s, 13 s left``; ``rate`` defaults to done / elapsed."""
    if rate is None:
        rate = done / elapsed_s if elapsed_s > 0 else 0.0
    if not total:
        return f"{task}: {done} images, {rate:.0f} images/s"
    left = f", {_duration((total - done) / rate)} left" if 0 < rate and done < total else ""
    return f"{task}: {done}/{total} images ({100 * done / total:.0f}%), {rate:.0f} images/s{left}"


class Watch:
    """The driver's side of a ``Board``: a polling thread that logs what workers report."""

    def __init__(self, board: Any, task: str, total: int | None, interval_s: float) -> None:
        self.board, self.task, self.total, self.interval_s = board, task, total, interval_s
        self.started = time.monotonic()
        self.done = 0
        self._first: tuple[float, int] | None = None  # (when, count) of the first count seen
        self._last_count = 0
        self._last_line = self.started
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"raysal-progress-{task}", daemon=True)

    def _poll(self) -> None:
        try:
            self.done, lines = ray.get(self.board.drain.remote(), timeout=30)
        except Exception:  # noqa: BLE001  (progress is a courtesy: a slow or lost board never fails the work)
            return
        for line in lines:
            log.info("%s", line)

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            self._poll()
            now = time.monotonic()
            if self.done and self._first is None:
                self._first = (now, self.done)
            if self.done and now - self._last_line >= self.interval_s:
                # The rate since the first batch: the actors' start-up is not work that the rest will repeat.
                since, base = self._first or (self.started, 0)
                rate = (self.done - base) / (now - since) if self.done > base and now > since else None
                self._log_count(now, rate)

    def _log_count(self, now: float, rate: float | None) -> None:
        log.info("%s", progress_line(self.task, self.done, self.total, now - self.started, rate))
        self._last_line, self._last_count = now, self.done

    def __enter__(self) -> "Watch":
        try:
            ray.get(self.board.reset.remote(), timeout=60)  # one board serves a round's tasks in turn
        except Exception:  # noqa: BLE001  (no progress then, but the work goes on)
            return self
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._thread.is_alive():
            return
        self._stop.set()
        self._thread.join(timeout=60)
        self._poll()  # lines reported after the last poll
        if exc[0] is None and self.done and self.done != self._last_count and self.total:
            self._log_count(time.monotonic(), None)  # the final count, once


def new_board() -> Any:
    return Board.remote()


@contextmanager
def watch(board: Any | None, task: str, total: int | None = None,
          interval_s: float | None = None) -> Iterator[Any]:
    """Log ``board``'s lines and progress while the body runs; yields the board for workers.

    With ``board`` None (a caller that wants no progress) it does nothing and yields None.
    """
    if board is None:
        yield None
        return
    if interval_s is None:
        interval_s = float(os.environ.get(PROGRESS_ENV, PROGRESS_INTERVAL_S))
    with Watch(board, task, total, interval_s):
        yield board
