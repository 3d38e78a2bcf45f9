"""Run one active-learning round: score the pool, select the most uncertain images.

    python jobs/round.py                                # the offline demo, state in .raysal/demo
    python jobs/round.py --config flowers --state runs/flowers --budget 500
    python jobs/round.py --state .raysal/demo --status --json
    ray job submit --working-dir . -- python jobs/round.py --config demo --state /shared/runs/demo

Exit codes: 0 done, 1 the round failed, 2 bad arguments or config (nothing was started),
3 data or model missing (nothing was started).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_MISSING = 0, 1, 2, 3


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from raysal.config import preset_names

    parser = argparse.ArgumentParser(prog="jobs/round.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="demo", help=f"a preset ({', '.join(preset_names())}) or a .toml file")
    parser.add_argument("--state", default=None, help="the run's state folder (default: .raysal/<config name>)")
    parser.add_argument("--budget", type=int, help="images to select this round (select.budget)")
    parser.add_argument("--criterion", help="least_confidence | smallest_margin | entropy | random")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config field, e.g. --set score.max_actors=4 (repeatable)")
    parser.add_argument("--status", action="store_true", help="print the run's state and exit")
    parser.add_argument("--json", action="store_true", help="with --status: machine-readable output")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray (ignored on a cluster)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s raysal %(message)s", datefmt="%H:%M:%S")
    from raysal import config as config_lib
    from raysal import state

    overrides = dict(config_lib.parse_override(o) for o in args.overrides) if args.overrides else {}
    if args.budget is not None:
        overrides["select.budget"] = args.budget
    if args.criterion is not None:
        overrides["select.criterion"] = args.criterion
    try:
        cfg = config_lib.load_config(args.config, overrides)
    except config_lib.ConfigError as exc:
        print(f"error: bad config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    state_dir = args.state or f".raysal/{cfg.name}"

    if args.status:
        report = state.status(state_dir)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(f"state {report['state']}: {len(report['rounds'])} round(s), model {report['latest_model']}")
            for r in report["rounds"]:
                print(f"  round {r['round']}: selected {r['selected']} of {r['pool_size']} "
                      f"({r['criterion']}), {r['skipped']} skipped -> {r['selection']}")
        return EXIT_OK

    from raysal import preflight, rounds
    from raysal.cluster import init_ray

    try:
        preflight.check(cfg, state_dir)
    except preflight.Unavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_MISSING
    init_ray(args.num_cpus)
    summary = rounds.run_round(cfg, state_dir)
    print(rounds.format_summary(summary))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
