"""round: the wall time of two demo rounds, each ``jobs/round.py`` in a fresh process as a
scheduled job runs it, per stage, and what each spends outside its stages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks.common import REPO, Row


def run(quick: bool, repeats: int) -> list[Row]:
    """Round 1 trains the round-0 model (bootstrap) first; round 2 is what every later round
    costs. Each runs once (``repeats`` unused) and starts its own Ray."""
    job = str(REPO / "jobs" / "round.py")
    epochs = "train.finetune_epochs=3" if quick else "train.finetune_epochs=6"
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for number in (1, 2):
            start = time.perf_counter()
            subprocess.run([sys.executable, job, "--state", tmp, "--set", epochs], check=True, capture_output=True,
                           text=True)
            total = time.perf_counter() - start
            with open(os.path.join(tmp, "rounds", f"{number:04d}", "round.json")) as f:
                seconds = json.load(f)["stage_seconds"]
            name = "demo round 1" if number == 1 else "demo round 2 (round-0 model present)"
            rows += [{"group": "round", "name": f"{name}: {stage}", "unit": "s", "raysal": sec,
                      "baseline": round(total, 1), "ratio": round(sec / total, 3),
                      "notes": "share of the whole job's wall time"} for stage, sec in seconds.items()]
            outside = total - sum(seconds.values())
            rows.append({"group": "round", "name": f"{name}: outside the stages (interpreter, imports, Ray start/stop)",
                         "unit": "s", "raysal": round(outside, 1), "baseline": round(total, 1),
                         "ratio": round(outside / total, 3), "notes": "share of the whole job's wall time"})
    return rows
