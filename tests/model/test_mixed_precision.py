"""``score.mixed_precision`` (float16 compute) measured on what it may change: the selection.

The demo's round-0 model scores the whole digits set twice, in float32 and in mixed float16,
each in a process of its own (the Keras policy is process-wide). Float16 moves each score by
up to its rounding error; the top-k may change only among images whose float32 scores lie within
that error of the cut-off (ties at float16's resolution), never beyond.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(300)

_SCORE = """
import json, sys
import numpy as np, pyarrow.parquet as pq
from raysal.data.decode import decode_batch
from raysal.model.scorer import Scorer
model_dir, manifest, mixed = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
table = pq.read_table(manifest).to_pydict()
batch = {"image_id": np.asarray(table["image_id"]), "uri": np.asarray(table["uri"], dtype=object),
         "label": np.asarray(table["label"], dtype=np.float64)}
scorer = Scorer(model_dir, "least_confidence", 0, batch_size=64, top_probs=3, mixed_precision=mixed)
scored = scorer(decode_batch(batch, 32))
assert (scored["error"] == "").all()
print(json.dumps([scored["image_id"].tolist(), scored["score"].astype(float).tolist()]))
"""


def _scores(model: str, manifest: str, mixed: bool) -> tuple[np.ndarray, np.ndarray]:
    done = subprocess.run([sys.executable, "-c", _SCORE, model, manifest, "1" if mixed else "0"],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    ids, scores = json.loads(done.stdout.strip().splitlines()[-1])
    return np.asarray(ids), np.asarray(scores)


def test_mixed_precision_changes_the_top_k_only_among_ties_at_float16_resolution(waiting_state):
    model = str(waiting_state / "models" / "0000")
    manifest = str(waiting_state / "data" / "digits" / "manifest.parquet")
    ids, full = _scores(model, manifest, mixed=False)
    ids16, half = _scores(model, manifest, mixed=True)
    assert (ids == ids16).all() and len(ids) > 1000
    error = np.abs(half - full).max()  # [n] moved by float16 compute
    assert 0 < error < 0.01, error  # it did compute in float16 (scores moved), by rounding, not by a bug
    for budget in (40, 100, 500):
        order_full, order_half = np.argsort(-full, kind="stable"), np.argsort(-half, kind="stable")
        top_full, top_half = set(order_full[:budget]), set(order_half[:budget])
        cut = full[order_full[budget - 1]]
        changed = top_full ^ top_half
        # Every image that changed sides lies within twice the largest float16 error of the cut-off.
        assert all(abs(full[i] - cut) <= 2 * error for i in changed), (budget, error, sorted(changed))
        print(f"budget {budget}: {len(top_full & top_half)}/{budget} kept, {len(changed) // 2} swapped at the "
              f"cut-off; largest score change {error:.2e}")
