"""``raysal bench``: the benchmarks, run from a source checkout. They measure raysal from outside
and live in ``benchmarks/`` beside ``jobs/``, not in the installed package."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from raysal.cli.common import exit_codes, parser_for
from raysal.errors import EXIT_CONFIG, EXIT_OK

DESCRIPTION = """Benchmarks: raysal against the baselines a user would otherwise pick, measured in one run.

    raysal bench --quick                  # a few minutes on a laptop
    raysal bench --only scoring           # one group (repeat --only for more)
    raysal bench -- --help                # the benchmarks' own options

ARGS go to the benchmarks' runner (the same as python jobs/bench.py ARGS): --quick, --only GROUP,
--repeats N, --out FILE, --num-cpus N. Run it from a checkout of raysal's source."""
EPILOG = exit_codes({EXIT_OK: "every group asked for has run",
                     EXIT_CONFIG: "bad arguments, or no source checkout with benchmarks/ here"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="the benchmarks' options")
    parser.set_defaults(run=run)


def checkout_root(start: Path | None = None) -> Path | None:
    """The source checkout that holds ``benchmarks/``: the working directory or a folder above
    it, else the one raysal was installed from in editable mode; None when there is none."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents, Path(__file__).resolve().parents[2]):
        if (folder / "benchmarks" / "__init__.py").is_file() and (folder / "raysal").is_dir():
            return folder
    return None


def run(args: argparse.Namespace, prog: str) -> int:
    root = checkout_root()
    if root is None:
        print(f"error: {prog}: the benchmarks ship with raysal's source, not with the installed package: run "
              "this from a checkout of the repository (benchmarks/ beside jobs/)", file=sys.stderr)
        return EXIT_CONFIG
    sys.path.insert(0, str(root))  # benchmarks/ sits beside jobs/, outside the installed package
    from benchmarks import main as run_benchmarks

    passed = [a for a in args.args if a != "--"] if args.args[:1] == ["--"] else list(args.args)
    try:
        return run_benchmarks(passed, prog=prog)
    except SystemExit as exc:  # the runner's own argparse: --help (0), a bad option (2)
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG


def main(argv: Sequence[str] | None = None, prog: str = "raysal bench") -> int:
    args, extra = parser_for(sys.modules[__name__], prog).parse_known_args(argv)
    args.args = [*extra, *args.args]
    return run(args, prog)
