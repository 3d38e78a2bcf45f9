"""Simulated learning curves: how many labels active learning saves on a labelled pool.

    python jobs/simulate.py                                   # the demo: 4 strategies, 5 seeds, 8 rounds
    python jobs/simulate.py --budget 90 --out runs/sim-large  # larger batches

The pool's own labels are the oracle. Per seed, a round-0 model is trained on a random seed set;
its backbone is then frozen and each round retrains only the head on cached embeddings (the fast
path, said so in the results). Writes ``simulation.json`` and ``simulation.png`` to ``--out``.
Exit codes: 0 done, 1 failed, 2 bad arguments or config.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from typing import Sequence

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
log = logging.getLogger("raysal")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from raysal.simulation import STRATEGIES, Settings

    d = Settings()
    p = argparse.ArgumentParser(prog="jobs/simulate.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="demo", help="a preset or a .toml file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set data.test.rows='\"500:700\"'")
    p.add_argument("--state", default=None, help="where data.root defaults to <state>/data (default .raysal/<name>)")
    p.add_argument("--strategies", default=",".join(d.strategies), help=f"comma list of {', '.join(STRATEGIES)}")
    p.add_argument("--seeds", type=int, default=d.seeds, help="repeats, each with its own seed set and round-0 model")
    p.add_argument("--rounds", type=int, default=d.rounds, help="selections after round 0")
    p.add_argument("--seed-size", type=int, default=d.seed_size, help="labelled images before the first selection")
    p.add_argument("--budget", type=int, default=d.budget, help="images labelled per round")
    p.add_argument("--candidates", type=int, default=d.candidates, help="diversity: candidates x budget to pick among")
    p.add_argument("--target", type=float, default=None, help="accuracy to reach (default: random's final mean)")
    p.add_argument("--round0-epochs", type=int, default=d.round0_epochs, help="round-0 model epochs on the seed set")
    p.add_argument("--round0-learning-rate", type=float, default=d.round0_learning_rate)
    p.add_argument("--head-steps", type=int, default=d.head_steps, help="full-batch Adam steps per head training")
    p.add_argument("--head-learning-rate", type=float, default=d.head_learning_rate)
    p.add_argument("--dropout", type=float, default=d.dropout, help="before the head")
    p.add_argument("--out", default="simulation", help="folder for simulation.json, simulation.png, simulation.log")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray (ignored on a cluster)")
    p.add_argument("-v", "--verbose", action="store_true", help="show Ray's and TensorFlow's output too")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from raysal import config as config_lib
    from raysal import console, preflight, simulation, storage

    try:
        cfg = config_lib.absolute_paths(config_lib.load_config(args.config, dict(
            config_lib.parse_override(o) for o in args.overrides)))
        settings = simulation.Settings(
            strategies=tuple(s.strip() for s in args.strategies.split(",") if s.strip()), seeds=args.seeds,
            rounds=args.rounds, seed_size=args.seed_size, budget=args.budget, candidates=args.candidates,
            target=args.target, round0_epochs=args.round0_epochs, round0_learning_rate=args.round0_learning_rate,
            head_steps=args.head_steps, head_learning_rate=args.head_learning_rate, dropout=args.dropout)
    except ValueError as exc:  # ConfigError is one
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    root = preflight.data_root(cfg, storage.absolute(args.state or f".raysal/{cfg.name}"))

    def progress(result: dict, done: int, total: int, seconds: float) -> None:
        log.info("%d/%d seed %d %s: accuracy %.3f -> %.3f (%.1f s; %.0f s elapsed)", done, total, result["seed"],
                 result["strategy"], result["accuracy"][0], result["accuracy"][-1], result["seconds"], seconds)

    with console.captured_output(args.verbose) as (_, log_path):
        log.info("simulation of %s: %s; %d seeds, %d rounds, seed set %d, %d per round; full log %s", cfg.name,
                 ", ".join(settings.strategies), settings.seeds, settings.rounds, settings.seed_size,
                 settings.budget, log_path)
        import ray

        from raysal.cluster import init_ray

        try:
            init_ray(args.num_cpus)
            ray.data.DataContext.get_current().enable_progress_bars = False
            result = simulation.simulate(cfg, root, settings, progress)
            paths = simulation.write_results(result, args.out)
            error = None
        except Exception as exc:  # noqa: BLE001  (the traceback goes to the log; the console gets one line)
            import traceback

            traceback.print_exc()
            error = f"error: the simulation failed: {type(exc).__name__}: {str(exc).strip().splitlines()[-1:]}"
        finally:
            ray.shutdown()  # inside the capture: Ray's goodbye lines go to the log
    kept_log = os.path.join(args.out, "simulation.log")
    os.makedirs(args.out, exist_ok=True)
    shutil.move(log_path, kept_log)
    if error:
        print(f"{error}\n  log: {kept_log}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{simulation.FAST_PATH}.\n")
    print(simulation.format_table(result))
    print(f"\n{result['seconds']['total']:.0f} s; wrote {paths[0]}, {paths[1]}; log {kept_log}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
