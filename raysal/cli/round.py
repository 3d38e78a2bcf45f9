"""``raysal round``: run (or resume) one round. ``jobs/round.py`` (the entry point for ``ray job
submit``) is this command."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import traceback
from typing import Any, Sequence

from raysal.cli.common import exit_codes, failure_line, parser_for, refusal_code, refused
from raysal.errors import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_LEASE_LOST,
    EXIT_OK,
    EXIT_WAITING,
)

log = logging.getLogger("raysal.cli")

DESCRIPTION = """Run one active-learning round: score the pool, select, label, retrain, evaluate.

    raysal round                                # the offline demo, state in .raysal/demo
    raysal round --config flowers --state runs/flowers --budget 500
    raysal status --state .raysal/demo --json
    raysal round --config my.toml --import-labels labels.csv   # human labels arrived
    ray job submit --working-dir . -- python jobs/round.py --config demo --state /shared/runs/demo

A round interrupted by a crash is resumed at its first stage not yet committed. The console
shows raysal's own lines; everything else (Ray's and TensorFlow's output) goes to a log file,
copied to <state>/logs/ when the round ends; -v shows it on the console too.
"""
EPILOG = exit_codes()

_signal: dict[str, int] = {}  # the SIGTERM that raised the KeyboardInterrupt; empty: Ctrl-C


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from raysal.config import preset_names

    parser.add_argument("--config", default="demo", help=f"a preset ({', '.join(preset_names())}) or a .toml file")
    parser.add_argument("--state", default=None,
                        help="the run's state: a folder or a pyarrow.fs URI (default: .raysal/<config name>)")
    parser.add_argument("--budget", type=int, help="images to select this round (select.budget)")
    parser.add_argument("--criterion", help="least_confidence | smallest_margin | entropy | bald | random")
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
    parser.add_argument("--plan", action="store_true",
                        help="print what each stage asks of the cluster (CPUs and GPUs per worker, how many, which "
                             "nodes can host them) and exit: 0 when it fits, 2 when no node could host it")
    parser.add_argument("--json", action="store_true", help="with --status: machine-readable output")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray (ignored on a cluster)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show Ray's and TensorFlow's output on the console too (it always goes to the log)")
    parser.set_defaults(run=run)


def parse_args(argv: Sequence[str] | None, prog: str = "raysal round") -> argparse.Namespace:
    import sys

    return parser_for(sys.modules[__name__], prog).parse_args(argv)


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


def main(argv: Sequence[str] | None = None, prog: str = "raysal round") -> int:
    """``raysal round ARGS`` on its own, as ``python jobs/round.py ARGS`` runs it."""
    return run(parse_args(argv, prog), prog)


def run(args: argparse.Namespace, prog: str) -> int:
    from raysal import config as config_lib
    from raysal.report import console

    try:
        cfg = _config(args)
    except config_lib.ConfigError as exc:
        print(f"error: bad config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from raysal import storage
    from raysal.run import rounds
    from raysal.run.state import LOGS_DIR

    state_root = storage.absolute(args.state or f".raysal/{cfg.name}")  # workers must never see a relative path
    if args.status:
        from raysal.cli.status import print_status

        if (code := refused(lambda: storage.probe({"--state": state_root}))) is not None:
            return code
        print_status(rounds.status(state_root), args.json)
        return EXIT_OK

    from raysal.run import preflight

    def startable() -> None:  # everything that can refuse the round without Ray is decided first, writing nothing
        preflight.check(cfg, state_root)
        rounds.check_startable(cfg, state_root, label_file=args.import_labels, break_lock=args.break_lock)

    if args.plan:  # reads the cluster alone: no state, no data, no lease
        return _plan(args, cfg)
    if (code := refused(startable)) is not None:
        return code

    _signal.clear()
    _exit_on_sigterm()
    with console.captured_output(args.verbose) as (_, log_path):
        log.info("round of %s, state %s; full log %s", cfg.name, state_root, log_path)
        code, result, started = EXIT_FAILED, None, True  # what an unforeseen exception leaves: a started round
        try:
            code, result, started = _run(args, cfg, state_root)
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM: the lease is released on the way here
            signum = _signal.get("signum", signal.SIGINT)
            code, result = EXIT_INTERRUPTED - signal.SIGINT + signum, (
                f"interrupted ({signal.Signals(signum).name}): the round stopped and released its lease; "
                "committed stages stay, and running the round again resumes it")
        finally:
            if started:
                log_path = console.keep_log(log_path, storage.join(state_root, LOGS_DIR, console.log_file_name()))
    if not started:  # refused: the message says why, and nothing, not even a log, is left behind
        os.remove(log_path)
        print(result, file=sys.stderr)
    elif isinstance(result, rounds.RoundOutcome):
        print(rounds.format_outcome(result, log_path))
    else:
        print(f"{result}\n  log: {log_path}", file=sys.stderr)
    return code


def _exit_on_sigterm() -> None:
    """SIGTERM (``ray job stop``, a pod shut down) ends the round as Ctrl-C does: the lease is
    released and the log kept. Only where nobody else handles it, or Ray does: ``ray.init``
    installs a handler that exits at once, without a word. Called again once Ray is up."""
    import threading

    def leave(signum: int, frame: Any) -> None:
        # As Ctrl-C: Ray's waits let a KeyboardInterrupt through (any other exception raised in a
        # signal handler comes out of them as a SystemError), and re-raise a plain one.
        _signal["signum"] = signum
        raise KeyboardInterrupt

    current = signal.getsignal(signal.SIGTERM)
    rays = callable(current) and getattr(current, "__module__", "").startswith("ray.")
    if threading.current_thread() is threading.main_thread() and (current == signal.SIG_DFL or rays):
        signal.signal(signal.SIGTERM, leave)


def _plan(args: argparse.Namespace, cfg: Any) -> int:
    """``--plan``: what each stage asks of the cluster; 0 when it fits, 2 when it cannot."""
    import ray

    from raysal.report import console
    from raysal.run import resources
    from raysal.run.cluster import init_ray

    started_ray = not ray.is_initialized()
    with console.captured_output(args.verbose) as (_, log_path):  # Ray's start-up lines go to the log
        try:
            init_ray(args.num_cpus)
            text, fits = resources.describe_plan(cfg)
        finally:
            if started_ray:
                ray.shutdown()
    os.remove(log_path)
    print(f"resource plan for {cfg.name}:\n{text}")
    return EXIT_OK if fits else EXIT_CONFIG


def _run(args: argparse.Namespace, cfg: Any, state_root: str) -> tuple[int, Any, bool]:
    """The round, inside the console capture: (exit code, the outcome or an error message,
    whether it started: took the lease, so that the state may have changed)."""
    import ray

    from raysal.errors import (
        Incompatible,
        LabelFileError,
        LeaseLost,
        Locked,
        ModelRefused,
        NothingToLabel,
        Refused,
        ResourceTimeout,
        SourceError,
        StateError,
        Unavailable,
        UnsafeStorage,
    )
    from raysal.run import preflight, rounds
    from raysal.run.cluster import init_ray

    started_ray = not ray.is_initialized()
    try:
        try:  # refusals: nothing is written
            init_ray(args.num_cpus)
            _exit_on_sigterm()  # again: ray.init replaced it
            preflight.check_cluster(cfg, state_root)
        except (Unavailable, Refused, SourceError) as exc:
            return refusal_code(exc), f"error: {exc}", False
        try:
            outcome = rounds.run_round(cfg, state_root, label_file=args.import_labels, break_lock=args.break_lock,
                                       **({"lease_ttl": args.lease_ttl} if args.lease_ttl else {}))
        except LeaseLost as exc:
            return EXIT_LEASE_LOST, f"error: {exc}", True
        except (LabelFileError, Incompatible, NothingToLabel, Locked, UnsafeStorage) as exc:
            return refusal_code(exc), f"error: {exc}", False  # decided before the lease: nothing was written
        except ModelRefused as exc:  # a published model's file changed since: refused before it was loaded
            return exc.exit_code, f"error: {exc}", True
        except ResourceTimeout as exc:  # the lease is released; what was committed stays
            return exc.exit_code, f"error: {exc}\n  (committed stages stay; running the round again resumes it)", True
        except (StateError, SourceError, Unavailable) as exc:  # the round had started: it may resume
            return EXIT_FAILED, f"error: {exc}\n  (running the round again resumes it)", True
        except Exception as exc:  # noqa: BLE001  (the traceback goes to the log; the console gets one line)
            traceback.print_exc()
            return EXIT_FAILED, (f"error: the round failed: {failure_line(exc)}"
                                 "\n  (the traceback is in the log; running the round again resumes it)"), True
    finally:
        if started_ray:
            ray.shutdown()  # inside the capture: Ray's goodbye lines go to the log
    return (EXIT_WAITING if outcome.status == rounds.WAITING else EXIT_OK), outcome, True
