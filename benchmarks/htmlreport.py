"""htmlreport: ``raysal report`` of a 10-round run with 1,000 images selected a round, the first
time (every thumbnail made, on the driver's threads or on Ray) and again (thumbnails cached),
against the least a hand-written report does: one PIL thumbnail per selected image.

The run is written as rounds write it (records, stage markers, selections, the latest model's
test metrics), over a folder of JPEG photos; nothing is trained.
"""

from __future__ import annotations

import io
import os
import tempfile
import time

import numpy as np
import pyarrow as pa

from benchmarks.common import CLASSES, Row, median_seconds, write_image_folder


def write_run(root: str, rounds: int, selected: int, side: int) -> list[str]:
    """A state of ``rounds`` done rounds of ``selected`` images each, over JPEGs of ``side`` px,
    in the layout ``raysal.run.state`` reads; every selected image's path."""
    from raysal.config import load_config
    from raysal.report.metrics import accuracy_report
    from raysal.run.state import STAGES, RunState

    paths = write_image_folder(os.path.join(root, "pool"), rounds * selected, side)
    cfg = load_config("demo", {"data.classes": CLASSES, "select.budget": selected, "name": "bench",
                               "data.pool.kind": "folder", "data.pool.path": os.path.join(root, "pool")})
    state = RunState(os.path.join(root, "state"))
    rng = np.random.default_rng(0)
    for number in range(1, rounds + 1):
        files = state.files(number)
        state.write_json(files.config, cfg.to_dict())
        first = (number - 1) * selected
        state.write_table(files.selection, pa.table({
            "image_id": pa.array(range(first, first + selected), pa.int64()),
            "uri": paths[first:first + selected], "score": rng.random(selected),
            "predicted": pa.array(rng.integers(0, len(CLASSES), selected), pa.int64()),
            "rank": pa.array(range(1, selected + 1), pa.int64())}))
        state.write_table(files.skipped, pa.table({"image_id": pa.array([], pa.int64()),
                                                   "uri": pa.array([], pa.string()),
                                                   "reason": pa.array([], pa.string())}))
        for stage in STAGES:
            state.write_json(files.stage(stage), {"stage": stage, "train_size": 300 + number * selected})
        labels = rng.integers(0, len(CLASSES), 500)
        predicted = np.where(rng.random(500) < 0.5 + number / (2 * rounds), labels, rng.integers(0, len(CLASSES), 500))
        test = accuracy_report(predicted, labels, CLASSES)
        state.write_json(files.record, {
            "round": number, "selected": selected, "labelled_total": 300 + number * selected, "skipped": 0,
            "test_accuracy_before": test["accuracy"] - 0.01, "test_accuracy_after": test["accuracy"],
            "test_balanced_accuracy_before": test["balanced_accuracy"] - 0.01,
            "test_balanced_accuracy_after": test["balanced_accuracy"], "test_macro_f1_before": test["macro_f1"],
            "test_macro_f1_after": test["macro_f1"], "selection_accuracy_before": 0.4,
            "test_per_class_after": test["per_class"], "kappa": 0.8 + number / (10 * rounds),
            "stage_seconds": {stage: 1.0 for stage in STAGES}})
        state.write_json(f"{state.model_key(number)}/test_metrics.json", test)
        state.write_json(f"{state.model_key(number)}/_published.json", {"files": {}})
    return paths


def pil_thumbnails(paths: list[str]) -> int:
    """The baseline: each image opened, shrunk to 96 px and saved as JPEG, in one process."""
    from PIL import Image

    total = 0
    for path in paths:
        with Image.open(path) as img:
            img.draft("RGB", (96, 96))
            img = img.convert("RGB")
            img.thumbnail((96, 96))
            out = io.BytesIO()
            img.save(out, "JPEG", quality=85)
            total += out.tell()
    return total


def run(quick: bool, repeats: int) -> list[Row]:
    from raysal.run import report
    from raysal.run.state import RunState
    from raysal.run.thumbnails import FILE

    rounds, selected, side = (3, 300, 256) if quick else (10, 1000, 512)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_run(tmp, rounds, selected, side)
        state = RunState(os.path.join(tmp, "state"))
        t_base, _ = median_seconds(lambda: pil_thumbnails(paths), repeats)

        def first() -> float:
            for number in range(1, rounds + 1):
                cached = os.path.join(tmp, "state", "rounds", f"{number:04d}", FILE)
                if os.path.exists(cached):
                    os.remove(cached)
            start = time.perf_counter()
            report.write(state)
            return time.perf_counter() - start

        t_first = float(np.median([first() for _ in range(repeats)]))
        t_again, index = median_seconds(lambda: report.write(state), repeats)
        size = sum(os.path.getsize(os.path.join(os.path.dirname(index), f)) for f in os.listdir(os.path.dirname(index)))
    what = f"{rounds} rounds x {selected} selected JPEGs of {side}px"
    return [
        {"group": "htmlreport", "name": f"the report of {what}, the first time (thumbnails made) vs PIL thumbnails "
                                         "alone", "unit": "s", "raysal": round(t_first, 2),
         "baseline": round(t_base, 2), "ratio": round(t_base / t_first, 2),
         "notes": f"selections over 256 images decode on Ray; {size / 2**20:.1f} MiB of pages"},
        {"group": "htmlreport", "name": f"the report of {what} again (thumbnails cached) vs PIL thumbnails alone",
         "unit": "s", "raysal": round(t_again, 2), "baseline": round(t_base, 2), "ratio": round(t_base / t_again, 2),
         "notes": "what every round's end pays once its own thumbnails exist"},
    ]
