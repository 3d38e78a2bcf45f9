"""raysal.report.console and raysal.report.progress: what reaches the console, what goes to the log.

The capture is tested in a child interpreter, where pytest's own capture of file descriptors
is not in the way; the progress board with the session's real Ray.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from raysal.report.progress import progress_line

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import logging, os, subprocess, sys
    from raysal.report import console
    verbose = sys.argv[1] == "verbose"
    with console.captured_output(verbose) as (out, log_path):
        logging.getLogger("raysal.run.rounds").info("stage score: started")
        print("a print from Python")
        os.write(2, b"E0000 a C++ line on fd 2\\n")
        subprocess.run([sys.executable, "-c", "print('a child process line')"], check=True)
        logging.getLogger("ray.data").warning("a Ray Data line")
        logging.getLogger("raysal.run.rounds").warning("a warning that matters")
    print("summary after the capture")
    print("LOG", log_path)
""")


def run_child(mode: str) -> tuple[list[str], str]:
    result = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=120,
                            cwd=REPO, check=True)
    console = result.stdout.splitlines() + result.stderr.splitlines()
    log_path = next(line.split(" ", 1)[1] for line in console if line.startswith("LOG "))
    log = Path(log_path).read_text()
    Path(log_path).unlink()
    return [line for line in console if not line.startswith("LOG ")], log


def test_console_shows_raysal_lines_and_the_log_gets_everything():
    console, log = run_child("quiet")
    assert [line.split(" ", 1)[1] for line in console[:-1]] == ["raysal stage score: started",
                                                               "raysal a warning that matters"]
    assert console[-1] == "summary after the capture"
    for line in ("a print from Python", "E0000 a C++ line on fd 2", "a child process line",
                 "stage score: started", "a warning that matters"):
        assert line in log, line
    assert log.count("stage score: started") == 1  # raysal's lines reach the log once


def test_verbose_console_shows_everything_once():
    console, log = run_child("verbose")
    text = "\n".join(console)
    for line in ("a print from Python", "E0000 a C++ line on fd 2", "a child process line",
                 "stage score: started", "a warning that matters", "summary after the capture"):
        assert text.count(line) == 1, (line, text)
    assert log.count("stage score: started") == 1 and "a child process line" in log


@pytest.mark.parametrize(("done", "total", "elapsed", "expected"), [
    (400, 800, 10.0, "scoring: 400/800 images (50%), 40 images/s, 10 s left"),
    (800, 800, 10.0, "scoring: 800/800 images (100%), 80 images/s"),
    (100, 7300, 10.0, "scoring: 100/7300 images (1%), 10 images/s, 12 min 00 s left"),
    (50, None, 5.0, "scoring: 50 images, 10 images/s"),
])
def test_progress_line(done, total, elapsed, expected):
    assert progress_line("scoring", done, total, elapsed) == expected


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.mark.timeout(120)
def test_workers_report_to_the_board_and_the_driver_logs_it(ray_session):
    from raysal.report import progress

    ray = ray_session

    @ray.remote(num_cpus=0.5)
    def work(board, part: int) -> None:
        for _ in range(5):
            board.add.remote(10)
            time.sleep(0.2)
        board.say.remote(f"part {part} done")

    lines = Lines()
    logger = logging.getLogger("raysal.report.progress")
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)  # as the CLI's console sets it
    board = progress.new_board()
    try:
        with progress.watch(board, "scoring", total=100, interval_s=0.5) as handle:
            ray.get([work.remote(handle, p) for p in range(2)])
        with progress.watch(board, "testing", total=10, interval_s=0.5) as handle:  # the board is reused
            ray.get(handle.add.remote(10))
        assert ray.get(board.drain.remote())[0] == 10  # counted from zero again
    finally:
        logger.removeHandler(lines)
        logger.setLevel(logging.NOTSET)
        ray.kill(board)
    assert sorted(line for line in lines.lines if line.startswith("part")) == ["part 0 done", "part 1 done"]
    counts = [line for line in lines.lines if line.startswith("scoring: ")]
    assert counts, lines.lines  # at least one progress line while the 2 s of work ran
    assert all(re.match(r"scoring: \d+/100 images \(\d+%\), \d+ images/s", line) for line in counts), counts
    with progress.watch(None, "nothing") as handle:
        assert handle is None



RAISES = textwrap.dedent("""
    import logging, os
    from raysal.report import console
    logger = logging.getLogger("raysal")
    before = (list(logger.handlers), logger.propagate, logger.level)
    for verbose in (False, True):
        try:
            with console.captured_output(verbose) as (out, path):
                os.write(1, f"captured {verbose}\\n".encode())
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        restored = (list(logger.handlers), logger.propagate, logger.level) == before
        print("after", verbose, restored, f"captured {verbose}" in open(path).read(), flush=True)
        os.remove(path)
""")


def test_the_capture_restores_the_console_and_the_logger_when_the_body_raises():
    result = subprocess.run([sys.executable, "-c", RAISES], capture_output=True, text=True, timeout=120, cwd=REPO,
                            check=True)
    lines = result.stdout.splitlines() + result.stderr.splitlines()
    assert "after False True True" in lines and "after True True True" in lines, lines
    assert "captured False" not in lines and "captured True" in lines  # the quiet capture kept it in the log
