"""``import raysal`` and the ``raysal`` command: what a notebook and a shell see."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from _jobs import copy_state

REPO = Path(__file__).resolve().parents[1]
RAYSAL = str(Path(sys.executable).parent / "raysal")  # the console script, installed with the project


def raysal(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([RAYSAL, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_raysal_status_reads_a_run(waiting_state, tmp_path):
    state = copy_state(waiting_state, tmp_path / "state", keep_rounds=True)
    done = raysal("status", "--state", str(state), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [r["state"] for r in report["rounds"]] == ["waiting for labels"]
    assert report["latest_model"] == str(state / "models" / "0000")


def test_import_raysal_exposes_the_api_and_loads_neither_ray_nor_tensorflow():
    code = ("import sys, raysal\n"
            "names = [n for n in raysal.__all__ if callable(getattr(raysal, n))]\n"
            "print(names, sorted(m for m in ('ray', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "['load_config', 'run_round', 'status', 'score', 'select'] []"


NOTEBOOK = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf                 # first, as a notebook may: tf.keras is Keras 3 here
    assert tf.keras.version().startswith("3.")
    import raysal
    from raysal.model import models
    from raysal.config import ModelConfig

    state, checkpoint = sys.argv[1], sys.argv[2]
    cfg = raysal.load_config("demo", {"data.test.rows": "500:564", "score.batch_size": 16,
                                      "select.criterion": "smallest_margin"})
    model = models.build_model(ModelConfig(kind="small_cnn", input_size=32), len(cfg.data.classes))
    models.save_checkpoint(model, checkpoint, ModelConfig(kind="small_cnn", input_size=32), cfg.data.classes)
    scores = raysal.score(cfg, checkpoint, source="test", state=state)
    chosen = raysal.select(scores, budget=5, exclude_ids=[int(scores["image_id"].iloc[0])])
    print("RESULT", json.dumps({"ids": scores["image_id"].tolist(), "scores": scores["score"].tolist(),
                                "errors": scores["error"].tolist(), "chosen": chosen["image_id"].tolist(),
                                "ranks": chosen["rank"].tolist()}))
""")


@pytest.mark.timeout(300)
def test_a_notebook_that_imported_tensorflow_first_scores_and_selects(tmp_path):
    out = subprocess.run([sys.executable, "-c", NOTEBOOK, str(tmp_path / "state"), str(tmp_path / "model")],
                         capture_output=True, text=True, timeout=280, cwd=tmp_path,
                         env={k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert len(result["ids"]) == 64 and set(result["errors"]) == {""}
    ids, scores = np.array(result["ids"]), np.array(result["scores"])
    assert ((0 <= scores) & (scores <= 1)).all()  # 1 - (p1 - p2): higher = less sure
    eligible = [i for i in np.lexsort((ids, -scores)) if ids[i] != result["ids"][0]]  # score desc, id asc
    assert result["chosen"] == [int(ids[i]) for i in eligible[:5]] and result["ranks"] == [1, 2, 3, 4, 5]
