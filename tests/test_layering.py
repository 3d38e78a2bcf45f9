"""The pure modules stay pure: importing them pulls in neither Ray nor TensorFlow.

Each check runs in a fresh interpreter, because this test process may already have imported
either framework through another test.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("ray", "tensorflow")
PURE_MODULES = ["raysal.selection.criteria", "raysal.hashing", "raysal.selection.diversity", "raysal.model.embeddings", "raysal.simulation", "raysal.labelling.labelstudio", "raysal.selection.topk", "raysal.config", "raysal.data.images", "raysal.report.metrics", "raysal.run.schedule",
                "raysal.labelling.labels", "raysal.data.prepare", "raysal.data.pack", "raysal.report.console",
                "raysal", "raysal.api", "raysal.cli"]  # the API and the command load Ray when they run, not on import

_PROBE = """
import importlib, sys
importlib.import_module(sys.argv[1])
print(sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in sys.argv[2:]}))
"""


def imported_top_level(module: str, watched: tuple[str, ...]) -> list[str]:
    """Which of ``watched`` a fresh interpreter has in sys.modules after importing ``module``."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, module, *watched], capture_output=True, text=True, timeout=120,
        check=False, cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_neither_ray_nor_tensorflow(module: str) -> None:
    assert imported_top_level(module, FORBIDDEN) == []


@pytest.mark.parametrize(
    ("module", "watched", "expected"),
    [
        ("email.message", ("email", "csv"), ["email"]),  # a submodule counts as its package
        ("csv", ("email", "csv"), ["csv"]),
        ("raysal.run.cluster", FORBIDDEN, ["ray"]),  # the edge module whose job is to start Ray
    ],
)
def test_probe_sees_what_a_module_imports(module: str, watched: tuple[str, ...], expected: list[str]) -> None:
    """The probe itself can fail: it reports a package that the import really pulled in."""
    assert imported_top_level(module, watched) == expected
