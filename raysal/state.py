"""The run's state on disk: what each round selected, its reports, and the model checkpoints.

Layout under the state root::

    models/0000/              round-0 model trained on the labelled seed set
    rounds/0001/scores/       every pool image's score (Parquet, written by Ray)
    rounds/0001/selection.parquet   image_id, uri, score, predicted, rank
    rounds/0001/skipped.parquet     image_id, uri, reason
    rounds/0001/round.json    written last: a round is committed once this file exists
    train/                    Ray Train's run storage

Every file is written to a temporary name and renamed, so it is either whole or absent.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

ROUND_FILE = "round.json"
SELECTION_FILE = "selection.parquet"
SKIPPED_FILE = "skipped.parquet"
SCORES_DIR = "scores"


def round_dir(state: str, number: int) -> str:
    return os.path.join(state, "rounds", f"{number:04d}")


def model_dir(state: str, number: int) -> str:
    return os.path.join(state, "models", f"{number:04d}")


def _tmp(path: str) -> str:
    return f"{path}.tmp-{os.getpid()}"


def write_json(path: str, data: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(_tmp(path), "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(_tmp(path), path)


def write_table(path: str, table: pa.Table) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, _tmp(path))
    os.replace(_tmp(path), path)


def replace_dir(tmp_dir: str, final_dir: str) -> None:
    """Move a fully written folder into place, replacing any stale partial one."""
    shutil.rmtree(final_dir, ignore_errors=True)
    os.replace(tmp_dir, final_dir)


def committed_rounds(state: str) -> list[dict[str, Any]]:
    """The ``round.json`` of every committed round, in round order."""
    rounds_root = os.path.join(state, "rounds")
    if not os.path.isdir(rounds_root):
        return []
    out = []
    for name in sorted(os.listdir(rounds_root)):
        path = os.path.join(rounds_root, name, ROUND_FILE)
        if name.isdigit() and os.path.isfile(path):
            with open(path) as f:
                out.append(json.load(f))
    return out


def latest_model(state: str) -> str | None:
    root = os.path.join(state, "models")
    if not os.path.isdir(root):
        return None
    done = sorted(n for n in os.listdir(root) if n.isdigit() and os.path.isfile(os.path.join(root, n, "model.json")))
    return os.path.join(root, done[-1]) if done else None


def selected_ids(state: str) -> NDArray[np.int64]:
    """Every image_id selected by a committed round: never to be selected again."""
    parts = [pq.read_table(os.path.join(round_dir(state, r["round"]), SELECTION_FILE), columns=["image_id"])
             ["image_id"].to_numpy() for r in committed_rounds(state)]
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)


def status(state: str) -> dict[str, Any]:
    """The state as plain data, for ``--status --json``."""
    rounds = [{"round": r["round"], "criterion": r["criterion"], "budget": r["budget"], "selected": r["selected"],
               "pool_size": r["pool_size"], "skipped": r["skipped"], "model": r["model"],
               "selection": os.path.join(round_dir(state, r["round"]), SELECTION_FILE),
               "skipped_report": os.path.join(round_dir(state, r["round"]), SKIPPED_FILE),
               "finished_at": r["finished_at"]} for r in committed_rounds(state)]
    return {"state": os.path.abspath(state), "rounds": rounds, "latest_model": latest_model(state)}
