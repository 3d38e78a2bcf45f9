"""What a round shows on the console, and where everything else goes.

A round's console shows raysal's own lines: each stage's start and end, progress while scoring,
one line per training epoch, warnings that matter, and the summary. Everything else that the
process and its Ray workers write (Ray Data's plans and progress bars, TensorFlow's C++ logs,
CUDA probes on CPU machines, worker-prefixed lines that Ray forwards) goes to a log file, and
``verbose`` shows it on the console too.

The capture works on file descriptors 1 and 2, so it catches what C++ code writes as well as
Python's ``print``. raysal's lines go to the console through a stream on a copy of the
original descriptor, and to the log. Pure stdlib.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from typing import IO, Iterator

LOGGER = "raysal"
FORMAT = "%(asctime)s raysal %(message)s"
DATEFMT = "%H:%M:%S"


class _ConsoleHandler(logging.Handler):
    """raysal's records: to the console stream and to the log (fd 2), each once."""

    def __init__(self, console: IO[str] | None) -> None:
        super().__init__()
        self.console = console
        self.setFormatter(logging.Formatter(FORMAT, DATEFMT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            if self.console is not None:
                self.console.write(line)
                self.console.flush()
            sys.stderr.write(line)
            sys.stderr.flush()
        except Exception:  # noqa: BLE001  (logging must never take a round down)
            self.handleError(record)


def use_console(console: IO[str] | None) -> None:
    """Send the ``raysal`` logger's INFO lines to ``console`` and to stderr (None: stderr only)."""
    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        if isinstance(handler, _ConsoleHandler):
            logger.removeHandler(handler)
    logger.addHandler(_ConsoleHandler(console))
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the root logger's handlers (if any) would print the line again


def log_file_name() -> str:
    """A name no other round's log has: UTC time, host, pid."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{stamp}-{socket.gethostname()}-{os.getpid()}.log"


def keep_log(log_path: str, target: str) -> str:
    """Move the log at ``log_path`` to ``target`` (a path or URI; its folder is made), written
    whole; return where it is now (``log_path`` still, with a warning, if it cannot be written)."""
    from raysal import storage

    try:
        fs, inner = storage.resolve(target)
        fs.create_dir(inner.rsplit("/", 1)[0] if storage.is_uri(target) else os.path.dirname(inner), recursive=True)
        with open(log_path, "rb") as f:
            storage.write_whole(fs, inner, f.read())
    except OSError as exc:
        logging.getLogger(LOGGER).warning("could not copy the log to %s (%s); it stays at %s", target, exc, log_path)
        return log_path
    os.remove(log_path)
    return target


class _Tee(threading.Thread):
    """Copies a pipe to the log file and to the console (verbose mode).

    It owns its descriptors and closes them when the pipe ends. A console that went away (a
    closed ``| head``) or a full disk never stops it draining the pipe: a pipe nobody reads
    would block every write of the process.
    """

    def __init__(self, read_fd: int, log_fd: int, console_fd: int) -> None:
        super().__init__(name="raysal-log-tee", daemon=True)
        self.read_fd, self.log_fd, self.console_fd = read_fd, log_fd, console_fd

    def run(self) -> None:
        targets = [self.log_fd, self.console_fd]
        try:
            while chunk := os.read(self.read_fd, 65536):
                for target in list(targets):
                    try:
                        os.write(target, chunk)
                    except OSError:
                        targets.remove(target)  # stop writing there, keep draining
        finally:
            for fd in (self.read_fd, self.log_fd, self.console_fd):
                os.close(fd)


@contextmanager
def captured_output(verbose: bool = False) -> Iterator[tuple[IO[str], str]]:
    """Redirect this process's stdout and stderr (and its children's) to a new log file.

    Yields the console stream and the log file's path (a local temp file; the caller copies it
    where it belongs). With ``verbose`` the console also shows everything the log gets.
    Descriptors and the ``raysal`` logger are restored on exit, whatever ends the block.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    logger = logging.getLogger(LOGGER)
    before = (list(logger.handlers), logger.propagate, logger.level)
    fd, log_path = tempfile.mkstemp(prefix="raysal-", suffix=".log")
    saved = {1: os.dup(1), 2: os.dup(2)}
    tee: _Tee | None = None
    write_end = fd
    if verbose:
        read_end, write_end = os.pipe()
        tee = _Tee(read_end, os.dup(fd), os.dup(saved[2]))
        tee.start()
    console = open(os.dup(saved[1]), "w", buffering=1, encoding="utf-8", errors="replace")
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    use_console(None if verbose else console)  # verbose: raysal's lines reach the console through the tee
    try:
        yield console, log_path
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[1], 1)
        os.dup2(saved[2], 2)
        if tee is not None:
            os.close(write_end)
            tee.join(timeout=5)  # a child that still holds the pipe keeps it open: don't wait for it
        os.close(fd)
        for copy in saved.values():
            os.close(copy)
        logger.handlers[:], logger.propagate = before[0], before[1]
        logger.setLevel(before[2])
        console.close()
