"""MkDocs hooks: the reference pages are generated from the code at every build, so they cannot drift.

- ``reference/exit-codes.md``: ``raysal.errors.EXIT_CODES`` and every class of ``raysal.errors.all_errors()``.
- ``reference/code-map.md``: every module under ``raysal/`` (and ``jobs/``, ``benchmarks/``), read with ``ast``;
  nothing is imported, so neither Ray nor TensorFlow loads.
- ``reference/config.md`` is written by hand; where it says ``<!-- config-fields -->`` the hook puts a table per
  TOML table: every field of every config dataclass, its type, its default (``dataclasses.fields``) and the comment
  beside it in ``raysal/config/schema.py`` (``ast`` + ``tokenize``). A leaf field without a comment fails the build.

The two whole pages are virtual files (``File.generated``): nothing generated is ever written into ``docs/``.
Only the stdlib, ``raysal.errors`` and ``raysal.config`` (both pure stdlib) are imported.
"""

from __future__ import annotations

import ast
import dataclasses
import html
import inspect
import io
import re
import sys
import tokenize
import typing
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # document the checkout's code, not whichever raysal is installed

EXIT_CODES_PAGE = "reference/exit-codes.md"
CODE_MAP_PAGE = "reference/code-map.md"
CONFIG_PAGE = "reference/config.md"
CONFIG_MARKER = "<!-- config-fields -->"
# Set by the loader for its error messages, never read from TOML (config._build refuses it as a key).
INTERNAL_FIELDS = {"where"}


CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def cell(text: str) -> str:
    """Text (a comment, a docstring) for one cell of a Markdown table, on one line: outside its code spans,
    what Markdown or HTML would read as markup is escaped (a pipe would split the cell); code spans are
    kept as they are (Python-Markdown's tables split no cell inside one)."""
    text, out, at = " ".join(str(text).split()), [], 0
    for span in CODE_SPAN.finditer(text):
        out += [_escape(text[at:span.start()]), span.group(0)]
        at = span.end()
    return "".join(out + [_escape(text[at:])])


def _escape(text: str) -> str:
    text = html.escape(text, quote=False)
    for char in "\\|*_[]":
        text = text.replace(char, "\\" + char)
    return text


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def paragraph(doc: str | None) -> str:
    """A docstring as one paragraph of Markdown (its ``code`` spans are Markdown already)."""
    return " ".join((doc or "").split())


# --- config fields ---------------------------------------------------------------------------------


def _comments(source: str) -> tuple[dict[int, str], dict[int, str]]:
    """(trailing comments by line, whole-line comments by line) of a Python source."""
    trailing, whole = {}, {}
    lines = source.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            line, col = tok.start
            text = tok.string.lstrip("#").strip()
            (whole if not lines[line - 1][:col].strip() else trailing)[line] = text
    return trailing, whole


def field_comments(cls: type) -> dict[str, str]:
    """Each field of dataclass ``cls`` with its comment in the source: the block of ``#`` lines right
    above the field, then the comment at the end of its line, continued on the ``#`` lines below it
    (when those are not the block above the next field)."""
    path = inspect.getsourcefile(cls)
    source = Path(path).read_text()
    trailing, whole = _comments(source)
    node = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
    fields = [s for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]

    above: dict[str, list[int]] = {}
    for stmt in fields:
        line, block = stmt.lineno - 1, []
        while line in whole:
            block.insert(0, line)
            line -= 1
        above[stmt.target.id] = block
    claimed = {line for block in above.values() for line in block}

    found = {}
    for stmt in fields:
        parts = [whole[line] for line in above[stmt.target.id]]
        ends = [trailing[line] for line in range(stmt.lineno, stmt.end_lineno + 1) if line in trailing]
        if ends:
            parts += ends
            line = stmt.end_lineno + 1
            while line in whole and line not in claimed:  # the end-of-line comment goes on below
                parts.append(whole[line])
                line += 1
        found[stmt.target.id] = " ".join(parts)
    return found


def toml_value(value: Any) -> str:
    """A default as it is written in TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def code(text: str) -> str:
    """A code span (Markdown escapes nothing inside it)."""
    return f"`{text}`"


def anchor(paths: list[str]) -> str:
    """The heading id of the table reached by ``paths``."""
    return "table-" + (paths[0].replace(".", "-") or "top-level")


def config_tables(root: type | None = None) -> list[tuple[list[str], type, list[list[str]]]]:
    """(TOML table paths, dataclass, rows) for every table of ``root`` (default ``raysal.config.Config``),
    in the order of its fields; a dataclass reached by several paths (the four sources) is one table.
    Raises when a leaf field has no comment: every field must say what it is for."""
    if root is None:
        from raysal.config import Config as root

    tables: dict[type, list[str]] = {}

    def walk(cls: type, path: str) -> None:
        tables.setdefault(cls, []).append(path)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{path}.{f.name}".lstrip("."))

    walk(root, "")
    result = []
    for cls, paths in tables.items():
        comments, hints, rows = field_comments(cls), typing.get_type_hints(cls), []
        for f in dataclasses.fields(cls):
            if f.name in INTERNAL_FIELDS:
                continue
            sub = hints[f.name] if dataclasses.is_dataclass(hints[f.name]) else None
            comment = cell(comments.get(f.name, ""))
            if sub is not None:  # a table: its own table below documents it
                key = f"{paths[0]}.{f.name}".lstrip(".")
                comment += ("; " if comment else "") + f"the table [`[{key}]`](#{anchor(tables[sub])})"
            elif not comment:
                raise ValueError(f"{inspect.getsourcefile(cls)}: {cls.__name__}.{f.name} has no comment; every field "
                                 "must say what it is for (a '# ...' at the end of its line or on the lines above it)")
            if f.default is not dataclasses.MISSING:
                default = code(toml_value(f.default))
            elif f.default_factory is not dataclasses.MISSING:
                default = "its defaults" if sub is not None else code(toml_value(f.default_factory()))
            else:
                default = "required"
            rows.append([code(f.name), code(str(f.type)), default, comment])
        result.append((paths, cls, rows))
    return result


def config_fields_markdown() -> str:
    parts = []
    for paths, cls, rows in config_tables():
        if paths == [""]:
            title = "The top level"
            where = "Written before any table, or `--set seed=1`"
        else:
            title = ", ".join(f"`[{p}]`" for p in paths)
            example = f"{paths[-1]}.{rows[0][0].strip('`')}"
            where = f"`{cls.__name__}`; on the command line, `--set {example}=VALUE`"
        parts.append(f"### {title} {{ #{anchor(paths)} }}\n\n{where}.\n\n"
                     + table(["field", "type", "default", "what it is"], rows))
    return "\n".join(parts)


# --- exit codes and errors -------------------------------------------------------------------------


def exit_codes_markdown() -> str:
    from raysal import errors

    code_rows = [[f"{e.code}", cell(e.name), cell(e.meaning), cell(e.left)] for e in errors.EXIT_CODES]
    names = {e.code: e.name for e in errors.EXIT_CODES}
    error_rows = []
    for cls in errors.all_errors():
        bases = ", ".join(f"`{b.__name__}`" for b in cls.__bases__)
        error_rows.append([f"`{cls.__name__}`", f"{cls.exit_code} ({cell(names[cls.exit_code])})", bases,
                           cell(paragraph(inspect.getdoc(cls)))])
    return (
        "# Exit codes\n\n"
        "<!-- Generated by docs/hooks.py from raysal/errors.py at every build; edit that file, not this page. -->\n\n"
        + "\n\n".join(paragraph(p) for p in inspect.getdoc(errors).split("\n\n")) + "\n\n"
        "## Exit codes\n\n"
        "`raysal.errors.EXIT_CODES`, the codes every `raysal` command exits with:\n\n"
        + table(["code", "name", "meaning", "what is left"], code_rows)
        + "\n## Errors\n\n"
        "Every class of `raysal.errors` (`raysal.errors.all_errors()`), the base first, with the exit code a "
        "command exits with when the error refuses it before it changed anything:\n\n"
        + table(["error", "exit code", "bases", "what it means"], error_rows)
    )


# --- code map ----------------------------------------------------------------------------------------


def docstring_markdown(doc: str) -> str:
    """A package's docstring as Markdown: its paragraphs joined into lines, its indented examples kept as code."""
    blocks = []
    for block in doc.strip().split("\n\n"):
        lines = block.splitlines()
        if all(line.startswith("    ") for line in lines):
            blocks.append(block)
        else:
            blocks.append(cell(block))
    return "\n\n".join(blocks)


def file_rows(folder: Path) -> list[list[str]]:
    """A row per module of ``folder`` (path, lines, the first paragraph of its docstring), then per preset
    (``.toml``: the first paragraph of its leading comment)."""
    rows = []
    for path in sorted(folder.glob("*.py")):
        if path.name == "__init__.py":
            continue
        text = path.read_text()
        doc = (ast.get_docstring(ast.parse(text, str(path))) or "").strip().split("\n\n")[0]
        rows.append([code(str(path.relative_to(REPO))), str(len(text.splitlines())), cell(doc) or "(no docstring)"])
    for path in sorted(folder.glob("*.toml")):
        text = path.read_text()
        comment = []
        for line in text.splitlines():
            if not line.startswith("#") or not line.lstrip("#").strip():
                break
            comment.append(line.lstrip("#").strip())
        rows.append([code(str(path.relative_to(REPO))), str(len(text.splitlines())), cell(" ".join(comment))])
    return rows


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def folder_markdown(folder: Path, heading: str, about: str) -> str:
    init = folder / "__init__.py"
    modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
    lines = sum(len(p.read_text().splitlines()) for p in modules)
    size = f"{plural(len(modules), 'module')}, {plural(lines, 'line')}"
    if init.exists():
        size += f", and `__init__.py` ({plural(len(init.read_text().splitlines()), 'line')})"
    rows = file_rows(folder)
    return (f"## {heading}\n\n{about}\n\n{size}.\n\n"
            + (table(["file", "lines", "what it is"], rows) if rows else ""))


def code_map_markdown() -> str:
    package = REPO / "raysal"
    folders = [package] + sorted(p.parent for p in package.rglob("__init__.py") if p.parent != package)
    groups = []
    for folder in folders:
        init = folder / "__init__.py"
        doc = (ast.get_docstring(ast.parse(init.read_text())) if init.exists() else None) or ""
        if folder == package:
            heading, about = "`raysal`: the loose modules", docstring_markdown(doc.split("\n\n")[0])
        else:
            heading = code(".".join(folder.relative_to(REPO).parts))
            about = docstring_markdown(doc) if doc else "(its `__init__.py` has no docstring)"
        groups.append(folder_markdown(folder, heading, about))
    for extra, about in (("jobs", "Thin entry scripts: each parses its command line and calls the library."),
                         ("benchmarks", "raysal measured from outside, one module per group; not installed.")):
        if (REPO / extra).is_dir():
            groups.append(folder_markdown(REPO / extra, f"`{extra}/`", about))
    return (
        "# Code map\n\n"
        "<!-- Generated by docs/hooks.py from the source tree at every build. -->\n\n"
        "Every module of the package, grouped by subpackage, with its length and the first paragraph of "
        "its docstring; a subpackage's own docstring (its `__init__.py`) says what the folder is for. Read "
        "from the source with `ast` when the docs are built (nothing is imported), so this is the tree as "
        "it is. How the floors stack, and what may import what: [Development](../development.md#layout).\n\n"
        + "\n".join(groups)
    )


# --- MkDocs events --------------------------------------------------------------------------------------


def on_files(files: Files, config: Any) -> Files:
    """Add the generated pages as virtual files."""
    for src_uri, make in ((EXIT_CODES_PAGE, exit_codes_markdown), (CODE_MAP_PAGE, code_map_markdown)):
        if files.get_file_from_path(src_uri) is not None:
            raise ValueError(f"docs/{src_uri} exists, but it is generated by docs/hooks.py: delete it")
        files.append(File.generated(config, src_uri, content=make()))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Put the config's field tables into the configuration reference."""
    if page.file.src_uri != CONFIG_PAGE:
        return markdown
    if markdown.count(CONFIG_MARKER) != 1:
        raise ValueError(f"docs/{CONFIG_PAGE} must hold {CONFIG_MARKER} once: where the field tables go")
    return markdown.replace(CONFIG_MARKER, config_fields_markdown())
