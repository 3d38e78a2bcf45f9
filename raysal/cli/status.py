"""``raysal status``: a run's rounds, its lease and its latest model, read from its state."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Sequence

from raysal.cli import common
from raysal.cli.common import exit_codes, parser_for, refused
from raysal.errors import EXIT_CONFIG, EXIT_OK

DESCRIPTION = """Print a run's state: each round (done, waiting for labels, or where it stopped), who holds
its lease, and its latest model.

    raysal status --state .raysal/demo
    raysal status --state s3://bucket/runs/flowers --json"""
EPILOG = exit_codes({EXIT_OK: "printed", EXIT_CONFIG: "bad arguments or config"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", default=None,
                        help="the run's state: a folder or a pyarrow.fs URI (default: .raysal/<config name>)")
    parser.add_argument("--config", default="demo",
                        help="the config whose name gives the state's folder when --state is not given")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=run)


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _figures(record: dict[str, Any], key: str) -> str:
    """``before -> after`` of the record's ``key``_before and ``key``_after."""
    return f"{_figure(record.get(key + '_before'))} -> {_figure(record.get(key + '_after'))}"


def print_status(report: dict[str, Any], as_json: bool) -> None:
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
        if r.get("cold_start"):
            split = r.get("split") or {}
            line += (f" by {r.get('seed_strategy')} (cold start), {r.get('labelled')} labelled: "
                     f"{split.get('labelled')} "
                     f"seed set, {split.get('val')} val, {split.get('test')} test")
        elif r["state"] == "done":  # a round recorded before the balanced figures were measured has n/a there
            line += (f", test accuracy {_figures(r, 'test_accuracy')}, balanced accuracy "
                     f"{_figures(r, 'test_balanced_accuracy')}, macro-F1 {_figures(r, 'test_macro_f1')}, "
                     f"on the selection before retraining {_figure(r.get('selection_accuracy_before'))}")
        if r.get("kappa") is not None:  # known once the round has selected, before its labels
            line += f", kappa {r['kappa']:.4f}" + (" (stop labelling)" if r.get("stop_labelling") else "")
        print(line)
    if report.get("report"):
        print(f"  report: {report['report']}")


def run(args: argparse.Namespace, prog: str) -> int:
    from raysal import storage
    from raysal.run.status import status

    state_root = common.state_root(args)
    if isinstance(state_root, int):
        return state_root
    if (code := refused(lambda: storage.probe({"--state": state_root}))) is not None:
        return code
    print_status(status(state_root), args.json)
    return EXIT_OK


def main(argv: Sequence[str] | None = None, prog: str = "raysal status") -> int:
    return run(parser_for(sys.modules[__name__], prog).parse_args(argv), prog)
