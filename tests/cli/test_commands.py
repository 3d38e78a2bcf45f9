"""The ``raysal`` command: one parser with a subcommand per job, each with its options' defaults
and its exit codes in its help; the scripts in jobs/ run the same code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from raysal import cli
from raysal.cli import bench
from raysal.errors import EXIT_CODES

REPO = Path(__file__).resolve().parents[2]
RAYSAL = str(Path(sys.executable).parent / "raysal")  # the console script, installed with the project
SUBCOMMANDS = ["round", "status", "report", "prepare", "pack", "labelstudio", "simulate", "bench"]

pytestmark = pytest.mark.timeout(300)


def raysal(*args: str, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([RAYSAL, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def test_raysal_help_lists_every_subcommand_and_the_exit_codes():
    listed = raysal("--help")
    assert listed.returncode == 0, listed.stderr
    commands = listed.stdout.split("positional arguments:")[1].split("options:")[0]
    named = [line.split()[0] for line in commands.splitlines() if line.startswith("    ") and line[4] != " "]
    assert named == SUBCOMMANDS
    assert all(f"  {e.code}  {e.meaning.split()[0]}" in listed.stdout for e in EXIT_CODES)


def test_an_unknown_subcommand_exits_2_with_the_usage():
    wrong = raysal("rounds")
    assert wrong.returncode == 2
    assert "usage: raysal" in wrong.stderr and "invalid choice: 'rounds'" in wrong.stderr
    assert cli.main(["rounds"]) == 2 and cli.main([]) == 2


@pytest.mark.parametrize(("command", "default"), [
    ("round", "(default: demo)"), ("status", "(default: demo)"), ("prepare", "(default: 0)"),
    ("pack", "(default 10,000)"), ("simulate", "(default: 5)"), ("labelstudio", "push"), ("bench", "ARGS")])
def test_each_subcommand_help_shows_its_defaults_and_exit_codes(command, default):
    helped = raysal(command, "--help")
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith(f"usage: raysal {command}")
    assert default in " ".join(helped.stdout.split()) and "exit codes:\n  0  " in helped.stdout


def test_the_round_help_says_what_each_exit_code_means():
    helped = raysal("round", "--help").stdout
    assert "  5  the round is waiting for human labels" in helped
    assert "  4  another round holds the run's lease" in helped


def test_the_jobs_scripts_are_the_same_commands():
    for script, command in (("round", "round"), ("simulate", "simulate"), ("prepare", "prepare")):
        job = subprocess.run([sys.executable, f"jobs/{script}.py", "--help"], capture_output=True, text=True,
                             timeout=120, cwd=REPO)
        mine = raysal(command, "--help")
        assert job.returncode == 0, job.stderr
        assert job.stdout.startswith(f"usage: jobs/{script}.py")
        assert job.stdout.split("\n\n", 1)[1] == mine.stdout.split("\n\n", 1)[1]  # all but the usage lines


def test_raysal_bench_runs_from_the_checkout_and_refuses_elsewhere(tmp_path):
    helped = raysal("bench", "--", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "--only {scoring,decode,topk,memory,round,scale,trainset,rescoring,htmlreport}" in helped.stdout
    assert bench.checkout_root(REPO / "jobs") == REPO
    elsewhere = subprocess.run([sys.executable, "-c", "import sys; from raysal.cli import bench; "
                                "bench.checkout_root = lambda start=None: None; sys.exit(bench.main(['--quick']))"],
                               capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert elsewhere.returncode == 2 and "benchmarks ship with raysal's source" in elsewhere.stderr
