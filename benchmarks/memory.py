"""memory: peak resident memory while scoring a pool and one ten times larger; flat if the
pipeline streams."""

from __future__ import annotations

import os
import shutil
import tempfile

from benchmarks.common import (
    PeakMemory,
    Row,
    mib,
    score_folder_config,
    score_to_parquet,
    write_checkpoint,
    write_image_folder,
)


def run(quick: bool, repeats: int) -> list[Row]:
    """Peak memory while scoring a pool and one 10x larger, once each (``repeats`` unused)."""
    small_n = 2_000 if quick else 10_000
    peaks = {}
    with tempfile.TemporaryDirectory() as tmp:
        _, checkpoint = write_checkpoint(tmp, "small_cnn", 32)
        for n in (small_n, 10 * small_n):
            root = os.path.join(tmp, f"pool-{n}")
            write_image_folder(root, n, 32)
            cfg = score_folder_config(root, "small_cnn", 32, 256)
            out = os.path.join(tmp, f"scores-{n}")
            with PeakMemory().measure() as mem:
                score_to_parquet(cfg, checkpoint, out)
            peaks[n] = mem
            shutil.rmtree(root)
    small, large = peaks[small_n], peaks[10 * small_n]
    return [
        {"group": "memory", "name": f"peak RSS, driver: {10 * small_n:,} vs {small_n:,} images", "unit": "MiB",
         "raysal": mib(large.peak_driver), "baseline": mib(small.peak_driver),
         "ratio": round(large.peak_driver / small.peak_driver, 3), "notes": "target < 1.10"},
        {"group": "memory", "name": f"peak RSS, driver + Ray workers: {10 * small_n:,} vs {small_n:,} images",
         "unit": "MiB", "raysal": mib(large.peak_total), "baseline": mib(small.peak_total),
         "ratio": round(large.peak_total / small.peak_total, 3),
         "notes": "sum of RSS (shared object-store pages counted per process); target < 1.10"},
    ]
