"""The benchmarks' results written out: a JSON file, and a markdown table for the console and the README."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from typing import Any

import psutil


def machine() -> str:
    """The machine in a few words: architecture, CPUs, memory."""
    return f"{platform.machine()}, {psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB"


def make_report(rows: list[dict[str, Any]], quick: bool, repeats: int, seconds: float) -> dict[str, Any]:
    """The rows of one run with when, where and how they were measured."""
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
            "python": platform.python_version(), "quick": quick, "repeats": repeats,
            "seconds": round(seconds, 1), "results": rows}


def write_report(report: dict[str, Any], path: str) -> None:
    """``report`` as indented JSON at ``path``, its folder made if missing."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)


def markdown_table(report: dict[str, Any]) -> str:
    """The report's rows as a markdown table under a line naming the machine and the run.
    Ratio > 1 means raysal is faster than the baseline."""
    lines = [f"Machine: {report['machine']}; {report['date']}; repeats {report['repeats']}"
             f"{' (quick)' if report['quick'] else ''}", "",
             "| benchmark | unit | raysal | baseline | ratio (>1: raysal faster) | notes |",
             "|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['name']} | {r['unit']} | {r['raysal']} | {r['baseline']} | {r['ratio']} | {r['notes']} |")
    return "\n".join(lines)
