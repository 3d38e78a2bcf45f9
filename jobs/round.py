"""Run one active-learning round: score the pool, select, label, retrain, evaluate.

    python jobs/round.py                                # the offline demo, state in .raysal/demo
    python jobs/round.py --config flowers --state runs/flowers --budget 500
    python jobs/round.py --state .raysal/demo --status --json
    python jobs/round.py --config my.toml --import-labels labels.csv   # human labels arrived
    ray job submit --working-dir . -- python jobs/round.py --config demo --state /shared/runs/demo

A round interrupted by a crash is resumed at its first stage not yet committed.

exit codes:
  0  the round is done
  1  the round failed; running it again resumes it
  2  bad arguments, config, label file or pool (repeated ids, paths other nodes cannot see);
     nothing was changed
  3  data or model missing; nothing was changed
  4  another round holds the run's lease; nothing was changed
  5  the round is waiting for human labels (--import-labels FILE once they are done)
  6  the round lost its lease (paused past its TTL, or broken by another round) and stopped
     before its next commit; running it again resumes it
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Sequence

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_MISSING, EXIT_LOCKED, EXIT_WAITING, EXIT_LEASE_LOST = 0, 1, 2, 3, 4, 5, 6


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from raysal.config import preset_names

    parser = argparse.ArgumentParser(prog="jobs/round.py", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__[__doc__.index("exit codes:"):],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="demo", help=f"a preset ({', '.join(preset_names())}) or a .toml file")
    parser.add_argument("--state", default=None,
                        help="the run's state: a folder or a pyarrow.fs URI (default: .raysal/<config name>)")
    parser.add_argument("--budget", type=int, help="images to select this round (select.budget)")
    parser.add_argument("--criterion", help="least_confidence | smallest_margin | entropy | random")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config field, e.g. --set score.max_actors=4 (repeatable)")
    parser.add_argument("--import-labels", metavar="FILE", help="human labels for the waiting round (CSV/Parquet)")
    parser.add_argument("--break-lock", action="store_true",
                        help="take over the run's lease now, without waiting for it to expire")
    parser.add_argument("--lease-ttl", type=float, default=None, metavar="SECONDS",
                        help="how long the run's lease lasts unless renewed (renewed every third of it; "
                             "default 60): a round whose driver died is taken over after this")
    parser.add_argument("--status", action="store_true", help="print the run's state and exit")
    parser.add_argument("--json", action="store_true", help="with --status: machine-readable output")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray (ignored on a cluster)")
    return parser.parse_args(argv)


def print_status(report: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    print(f"state {report['state']}: {len(report['rounds'])} round(s), latest model {report['latest_model']}")
    lease = report["leased_by"]
    if lease:
        state = "expired, to be taken over" if lease["expired"] else f"expires {time.ctime(lease['expires_at'])}"
        print(f"  leased by pid {lease['pid']} on {lease['host']} since {time.ctime(lease['acquired_at'])} ({state})")
    for r in report["rounds"]:
        line = f"  round {r['round']}: {r['state']}, selected {r.get('selected')}"
        if r["state"] == "done":
            line += (f", test accuracy {r['test_accuracy_before']:.4f} -> {r['test_accuracy_after']:.4f}, "
                     f"on the selection before retraining {r['selection_accuracy_before']:.4f}")
        print(line)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s raysal %(message)s", datefmt="%H:%M:%S")
    from raysal import config as config_lib

    try:
        overrides = dict(config_lib.parse_override(o) for o in args.overrides)
        if args.budget is not None:
            overrides["select.budget"] = args.budget
        if args.criterion is not None:
            overrides["select.criterion"] = args.criterion
        cfg = config_lib.absolute_paths(config_lib.load_config(args.config, overrides))
        if args.lease_ttl is not None and not args.lease_ttl > 0:
            raise config_lib.ConfigError(f"--lease-ttl: must be > 0 seconds, got {args.lease_ttl}")
    except config_lib.ConfigError as exc:
        print(f"error: bad config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from raysal import storage

    state_root = storage.absolute(args.state or f".raysal/{cfg.name}")  # workers must never see a relative path

    from raysal import rounds

    if args.status:
        print_status(rounds.status(state_root), args.json)
        return EXIT_OK

    from raysal import labels, lease, preflight
    from raysal.cluster import init_ray
    from raysal.sources import SourceError
    from raysal.state import StateError

    try:
        # Everything that can refuse the round without Ray is decided first, and writes nothing.
        preflight.check(cfg, state_root)
        rounds.check_startable(cfg, state_root, label_file=args.import_labels, break_lock=args.break_lock)
        init_ray(args.num_cpus)
        preflight.check_cluster(cfg, state_root)
        outcome = rounds.run_round(cfg, state_root, label_file=args.import_labels, break_lock=args.break_lock,
                                   **({"lease_ttl": args.lease_ttl} if args.lease_ttl else {}))
    except (preflight.Unavailable, SourceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_MISSING
    except (preflight.Refused, labels.LabelFileError, rounds.Incompatible, rounds.NothingToLabel) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except lease.Locked as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except lease.LeaseLost as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_LEASE_LOST
    except StateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(rounds.format_outcome(outcome))
    return EXIT_WAITING if outcome.status == rounds.WAITING else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
