"""``raysal report``: a run's HTML report, made from its state."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from raysal.cli import common
from raysal.cli.common import exit_codes, parser_for, refused
from raysal.errors import EXIT_CONFIG, EXIT_MISSING, EXIT_OK, RaysalError

DESCRIPTION = """Write a run's report: static HTML pages that open from file:// with no network. Each round's
figures and stage times, the learning curve, per-class accuracy over rounds, the latest model's
confusion matrix, the stopping signal, each round's selection as thumbnails, and the skipped images.
Every round writes it into <state>/report/ already; this command makes it again, anywhere.

    raysal report --state .raysal/demo
    raysal report --state s3://bucket/runs/flowers --out ./flowers-report"""
EPILOG = exit_codes({EXIT_OK: "written", EXIT_CONFIG: "bad arguments, or no run in the state",
                     EXIT_MISSING: "the state (or the pool, for thumbnails) cannot be reached"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", default=None,
                        help="the run's state: a folder or a pyarrow.fs URI (default: .raysal/<config name>)")
    parser.add_argument("--config", default="demo",
                        help="the config whose name gives the state's folder when --state is not given")
    parser.add_argument("--out", default=None,
                        help="the folder (or URI) to write the report into (default: <state>/report)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, prog: str) -> int:
    from raysal import storage

    state_root = common.state_root(args)
    if isinstance(state_root, int):
        return state_root
    out = None if args.out is None else storage.absolute(args.out)
    if (code := refused(lambda: storage.probe({"--state": state_root, **({"--out": out} if out else {})}))) is not None:
        return code
    from raysal.run import report
    from raysal.run.state import RunState

    state = RunState(state_root)
    if not state.rounds():
        print(f"error: --state {state_root}: no round has run in this state, so there is nothing to report",
              file=sys.stderr)
        return EXIT_CONFIG
    started = time.monotonic()
    try:
        index = report.write(state, out)
    except RaysalError as exc:  # the pool or the state went away while it was read, say
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"report of {len(state.rounds())} round(s) written in {time.monotonic() - started:.1f} s: {index}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None, prog: str = "raysal report") -> int:
    return run(parser_for(sys.modules[__name__], prog).parse_args(argv), prog)
