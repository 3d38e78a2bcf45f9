"""Benchmarks: raysal against the baselines a user would otherwise pick, measured in one run.

    python jobs/bench.py --quick            # a few minutes on a laptop
    python jobs/bench.py --out bench.json   # the full set
    python jobs/bench.py --only scoring     # one group: scoring | decode | topk | memory | round | scale | trainset | rescoring

Every figure is reported next to its baseline, measured in the same run on the same data, as a
ratio; timings are medians of repeats. Results go to a JSON file and a markdown table.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import datetime, timezone
from typing import Sequence

EXIT_OK = 0
GROUPS = ["scoring", "decode", "topk", "memory", "round", "scale", "trainset", "rescoring"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs/bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat: a few minutes")
    parser.add_argument("--only", action="append", choices=GROUPS, help="run only these groups")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per timing (default 3, --quick 1)")
    parser.add_argument("--out", default="bench-results/bench.json", help="where to write the JSON results")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray")
    args = parser.parse_args(argv)

    import benchmarks as bench  # jobs/benchmarks.py: benchmark code is not part of the installed package

    repeats = args.repeats or (1 if args.quick else 3)
    rows: list[dict] = []
    started = time.perf_counter()
    # "round" runs first: it starts its own Ray in a subprocess, as a real job would. "decode"
    # needs no Ray (nor TensorFlow), so it also runs where only raysal.data.images' packages are.
    for group in sorted(args.only or GROUPS, key=lambda g: g != "round"):
        print(f"bench: {group} ...", flush=True)
        if group not in ("round", "decode", "trainset"):  # trainset starts a Ray of its own, as round does
            from raysal.run.cluster import init_ray

            init_ray(args.num_cpus)
        rows += getattr(bench, f"{group}_benchmarks")(quick=args.quick, repeats=repeats)
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": bench.machine(),
              "python": platform.python_version(), "quick": args.quick, "repeats": repeats,
              "seconds": round(time.perf_counter() - started, 1), "results": rows}
    bench.write_report(report, args.out)
    print(bench.markdown_table(report))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
