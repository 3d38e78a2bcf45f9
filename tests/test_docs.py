"""The docs: the site builds with --strict, its generated reference pages say what the code says, and
the README stays short with every relative link pointing to a file that exists."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import typing
from html.parser import HTMLParser
from pathlib import Path

import pytest

from raysal import errors
from raysal.config import Config

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT_S = 240  # a build takes a few seconds; a loaded CI machine gets room
README_MAX_LINES = 300
INTERNAL_FIELDS = {"where"}  # set by the config loader for its messages; not a TOML key (config.loading.build)


def build(project: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` of the project in ``project`` into ``site``."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=project, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    site = tmp_path_factory.mktemp("site")
    return build(REPO_ROOT, site), site


class Tables(HTMLParser):
    """Every table of a page: the heading above it, its header cells and its rows' cells, as text."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict[str, typing.Any]] = []
        self.heading, self._in_heading, self._cell, self._row = "", False, None, None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("h1", "h2", "h3"):
            self.heading, self._in_heading = "", True
        elif tag == "table":
            self.tables.append({"heading": self.heading, "header": [], "rows": []})
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h1", "h2", "h3"):
            self._in_heading = False
        elif tag in ("td", "th") and self._row is not None:
            self._row.append(" ".join(self._cell.split()))
            self._cell = None
        elif tag == "tr" and self.tables:
            table = self.tables[-1]
            if not table["header"]:
                table["header"] = self._row
            else:
                table["rows"].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._in_heading:
            self.heading += data
        if self._cell is not None:
            self._cell += data


def page_tables(site: Path, page: str) -> list[dict[str, typing.Any]]:
    parser = Tables()
    parser.feed((site / page).read_text())
    return parser.tables


def config_tables_expected() -> dict[str, list[str]]:
    """TOML table path ("" for the top level) -> the field names its table must list, walked from
    ``Config`` through every field that is itself a dataclass."""
    found: dict[str, list[str]] = {}

    def walk(cls: type, path: str) -> None:
        found[path] = [f.name for f in dataclasses.fields(cls) if f.name not in INTERNAL_FIELDS]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{path}.{f.name}".lstrip("."))

    walk(Config, "")
    return found


def load_hooks() -> typing.Any:
    spec = importlib.util.spec_from_file_location("raysal_docs_hooks", REPO_ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the build -------------------------------------------------------------------------------------


@pytest.mark.timeout(BUILD_TIMEOUT_S + 60)
def test_the_site_builds_strictly(built) -> None:
    result, site = built
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (site / "index.html").is_file() and (site / "reference" / "exit-codes.html").is_file()
    assert not (site / "hooks.py").exists()  # the hook builds the site; it is not part of it


@pytest.mark.timeout(2 * BUILD_TIMEOUT_S + 60)
@pytest.mark.parametrize(("link", "named"), [("[a page](missing.md)", "missing.md"),
                                             ("[an anchor](index.md#no-such-heading)", "no-such-heading")])
def test_a_broken_link_fails_the_build(tmp_path: Path, link: str, named: str) -> None:
    """The strict build can fail: the project's own mkdocs.yml refuses a page linking nowhere."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO_ROOT / "mkdocs.yml", project / "mkdocs.yml")
    shutil.copytree(REPO_ROOT / "docs", project / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("raysal", "jobs", "benchmarks"):  # what the hook reads, beside docs/ as in the checkout
        (project / name).symlink_to(REPO_ROOT / name)
    (project / "docs" / "development.md").write_text(
        (REPO_ROOT / "docs" / "development.md").read_text() + f"\nSee {link}.\n")
    result = build(project, tmp_path / "site")
    assert result.returncode != 0
    assert named in result.stdout + result.stderr


# --- the generated pages -------------------------------------------------------------------------------


@pytest.mark.timeout(BUILD_TIMEOUT_S + 60)
def test_the_exit_code_page_is_the_exit_code_table(built) -> None:
    _, site = built
    tables = page_tables(site, "reference/exit-codes.html")
    codes = next(t for t in tables if t["header"] == ["code", "name", "meaning", "what is left"])
    assert [(int(row[0]), row[1]) for row in codes["rows"]] == [(e.code, e.name) for e in errors.EXIT_CODES]
    assert [row[2:] for row in codes["rows"]] == [[" ".join(e.meaning.split()), " ".join(e.left.split())]
                                                  for e in errors.EXIT_CODES]
    classes = next(t for t in tables if t["header"][:2] == ["error", "exit code"])
    assert [(row[0], int(row[1].split()[0])) for row in classes["rows"]] == [
        (cls.__name__, cls.exit_code) for cls in errors.all_errors()]


@pytest.mark.timeout(BUILD_TIMEOUT_S + 60)
def test_the_config_reference_lists_every_field_of_every_table(built) -> None:
    _, site = built
    tables = page_tables(site, "reference/config.html")
    expected = config_tables_expected()
    assert {"", "data", "data.pool", "model", "train", "score", "select", "label"} <= set(expected)
    for path, names in expected.items():
        title = "The top level" if path == "" else f"[{path}]"
        matching = [t for t in tables if title in t["heading"] and t["header"][:1] == ["field"]]
        assert len(matching) == 1, f"one table for {title!r}, found {len(matching)}"
        rows = matching[0]["rows"]
        assert [row[0] for row in rows] == names, title
        assert all(row[3] for row in rows), f"{title}: a field without a description"


def test_a_field_without_a_comment_fails_the_generator(tmp_path: Path) -> None:
    """Comments above a field, at the end of its line and continued below it are each found; a field
    with none stops the build."""
    source = tmp_path / "documented_fixture.py"
    source.write_text(
        "from __future__ import annotations\n"
        "from dataclasses import dataclass, field\n\n\n"
        "@dataclass(frozen=True)\n"
        "class Inner:\n"
        "    # above, first line\n"
        "    # above, second line\n"
        "    a: int = 1\n"
        "    b: str = 'x'  # at the end\n"
        "    # and continued\n\n"
        "    c: float = 0.5  # its own\n"
        "    # the block above d, not c's\n"
        "    d: bool = False\n\n\n"
        "@dataclass(frozen=True)\n"
        "class Outer:\n"
        "    inner: Inner = field(default_factory=Inner)\n"
        "    name: str = 'n'  # a name\n"
        "    bare: int = 0\n")
    hooks = load_hooks()
    spec = importlib.util.spec_from_file_location("documented_fixture", source)
    documented = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = documented  # type hints and source lookups go through sys.modules
    try:
        spec.loader.exec_module(documented)
        assert hooks.field_comments(documented.Inner) == {
            "a": "above, first line above, second line", "b": "at the end and continued", "c": "its own",
            "d": "the block above d, not c's"}
        with pytest.raises(ValueError, match=r"Outer\.bare has no comment"):
            hooks.config_tables(documented.Outer)
    finally:
        del sys.modules[spec.name]


# --- the README -------------------------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)"  # [text](target), ![alt](target)
                  r"|^\s*\[[^\]]+\]:\s*(\S+)"  # [label]: target
                  r"|<(?:img|a)\s[^>]*?(?:src|href)=\"([^\"]+)\"", re.MULTILINE)


def relative_targets(markdown: str) -> list[str]:
    """The relative targets of a Markdown text's links and images, without their #fragment."""
    targets = [next(g for g in m.groups() if g) for m in LINK.finditer(markdown)]
    return [t.split("#")[0] for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_the_readme_is_short() -> None:
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines: move sections into docs/"


def test_every_relative_link_of_the_readme_exists() -> None:
    targets = relative_targets((REPO_ROOT / "README.md").read_text())
    assert "docs/simulation/small.png" in targets  # the learning curve, and proof that links are found
    missing = sorted({t for t in targets if not (REPO_ROOT / t).exists()})
    assert missing == []


def test_relative_targets_finds_links_images_and_references() -> None:
    text = ('[a](docs/a.md#x) ![b](b.png "t") [c](https://x.org/c) [d](#d)\n[e]: e.md\n'
            '<img src="f.svg" alt=""> [g](mailto:g@x.org)')
    assert relative_targets(text) == ["docs/a.md", "b.png", "e.md", "f.svg"]
