"""Model-only InceptionV3 299x299 images/s on one GPU, through Keras 3 on any backend.

    KERAS_BACKEND=jax python jobs/gpu_probe.py --out gpu.json

For GPU machines without raysal's own stack (TensorFlow with CUDA 12): it tells what the GPU
does for the model raysal scores with, so decode CPUs can be sized against it (`jobs/bench.py
--only decode` gives images/s per core). Same architecture as raysal's `inception_v3` model
(random weights, 5 classes), uint8 batches in and probabilities out, timed host to host.
`python jobs/bench.py` measures raysal itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

import numpy as np

CASES = (("float32", 128), ("float32", 256), ("mixed_bfloat16", 256))  # (Keras dtype policy, batch size)


def images_per_second(policy: str, batch_size: int, steps: int) -> tuple[float, float]:
    """(images/s over ``steps`` batches, seconds of the first call: tracing and compiling)."""
    import keras

    keras.mixed_precision.set_global_policy(policy)
    backbone = keras.applications.InceptionV3(weights=None, input_shape=(299, 299, 3), classes=5)
    model = keras.Sequential([keras.Input((299, 299, 3), dtype="uint8"),
                              keras.layers.Rescaling(1 / 127.5, offset=-1.0), backbone])
    batch = np.random.default_rng(0).integers(0, 256, (batch_size, 299, 299, 3), dtype=np.uint8)
    start = time.perf_counter()
    model.predict_on_batch(batch)
    first = time.perf_counter() - start
    for _ in range(3):
        model.predict_on_batch(batch)
    start = time.perf_counter()
    for _ in range(steps):
        model.predict_on_batch(batch)  # returns numpy: every step waits for the GPU
    return steps * batch_size / (time.perf_counter() - start), first


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs/gpu_probe.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed batches per case")
    parser.add_argument("--batch-size", type=int, default=None, help="one float32 case of this batch size")
    parser.add_argument("--out", default="gpu_probe.json", help="where to write the JSON results")
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    report = {"keras": keras.__version__, "backend": keras.backend.backend(), "results": []}
    for policy, batch_size in ((("float32", args.batch_size),) if args.batch_size else CASES):
        rate, first = images_per_second(policy, batch_size, args.steps)
        report["results"].append({"policy": policy, "batch_size": batch_size, "images_per_s": round(rate, 1),
                                  "first_call_s": round(first, 1)})
        print(f"InceptionV3 299x299, {policy}, batch {batch_size}: {rate:,.0f} images/s "
              f"(first call {first:.1f} s)", flush=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
