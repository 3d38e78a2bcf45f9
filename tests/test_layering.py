"""The house keeps its shape: imports point down the floors, the pure packages stay pure, and no
module or class outgrows one job.

The floors, lowest first (a unit is a subpackage of ``raysal`` or a loose module): every import
from one unit to another points to a lower floor, lazy imports inside functions included. The
purity check runs in a fresh interpreter, because this test process may already have imported
Ray or TensorFlow through another test.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "raysal"
FORBIDDEN = ("ray", "tensorflow")

FLOORS: list[set[str]] = [
    {"errors", "presets"},  # what every module may raise; the preset configs (TOML files)
    {"config", "storage", "hashing", "faults"},  # the ground: every floor above uses them
    {"report"},  # console, progress, plots, metrics
    {"selection"},  # criteria, strategies, top-k, diversity, stopping: pure numpy
    {"model", "labelling"},  # Keras models and training; label files and Label Studio's formats
    {"data"},  # sources, listing, decoding, packing, preparing a run
    {"run"},  # the state, the lease, the stages on Ray, the round
    {"api"},  # raysal from Python
    {"simulation"},  # simulated learning curves, through the API's selection
    {"cli"},  # the raysal command
    {"__init__"},  # the package face: the API, lazily
]
FLOOR = {unit: level for level, units in enumerate(FLOORS) for unit in units}
# Packages whose every module imports neither Ray nor TensorFlow, and single modules that do not either.
PURE_PACKAGES = ("data", "selection", "labelling")
PURE_MODULES = ["raysal", "raysal.api", "raysal.cli", "raysal.config", "raysal.errors", "raysal.hashing",
                "raysal.simulation", "raysal.report.console", "raysal.report.metrics", "raysal.model.embeddings",
                "raysal.run.schedule", "raysal.run.lease", "raysal.run.state"]
MAX_MODULE_LINES = 450
MAX_CLASS_LINES = 160
MAX_LOOSE_MODULES = 8


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    """``raysal.run.state`` -> ``run``; ``raysal.config`` -> ``config``; ``raysal`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def raysal_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every raysal module ``path`` imports, at the top or inside a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "raysal":
            if node.module == "raysal":  # from raysal import api: the names are modules
                found += [(node.lineno, f"raysal.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "raysal"]
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_unit_has_a_floor() -> None:
    units = {unit_of(module_name(p)) for p in MODULES}
    assert units - set(FLOOR) == set(), "place the new package or module on a floor in FLOORS"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_point_down(path: Path) -> None:
    me = unit_of(module_name(path))
    upward = [f"line {line}: {target} ({unit_of(target)}, floor {FLOOR.get(unit_of(target))})"
              for line, target in raysal_imports(path)
              if unit_of(target) != me and FLOOR.get(unit_of(target), 99) >= FLOOR[me]]
    assert upward == [], f"{module_name(path)} (floor {FLOOR[me]}) imports up or sideways: {upward}"


def test_the_floor_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The check itself can fail: a selection module importing the run state is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from raysal.run.state import RunState\n    from raysal import storage, api\n")
    targets = [unit_of(t) for _, t in raysal_imports(bad)]
    assert targets == ["run", "storage", "api"]
    assert [t for t in targets if FLOOR[t] >= FLOOR["selection"]] == ["run", "api"]


_PROBE = """
import importlib, sys
watched = sys.argv[1].split(",")
for name in sys.argv[2:]:
    importlib.import_module(name)
    pulled = sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in watched})
    if pulled:
        print(repr((name, pulled)))
        break
else:
    print(repr((None, [])))
"""


def first_impure(modules: list[str], watched: tuple[str, ...]) -> tuple[str | None, list[str]]:
    """Import ``modules`` one after another in a fresh interpreter: the first that pulls in one
    of ``watched`` (each import before it pulled none), and what it pulled; (None, []) if none."""
    result = subprocess.run([sys.executable, "-c", _PROBE, ",".join(watched), *modules], capture_output=True,
                            text=True, timeout=240, check=False, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(300)
def test_pure_modules_import_neither_ray_nor_tensorflow() -> None:
    pure = [module_name(p) for package in PURE_PACKAGES for p in sorted((PACKAGE / package).rglob("*.py"))]
    assert first_impure(pure + PURE_MODULES, FORBIDDEN) == (None, [])


@pytest.mark.parametrize(
    ("modules", "watched", "expected"),
    [
        (["csv", "email.message"], ("email", "csv"), ("csv", ["csv"])),  # the first that pulls one is named
        (["email.message"], ("csv",), (None, [])),
        (["raysal.config", "raysal.run.cluster"], FORBIDDEN, ("raysal.run.cluster", ["ray"])),  # starts Ray
    ],
)
@pytest.mark.timeout(300)
def test_probe_sees_what_a_module_imports(modules: list[str], watched: tuple[str, ...],
                                          expected: tuple[str | None, list[str]]) -> None:
    """The probe itself can fail: it names a module that really pulled a package in."""
    assert first_impure(modules, watched) == expected


def test_no_module_outgrows_one_job() -> None:
    files = [*PACKAGE.rglob("*.py"), *(REPO_ROOT / "jobs").glob("*.py"), *(REPO_ROOT / "benchmarks").rglob("*.py")]
    lines = {str(p.relative_to(REPO_ROOT)): len(p.read_text().splitlines()) for p in files}
    long = {name: n for name, n in lines.items() if n > MAX_MODULE_LINES}
    assert long == {}, f"over {MAX_MODULE_LINES} lines: split them by job"


def test_no_class_outgrows_one_job() -> None:
    long = {}
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                long[f"{module_name(path)}.{node.name}"] = node.end_lineno - node.lineno + 1
    assert long == {}


def test_the_package_is_rooms_not_a_hall() -> None:
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert len(loose) <= MAX_LOOSE_MODULES, loose
    assert len(packages) >= 4, packages
