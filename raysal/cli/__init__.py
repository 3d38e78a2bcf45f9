"""The ``raysal`` command: one parser, one subcommand per module of this package.

    raysal round | status | report | prepare | pack | labelstudio | simulate | bench  [OPTIONS]

Each subcommand module has ``DESCRIPTION``, ``EPILOG`` (its exit codes, from
``raysal.errors``), ``add_arguments(parser)`` and ``run(args, prog) -> int``, a thin layer over a
library function; its ``main(argv, prog)`` runs it on its own, as the scripts in ``jobs/`` do.
Importing this package loads neither Ray nor TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from raysal.cli.common import HelpFormatter, exit_codes
from raysal.errors import EXIT_CONFIG

COMMANDS = {  # name: one line of `raysal --help`
    "round": "run (or resume) one active-learning round",
    "status": "print a run's rounds, lease and latest model",
    "report": "write a run's HTML report: figures, per-class accuracy, selections as thumbnails",
    "prepare": "turn a folder or manifest of labelled images into a ready run",
    "pack": "pack a folder or manifest of images into Parquet shards, for large pools",
    "labelstudio": "push a waiting round's tasks to Label Studio, pull its annotations",
    "simulate": "simulated learning curves: how many labels each strategy saves",
    "bench": "the benchmarks, from a source checkout",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raysal", formatter_class=HelpFormatter,
        description="Active learning at scale on Ray: score an unlabelled pool, select the most informative "
                    "images, get them labelled, retrain.",
        epilog="`raysal COMMAND --help` lists a command's options.\n\n" + exit_codes())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, summary in COMMANDS.items():
        module = importlib.import_module(f"raysal.cli.{name}")
        sub = commands.add_parser(name, help=summary, description=module.DESCRIPTION, epilog=module.EPILOG,
                                  formatter_class=HelpFormatter)
        module.add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``raysal COMMAND ARGS``; the exit code (2 for a bad command line, as argparse gives it)."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))
        if extra and args.command != "bench":  # bench hands its options to the benchmarks' own parser
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # --help (0) or a bad command line (2), already printed
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
    if extra:
        args.args = [*extra, *args.args]
    return args.run(args, f"raysal {args.command}")
