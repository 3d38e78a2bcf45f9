"""Benchmarks: raysal against the baselines a user would otherwise pick, measured in one run.

    python jobs/bench.py --quick            # a few minutes on a laptop
    python jobs/bench.py --out bench.json   # the full set
    python jobs/bench.py --only scoring     # one group (repeat --only for more)

Groups: scoring, decode, topk, memory, round, scale, trainset, rescoring.

Every figure is reported next to its baseline, measured in the same run on the same data, as a
ratio; timings are medians of repeats. Results go to a JSON file and a markdown table.

Baselines are what a user would otherwise write: the article's single-process tf.data +
``model.predict`` pipeline for scoring, ``Dataset.sort().limit(k)`` and in-memory numpy for
top-k. One group is one module here, named after it, with a ``run(quick, repeats)`` that returns
its rows; ``GROUPS`` is the registry. This package measures raysal from outside: it lives in the
checkout, beside ``jobs/``, and is not installed with raysal.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable, Sequence

# Importing the submodule ``round`` binds it as this package's name ``round``, over the builtin:
# no round() in this file (report.make_report rounds).
from benchmarks import decode, htmlreport, memory, rescoring, round, scale, scoring, topk, trainset
from benchmarks.common import Row
from benchmarks.report import make_report, markdown_table, write_report

__all__ = ["GROUPS", "Row", "main"]

EXIT_OK = 0

GROUPS: dict[str, Callable[[bool, int], list[Row]]] = {
    "scoring": scoring.run,
    "decode": decode.run,
    "topk": topk.run,
    "memory": memory.run,
    "round": round.run,
    "scale": scale.run,
    "trainset": trainset.run,
    "rescoring": rescoring.run,
    "htmlreport": htmlreport.run,
}
# Groups that run without the bench's own Ray: round and trainset each start one in a child
# process, as a real job would; decode needs no Ray (nor TensorFlow).
WITHOUT_RAY = {"round", "decode", "trainset"}


def main(argv: Sequence[str] | None = None, prog: str = "jobs/bench.py") -> int:
    """Run the benchmark groups ``argv`` asks for, write their JSON report and print its table.

    Args:
        argv: the command line after the program's name (``None``: ``sys.argv[1:]``).
        prog: the program's name in ``--help`` and usage messages.
    Returns:
        The exit code: 0 once every group has run (argparse exits 2 on a bad command line).
    """
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat: a few minutes")
    parser.add_argument("--only", action="append", choices=list(GROUPS), help="run only these groups")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per timing (default 3, --quick 1)")
    parser.add_argument("--out", default="bench-results/bench.json", help="where to write the JSON results")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray")
    args = parser.parse_args(argv)

    repeats = args.repeats or (1 if args.quick else 3)
    rows: list[Row] = []
    started = time.perf_counter()
    # "round" runs first: it starts its own Ray in a subprocess, which a Ray of this process would compete with.
    for group in sorted(args.only or GROUPS, key=lambda name: name != "round"):
        print(f"bench: {group} ...", flush=True)
        if group not in WITHOUT_RAY:
            from raysal.run.cluster import init_ray

            init_ray(args.num_cpus)
        rows += GROUPS[group](args.quick, repeats)
    report = make_report(rows, args.quick, repeats, time.perf_counter() - started)
    write_report(report, args.out)
    print(markdown_table(report))
    return EXIT_OK
