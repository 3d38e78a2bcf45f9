"""``raysal simulate``: simulated learning curves, how many labels active learning saves on a
labelled pool (``raysal.simulation``). ``python jobs/simulate.py`` is this command."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING, Any, Callable, Sequence

from raysal.cli.common import exit_codes, failure_line, parser_for, refusal_code, refused
from raysal.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_MISSING, EXIT_OK, ConfigError

if TYPE_CHECKING:
    from raysal.config import Config
    from raysal.simulation import Settings

DESCRIPTION = """Simulated learning curves: how many labels active learning saves on a labelled pool.

    raysal simulate                                   # the demo: 4 strategies, 5 seeds, 8 rounds
    raysal simulate --budget 90 --out runs/sim-large  # larger batches
    raysal simulate --imbalance 10 --strategies random,margin,class_balanced  # a long-tailed pool

The pool's own labels are the oracle. Per seed, a round-0 model is trained on a random seed set;
its backbone is then frozen and each round retrains only the head on cached embeddings (the fast
path, said so in the results). Writes simulation.json, simulation.png and the engines'
simulation.log to --out."""
EPILOG = exit_codes({EXIT_OK: "done", EXIT_FAILED: "the simulation failed (the log has the traceback)",
                     EXIT_CONFIG: "bad arguments or config (an unknown strategy, more images to label than the pool "
                                  "has, or than --imbalance keeps of it, ...); nothing was run",
                     EXIT_MISSING: "data or model missing (the message says how to provide it)"})
log = logging.getLogger("raysal")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from raysal.simulation import STRATEGIES, Settings

    d = Settings()
    p.add_argument("--config", default="demo", help="a preset or a .toml file: its data, model, train.batch_size, "
                   "train.finetune_learning_rate (round 0), select.beta, select.candidates and seed")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set select.candidates=8")
    p.add_argument("--state", default=None, help="where data.root defaults to <state>/data (default .raysal/<name>)")
    p.add_argument("--strategies", default=",".join(d.strategies), help=f"comma list of {', '.join(STRATEGIES)}")
    p.add_argument("--seeds", type=int, default=d.seeds, help="repeats, each with its own seed set and round-0 model")
    p.add_argument("--rounds", type=int, default=d.rounds, help="selections after round 0")
    p.add_argument("--seed-size", type=int, default=d.seed_size, help="labelled images before the first selection")
    p.add_argument("--budget", type=int, default=d.budget, help="images labelled per round")
    p.add_argument("--target", type=float, default=None, help="accuracy to reach (default: random's final mean)")
    p.add_argument("--round0-epochs", type=int, default=d.round0_epochs, help="round-0 model epochs on the seed set")
    p.add_argument("--head-steps", type=int, default=d.head_steps, help="full-batch Adam steps per head training")
    p.add_argument("--head-learning-rate", type=float, default=d.head_learning_rate)
    p.add_argument("--imbalance", type=float, default=d.imbalance, metavar="R",
                   help="subsample the pool long-tailed, the largest class R times the smallest (the test split "
                        "stays as it is; default 1: the pool as it is)")
    p.add_argument("--seed-strategy", default=d.seed_strategy, choices=("random", "typical"),
                   help="the seed set: drawn at random, or typical (TypiClust over the pool's features, as a cold "
                        "start's round 0 selects)")
    p.add_argument("--out", default="simulation", help="folder for simulation.json, simulation.png, simulation.log")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray (ignored on a cluster)")
    p.add_argument("-v", "--verbose", action="store_true", help="show Ray's and TensorFlow's output too")
    p.set_defaults(run=run)


def main(argv: Sequence[str] | None = None, prog: str = "raysal simulate") -> int:
    """``raysal simulate ARGS`` on its own (``python jobs/simulate.py``)."""
    return run(parser_for(sys.modules[__name__], prog).parse_args(argv), prog)


def run(args: argparse.Namespace, prog: str) -> int:
    from raysal import config as config_lib
    from raysal import simulation, storage
    from raysal.report import console, simulation_report
    from raysal.run import preflight

    try:
        cfg = config_lib.absolute_paths(config_lib.load_config(args.config, dict(
            config_lib.parse_override(o) for o in args.overrides)))
        settings = simulation.Settings(
            strategies=tuple(s.strip() for s in args.strategies.split(",") if s.strip()), seeds=args.seeds,
            rounds=args.rounds, seed_size=args.seed_size, budget=args.budget, target=args.target,
            round0_epochs=args.round0_epochs, head_steps=args.head_steps, head_learning_rate=args.head_learning_rate,
            imbalance=args.imbalance, seed_strategy=args.seed_strategy)
    except ConfigError as exc:  # the config's, or the simulation's settings
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if cfg.data.cold_start:
        print(f"error: {args.config}: a cold start's seed set, val and test are chosen by its round 0; a simulation "
              "needs a labelled pool and test split (the oracle). Simulate on a labelled config, with "
              "--seed-strategy typical to see what a cold start's seed set gives", file=sys.stderr)
        return EXIT_CONFIG
    state_root = storage.absolute(args.state or f".raysal/{cfg.name}")
    root = preflight.data_root(cfg, state_root)
    if (code := refused(lambda: preflight.check(cfg, state_root))) is not None:  # as for a round, before Ray
        return code

    def progress(result: dict, done: int, total: int, seconds: float) -> None:
        log.info("%d/%d seed %d %s: accuracy %.3f -> %.3f, balanced accuracy %.3f -> %.3f (%.1f s; %.0f s elapsed)",
                 done, total, result["seed"], result["strategy"], result["accuracy"][0], result["accuracy"][-1],
                 result["balanced_accuracy"][0], result["balanced_accuracy"][-1], result["seconds"], seconds)

    with console.captured_output(args.verbose) as (_, log_path):
        log.info("simulation of %s: %s; %d seeds, %d rounds, seed set %d, %d per round%s; full log %s", cfg.name,
                 ", ".join(settings.strategies), settings.seeds, settings.rounds, settings.seed_size,
                 settings.budget, "" if settings.imbalance == 1 else f", pool imbalance {settings.imbalance:g}",
                 log_path)
        code, message = _run(args, cfg, state_root, root, settings, progress)
        log_path = console.keep_log(log_path, storage.join(args.out, "simulation.log"))
    if code != EXIT_OK:
        print(f"{message}\n  log: {log_path}", file=sys.stderr)
        return code
    result, paths = message
    print(f"{simulation.FAST_PATH}.\n{simulation_report.pool_line(result)}.\n{simulation_report.round0_line(result)}.\n")
    print(simulation_report.format_table(result))
    print(f"\n{result['seconds']['total']:.0f} s; wrote {paths[0]}, {paths[1]}; log {log_path}")
    return EXIT_OK


def _run(args: argparse.Namespace, cfg: Config, state_root: str, root: str, settings: Settings,
         progress: Callable[[dict, int, int, float], None]) -> tuple[int, Any]:
    """The simulation, inside the console capture: (exit code, (result, paths) or an error message)."""
    import traceback

    import ray

    from raysal import simulation
    from raysal.errors import Refused, SourceError, Unavailable
    from raysal.report import simulation_report
    from raysal.run import preflight
    from raysal.run.cluster import init_ray

    started_ray = not ray.is_initialized()
    try:
        try:  # refusals: nothing has run
            init_ray(args.num_cpus)
            ray.data.DataContext.get_current().enable_progress_bars = False
            preflight.check_cluster(cfg, state_root)
            simulation.check_pool_size(cfg, root, settings)
        except (Unavailable, Refused, SourceError) as exc:  # the pool too small for the settings, too
            return refusal_code(exc), f"error: {exc}"
        try:
            result = simulation.simulate(cfg, root, settings, progress)
            return EXIT_OK, (result, simulation_report.write_results(result, args.out))
        except (Refused, ConfigError) as exc:  # the pool kept by --imbalance too small: refused before any task
            return refusal_code(exc), f"error: {exc}"
        except Exception as exc:  # noqa: BLE001  (the traceback goes to the log; the console gets one line)
            traceback.print_exc()
            return EXIT_FAILED, f"error: the simulation failed: {failure_line(exc)}"
    finally:
        if started_ray:
            ray.shutdown()  # inside the capture: Ray's goodbye lines go to the log

