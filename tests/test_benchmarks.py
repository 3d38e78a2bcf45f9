"""benchmarks/ (outside the package) and jobs/bench.py: one module per group, a runner that runs
without Ray or TensorFlow until a group needs them, and the report's table. No timed benchmark runs
here; one memory figure does, which is the same from run to run."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from types import ModuleType

from _jobs import REPO

NOT_GROUPS = {"__init__", "common", "report"}  # the registry and the runner, shared helpers, the output


def python(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter at the repository root, where ``benchmarks`` is importable."""
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def load(name: str) -> ModuleType:
    """One module of benchmarks/ that imports nothing else from it, by path."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_group_is_the_run_function_of_the_module_named_after_it() -> None:
    out = python("import benchmarks, json; print(json.dumps({name: [f.__module__, f.__name__] "
                 "for name, f in benchmarks.GROUPS.items()}))")
    assert out.returncode == 0, out.stderr
    groups = json.loads(out.stdout)
    assert groups == {name: [f"benchmarks.{name}", "run"] for name in groups}
    assert set(groups) == {path.stem for path in (REPO / "benchmarks").glob("*.py")} - NOT_GROUPS


def test_the_runner_imports_neither_ray_nor_tensorflow() -> None:
    out = python("import sys, benchmarks; print([m for m in ('ray', 'tensorflow', 'tf_keras') if m in sys.modules])")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_bench_job_lists_its_groups_and_refuses_an_unknown_one() -> None:
    job = [sys.executable, str(REPO / "jobs" / "bench.py")]
    helped = subprocess.run([*job, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0, helped.stderr
    assert "{scoring,decode,topk,memory,round,scale,trainset,rescoring,htmlreport}" in helped.stdout
    refused = subprocess.run([*job, "--only", "sorting"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert "invalid choice: 'sorting'" in refused.stderr


def test_median_reported_takes_the_seconds_a_pass_reports_not_the_call_s_wall_time() -> None:
    reported = iter([5.0, 1.0, 3.0])
    assert load("common").median_reported(lambda: next(reported), 3) == 3.0


def test_markdown_table() -> None:
    report = {"machine": "x86_64, 2 CPUs, 24 GiB", "date": "2026-12-01T00:00:00+00:00", "repeats": 1, "quick": True,
              "results": [{"name": "top-k n=10 k=2: raysal vs numpy in memory", "unit": "s", "raysal": 0.5,
                           "baseline": 0.25, "ratio": 0.5, "notes": "exact=True"}]}
    assert load("report").markdown_table(report).splitlines() == [
        "Machine: x86_64, 2 CPUs, 24 GiB; 2026-12-01T00:00:00+00:00; repeats 1 (quick)", "",
        "| benchmark | unit | raysal | baseline | ratio (>1: raysal faster) | notes |",
        "|---|---|---|---|---|---|",
        "| top-k n=10 k=2: raysal vs numpy in memory | s | 0.5 | 0.25 | 0.5 | exact=True |"]


def test_the_decode_groups_16_bit_memory_rows_are_measured() -> None:
    """The decode group's memory rows, on a 3000x3000 16-bit PNG (17 MiB): the peak of raysal's
    band-by-band conversion against the image's own size, and against the float64 way it replaced.
    The figures are the benchmark's (docs/performance.md); here, that the rows are made and whole."""
    out = python("import json; from benchmarks.decode import grey16_memory_rows; "
                 "print(json.dumps(grey16_memory_rows(3000)))")
    assert out.returncode == 0, out.stderr
    own_size, against_float64 = json.loads(out.stdout)
    assert own_size["baseline"] == 17.2 and own_size["raysal"] > 0 and against_float64["baseline"] > 0, own_size
