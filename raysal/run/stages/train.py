"""The train stage, and round 0's bootstrap: a model trained with Ray Train on the seed set and
every label so far, published whole into the state."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np
import ray
import ray.data
from numpy.typing import NDArray

from raysal.data.decode import decode, labelled_images
from raysal.report import progress
from raysal.report.metrics import TEST_METRICS_FILE
from raysal.run import resources
from raysal.run.context import DONE, Round, timed_stage
from raysal.run.state import TRAIN_DIR, train_cache_key


def keep_labelled(batch: dict[str, NDArray], labels_ref: ray.ObjectRef) -> dict[str, NDArray]:
    """Rows whose id has a label, with that label (pool rows labelled in earlier rounds)."""
    ids, values = ray.get(labels_ref)  # sorted ids, their labels
    pos = np.clip(np.searchsorted(ids, batch["image_id"]), 0, max(len(ids) - 1, 0))
    keep = (ids[pos] == batch["image_id"]) if len(ids) else np.zeros(len(batch["image_id"]), bool)
    out = {name: column[keep] for name, column in batch.items()}
    out["label"] = values[pos[keep]]
    return out


def train(r: Round, train_ds: ray.data.Dataset, max_rows: int, init_model: int | None,
          output_model: int) -> tuple[dict[str, Any], int]:
    """Train, publish the model; return the last epoch's metrics and the number of training images.

    ``max_rows`` bounds the images in ``train_ds`` (the rows of its sources): it decides whether the
    decoded set waits between epochs in Ray's object store or in a cache in the state (``trainset``).
    """
    from raysal.model import train as train_lib  # TensorFlow and Ray Train load only when a model is trained
    from raysal.model import trainset

    val_ds = decode(r.source(r.cfg.data.val), r.cfg).map_batches(labelled_images, batch_format="numpy")
    test, test_size = r.sized_source(r.cfg.data.test)
    test_ds = None
    if test_size * r.cfg.model.input_size ** 2 * 3 <= r.cfg.train.in_memory_mb * 2**20:
        test_ds = decode(test, r.cfg).map_batches(labelled_images, batch_format="numpy")
        # Read by rank 0 as training ends: its progress bars would reach the driver after the round.
        test_ds.context.enable_progress_bars = False
        test_ds = test_ds.materialize()  # decoded now, beside the training set, not by rank 0 alone
        test_ds.context.enable_progress_bars = False
    cache_uri = r.state.uri(train_cache_key(output_model))  # beside Ray Train's own folders
    with trainset.prepare_train_set(train_ds, max_rows, r.cfg, cache_uri, guard=r.state.guard) as decoded, \
            tempfile.TemporaryDirectory(prefix="raysal-model-") as tmp, \
            progress.watch(r.board, "training") as board:
        train_size = decoded.count  # decoded once, not once per epoch, and counted as it was kept
        workers = train_lib.workers_for(r.cfg.train, train_size)  # Ray Train waits for them without a word
        resources.wait_for("train", resources.stage_asks(r.cfg, "train", workers), r.cfg.train.resource_timeout_s,
                           "train.resource_timeout_s")
        result = train_lib.train_model(
            r.cfg, decoded.dataset, val_ds.materialize(),
            output_dir=os.path.join(tmp, "model"), storage_path=r.state.uri(TRAIN_DIR),
            run_name=f"model-{output_model:04d}",
            init_uri=None if init_model is None else r.model_uri(init_model), board=board,
            label="bootstrap" if output_model == 0 else "train", train_size=train_size, test_ds=test_ds)
        r.state.publish_dir(result.model_dir, r.state.model_key(output_model))
        if result.test_metrics is not None:  # what test_accuracy would compute, computed by training
            r.state.write_json(f"{r.state.model_key(output_model)}/{TEST_METRICS_FILE}", result.test_metrics)
    return result.metrics, train_size


def seed_images(r: Round) -> tuple[ray.data.Dataset, int]:
    """The decoded, labelled seed set, and the rows of its source (a bound on its size)."""
    seed, size = r.sized_source(r.cfg.data.labelled)
    return decode(seed, r.cfg).map_batches(labelled_images, batch_format="numpy"), size


def bootstrap(r: Round) -> None:
    """Round 0: train the first model on the labelled seed set, unless it exists."""
    if r.state.latest_model() is not None:
        return
    with timed_stage("bootstrap", r.seconds):  # its last epoch line gives the round-0 model's val accuracy
        seed, seed_size = seed_images(r)
        train(r, seed, seed_size, init_model=None, output_model=0)


def stage_train(r: Round, label_file: str | None) -> str:
    labelled = r.state.labels(up_to=r.number)
    order = np.argsort(labelled["image_id"].to_numpy())
    ids_and_labels = (labelled["image_id"].to_numpy()[order], labelled["label"].to_numpy()[order])
    pool_labelled = r.source(r.cfg.data.pool).map_batches(
        keep_labelled, fn_kwargs={"labels_ref": ray.put(ids_and_labels)}, batch_format="numpy")
    seed, seed_size = seed_images(r)
    train_ds = seed.union(decode(pool_labelled, r.cfg).map_batches(labelled_images, batch_format="numpy"))
    metrics, train_size = train(r, train_ds, seed_size + len(order), init_model=r.number - 1, output_model=r.number)
    r.state.commit_stage(r.number, "train", {"model": r.number, "train_size": int(train_size),
                                             "metrics": metrics})
    return DONE
