"""The command line: ``raysal round``, ``raysal status``, ``raysal prepare``, ``raysal pack``,
``raysal labelstudio``.

``jobs/round.py`` (the entry point for ``ray job submit``) is ``raysal round``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from typing import Any, Sequence

log = logging.getLogger("raysal.cli")

ROUND_DOC = """Run one active-learning round: score the pool, select, label, retrain, evaluate.

    raysal round                                # the offline demo, state in .raysal/demo
    raysal round --config flowers --state runs/flowers --budget 500
    raysal status --state .raysal/demo --json
    raysal round --config my.toml --import-labels labels.csv   # human labels arrived
    ray job submit --working-dir . -- python jobs/round.py --config demo --state /shared/runs/demo

A round interrupted by a crash is resumed at its first stage not yet committed. The console
shows raysal's own lines; everything else (Ray's and TensorFlow's output) goes to a log file,
copied to <state>/logs/ when the round ends; -v shows it on the console too.

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

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_MISSING, EXIT_LOCKED, EXIT_WAITING, EXIT_LEASE_LOST = 0, 1, 2, 3, 4, 5, 6
STARTED = (EXIT_OK, EXIT_FAILED, EXIT_WAITING, EXIT_LEASE_LOST)  # exits after which the state may have changed


def parse_args(argv: Sequence[str] | None, prog: str = "raysal round") -> argparse.Namespace:
    from raysal.config import preset_names

    parser = argparse.ArgumentParser(prog=prog, description=ROUND_DOC.split("\n\n")[0],
                                     epilog=ROUND_DOC[ROUND_DOC.index("exit codes:"):],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="demo", help=f"a preset ({', '.join(preset_names())}) or a .toml file")
    parser.add_argument("--state", default=None,
                        help="the run's state: a folder or a pyarrow.fs URI (default: .raysal/<config name>)")
    parser.add_argument("--budget", type=int, help="images to select this round (select.budget)")
    parser.add_argument("--criterion", help="least_confidence | smallest_margin | entropy | random")
    parser.add_argument("--strategy", help="top_k | power | softmax | class_balanced | diversity: how the budget "
                                           "is chosen from the scores (select.strategy; select.beta sets the "
                                           "sharpness, select.candidates the diversity candidates)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config field, e.g. --set score.max_actors=4 (repeatable)")
    parser.add_argument("--import-labels", metavar="FILE", help="human labels for the waiting round: CSV or "
                        "Parquet with image_id,label, or a Label Studio JSON, JSON-MIN or CSV export")
    parser.add_argument("--break-lock", action="store_true",
                        help="take over the run's lease now, without waiting for it to expire")
    parser.add_argument("--lease-ttl", type=float, default=None, metavar="SECONDS",
                        help="how long the run's lease lasts unless renewed (renewed every third of it; "
                             "default 60): a round whose driver died is taken over after this")
    parser.add_argument("--status", action="store_true", help="print the run's state and exit")
    parser.add_argument("--json", action="store_true", help="with --status: machine-readable output")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray (ignored on a cluster)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show Ray's and TensorFlow's output on the console too (it always goes to the log)")
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
        if r.get("kappa") is not None:  # known once the round has selected, before its labels
            line += f", kappa {r['kappa']:.4f}" + (" (stop labelling)" if r.get("stop_labelling") else "")
        print(line)


def _config(args: argparse.Namespace) -> Any:
    from raysal import config as config_lib

    overrides = dict(config_lib.parse_override(o) for o in args.overrides)
    if args.budget is not None:
        overrides["select.budget"] = args.budget
    if args.criterion is not None:
        overrides["select.criterion"] = args.criterion
    if args.strategy is not None:
        overrides["select.strategy"] = args.strategy
    cfg = config_lib.absolute_paths(config_lib.load_config(args.config, overrides))
    if args.lease_ttl is not None and not args.lease_ttl > 0:
        raise config_lib.ConfigError(f"--lease-ttl: must be > 0 seconds, got {args.lease_ttl}")
    return cfg


def round_main(argv: Sequence[str] | None = None, prog: str = "raysal round") -> int:
    args = parse_args(argv, prog)
    from raysal.report import console
    from raysal import config as config_lib

    try:
        cfg = _config(args)
    except config_lib.ConfigError as exc:
        print(f"error: bad config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from raysal.run import rounds
    from raysal import storage

    state_root = storage.absolute(args.state or f".raysal/{cfg.name}")  # workers must never see a relative path
    if args.status:
        print_status(rounds.status(state_root), args.json)
        return EXIT_OK

    from raysal.run import preflight

    try:  # everything that can refuse the round without Ray is decided first, and writes nothing
        preflight.check(cfg, state_root)
        rounds.check_startable(cfg, state_root, label_file=args.import_labels, break_lock=args.break_lock)
    except Exception as exc:  # noqa: BLE001  (a refusal gets its exit code; anything else is a bug: raised)
        code = refusal_code(exc)
        if code is None:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return code

    _exit_on_sigterm()
    with console.captured_output(args.verbose) as (_, log_path):
        log.info("round of %s, state %s; full log %s", cfg.name, state_root, log_path)
        code, result = EXIT_FAILED, None  # what an interruption (Ctrl-C, SIGTERM) leaves: a started round
        try:
            code, result = _run(args, cfg, state_root)
        finally:
            if code in STARTED:
                log_path = console.keep_log(log_path, storage.join(state_root, "logs", console.log_file_name()))
    if code not in STARTED:  # refused: the message says why, and nothing, not even a log, is left behind
        os.remove(log_path)
        print(result, file=sys.stderr)
    elif isinstance(result, rounds.RoundOutcome):
        print(rounds.format_outcome(result, log_path))
    else:
        print(f"{result}\n  log: {log_path}", file=sys.stderr)
    return code


def _exit_on_sigterm() -> None:
    """SIGTERM (``ray job stop``, a pod shut down) ends the round as Ctrl-C does: the lease is
    released and the log kept. Only where nobody else handles it."""
    import signal
    import threading

    def leave(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, leave)


def refusal_code(exc: BaseException) -> int | None:
    """The exit code of an error that refuses a round before it changes anything; None for others."""
    from raysal.labelling import labels
    from raysal.run import lease, preflight, rounds
    from raysal.data.sources import SourceError

    refusals = {EXIT_MISSING: (preflight.Unavailable, SourceError),
                EXIT_CONFIG: (preflight.Refused, labels.LabelFileError, rounds.Incompatible, rounds.NothingToLabel),
                EXIT_LOCKED: (lease.Locked,)}
    return next((code for code, kinds in refusals.items() if isinstance(exc, kinds)), None)


def failure_line(exc: BaseException) -> str:
    """The line that says why: a Ray task's own exception, the last line of a long message."""
    cause = getattr(exc, "cause", None)  # a RayTaskError carries the task's exception
    text = str(cause if isinstance(cause, BaseException) else exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1][:400] if lines else ''}"


def _run(args: argparse.Namespace, cfg: Any, state_root: str) -> tuple[int, Any]:
    """The round, inside the console capture: (exit code, the outcome or an error message)."""
    import ray

    from raysal.labelling import labels
    from raysal.run import lease, preflight, rounds
    from raysal.run.cluster import init_ray
    from raysal.data.sources import SourceError
    from raysal.run.state import StateError

    started_ray = not ray.is_initialized()
    try:
        try:  # refusals: nothing is written
            init_ray(args.num_cpus)
            preflight.check_cluster(cfg, state_root)
        except (preflight.Unavailable, preflight.Refused, SourceError) as exc:
            return refusal_code(exc), f"error: {exc}"
        try:
            outcome = rounds.run_round(cfg, state_root, label_file=args.import_labels, break_lock=args.break_lock,
                                       **({"lease_ttl": args.lease_ttl} if args.lease_ttl else {}))
        except lease.LeaseLost as exc:
            return EXIT_LEASE_LOST, f"error: {exc}"
        except (labels.LabelFileError, rounds.Incompatible, rounds.NothingToLabel, lease.Locked) as exc:
            return refusal_code(exc), f"error: {exc}"  # decided before the lease: nothing was written
        except (StateError, SourceError, preflight.Unavailable) as exc:  # the round had started: it may resume
            return EXIT_FAILED, f"error: {exc}\n  (running the round again resumes it)"
        except Exception as exc:  # noqa: BLE001  (the traceback goes to the log; the console gets one line)
            traceback.print_exc()
            return EXIT_FAILED, (f"error: the round failed: {failure_line(exc)}"
                                 "\n  (the traceback is in the log; running the round again resumes it)")
    finally:
        if started_ray:
            ray.shutdown()  # inside the capture: Ray's goodbye lines go to the log
    return (EXIT_WAITING if outcome.status == rounds.WAITING else EXIT_OK), outcome


def main(argv: Sequence[str] | None = None) -> int:
    """``raysal COMMAND ...``: round, status, prepare, pack, labelstudio."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"round": "run (or resume) one round", "status": "print a run's state",
                "prepare": "turn a folder or manifest of images into a ready run",
                "pack": "pack a folder or manifest of images into Parquet shards, for large pools",
                "labelstudio": "push a waiting round's tasks to Label Studio, pull its annotations"}
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print("usage: raysal {" + ",".join(commands) + "} ...\n\n" + "\n".join(f"  {c:12} {h}" for c, h in commands.items())
              + "\n\n`raysal COMMAND --help` for a command's options.",
              file=sys.stdout if argv and argv[0] in ("-h", "--help") else sys.stderr)
        return EXIT_OK if argv and argv[0] in ("-h", "--help") else EXIT_CONFIG
    command, rest = argv[0], argv[1:]
    if command == "round":
        return round_main(rest, prog="raysal round")
    if command == "status":
        return round_main(["--status", *rest], prog="raysal status")
    if command == "labelstudio":
        from raysal.labelling import labelstudio

        return labelstudio.main(rest, prog="raysal labelstudio")
    if command == "pack":
        from raysal.data import pack

        return pack.main(rest, prog="raysal pack")
    from raysal.data import prepare

    return prepare.main(rest, prog="raysal prepare")
