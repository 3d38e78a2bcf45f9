"""Training across Ray Train workers: ``TensorflowTrainer`` + ``MultiWorkerMirroredStrategy``.

Two phases, as in the article: the head with the backbone frozen, then the whole model
fine-tuned at a lower learning rate. Every rank saves the weights (the strategy's collective ops
need all ranks); rank 0's copy is reported as the Ray Train checkpoint and returned. A small
training set gets one worker (``workers_for``), which runs without collective ops, and is held in
each worker's memory for all epochs. The K heads of ``model.heads`` train together in each worker,
on one backbone pass per image, each member on its own cross-entropy (``models.training_view``);
the accuracy reported is their average's, the model's output.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from raysal.model import keras_env  # noqa: F401  (first: it sets up Keras 2 before TensorFlow loads)

# isort: split
import ray.data
import ray.train
from ray.train import Checkpoint, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.tensorflow import TensorflowTrainer

from raysal.config import Config, ModelConfig, TrainConfig
from raysal.report.metrics import TEST_METRICS_FILE

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class TrainResult:
    model_dir: str  # the checkpoint folder (model.json + weights.h5)
    metrics: dict[str, float]  # the last epoch's loss/accuracy and val_loss/val_accuracy
    test_metrics: dict[str, Any] | None = None  # metrics.accuracy_report on the test split, when given one


def _phases(train: TrainConfig) -> list[tuple[str, bool, float, int]]:
    """(name, backbone trainable, learning rate, epochs) for each phase that has epochs."""
    phases = [("head", False, train.head_learning_rate, train.head_epochs),
              ("finetune", True, train.finetune_learning_rate, train.finetune_epochs)]
    return [p for p in phases if p[3] > 0]


def _train_loop(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    keras_env.use_legacy_keras()
    import tensorflow as tf
    import tf_keras as keras

    from raysal import storage
    from raysal.model import models
    from raysal.model.embeddings import check_files

    keras_env.share_gpus()  # a train worker may share its GPU with a fractional scoring actor

    model_cfg = ModelConfig(**loop_config["model"])
    train_cfg = TrainConfig(**loop_config["train"])
    classes = loop_config["classes"]
    keras.utils.set_random_seed(loop_config["seed"])  # this worker process only
    context = ray.train.get_context()
    rank0 = context.get_world_rank() == 0
    # One worker needs no collective ops: the default strategy saves their set-up and every
    # step's all-reduce.
    strategy = (tf.distribute.MultiWorkerMirroredStrategy() if context.get_world_size() > 1
                else tf.distribute.get_strategy())
    with strategy.scope():
        model = models.build_model(model_cfg, len(classes))
        if loop_config["init_uri"]:  # read on this worker's node: the driver's disk may be another machine's
            with storage.local_copy(loop_config["init_uri"]) as init_dir:
                check_files(init_dir, [models.WEIGHTS_FILE])
                model.load_weights(os.path.join(init_dir, models.WEIGHTS_FILE))
        # model.heads > 1: each member fits its own loss through a view of the same layers
        fit_model, loss, accuracy = models.training_view(model)

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF  # Ray shards

    def shard(name: str, shuffle: bool) -> tf.data.Dataset:
        if loop_config["in_memory"]:  # read once; every epoch reuses it
            images, labels = _arrays(ray.train.get_dataset_shard(name))
            ds = tf.data.Dataset.from_tensor_slices((images, labels))
            if shuffle:
                ds = ds.shuffle(max(len(labels), 1), seed=loop_config["seed"], reshuffle_each_iteration=True)
            ds = ds.batch(train_cfg.batch_size).prefetch(tf.data.AUTOTUNE)
        else:
            ds = ray.train.get_dataset_shard(name).to_tf(
                "image", "label", batch_size=train_cfg.batch_size,
                local_shuffle_buffer_size=4 * train_cfg.batch_size if shuffle else None,
                local_shuffle_seed=loop_config["seed"] if shuffle else None)
        return ds.with_options(options)

    total = loop_config["total_epochs"]
    board = loop_config["board"]
    train_ds, val_ds = shard("train", shuffle=True), shard("val", shuffle=False)  # re-iterated each epoch
    metrics: dict[str, Any] = {}
    history: list[dict[str, Any]] = []  # every epoch's figures, reported with the last (a tracker's history)

    class ReportEpoch(keras.callbacks.Callback):
        def __init__(self, phase: str) -> None:
            super().__init__()
            self.phase = phase

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            metrics.clear()
            metrics.update({k: float(v) for k, v in (logs or {}).items()}, epoch=epoch + 1, phase=self.phase)
            history.append(dict(metrics))
            if rank0:  # one line per epoch, shown by the driver
                line = (f"{loop_config['label']}: {self.phase} epoch {epoch + 1}/{total}: loss "
                        f"{metrics.get('loss', 0):.4f}, accuracy {metrics.get('accuracy', 0):.4f}, "
                        f"val accuracy {metrics.get('val_accuracy', 0):.4f}")
                if board is not None:
                    board.say.remote(line)  # the driver logs it: a cluster's worker output stays on its node
                else:  # not print(): Ray Train patches it to log each line twice
                    sys.stdout.write(f"raysal {line}\n")
                    sys.stdout.flush()
            # Only the last epoch is reported to Ray Train, with the checkpoint and the history of
            # them all: each report is a round trip to the controller.

    done = 0
    for phase, trainable, learning_rate, epochs in _phases(train_cfg):
        with strategy.scope():
            models.set_backbone_trainable(model, trainable)
            fit_model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=[accuracy])
        fit_model.fit(train_ds, validation_data=val_ds, initial_epoch=done, epochs=done + epochs, verbose=0,
                  callbacks=[ReportEpoch(phase)])
        done += epochs
    # Every rank must save (collective ops); only rank 0's copy becomes the checkpoint.
    with tempfile.TemporaryDirectory() as tmp:
        models.save_checkpoint(model, tmp, model_cfg, classes)
        if rank0 and loop_config["evaluate"]:  # the test split, read whole by rank 0 alone
            _write_test_metrics(model, ray.train.get_dataset_shard("test"), classes, train_cfg.batch_size,
                                os.path.join(tmp, TEST_METRICS_FILE))
        ray.train.report({**metrics, "epochs": history}, checkpoint=Checkpoint.from_directory(tmp) if rank0 else None)


def _arrays(shard: Any) -> tuple[np.ndarray, np.ndarray]:
    """A dataset shard's images [n, s, s, 3] and labels [n], read once."""
    images, labels = [], []
    for batch in shard.iter_batches(batch_size=256, batch_format="numpy"):
        images.append(batch["image"])
        labels.append(batch["label"])
    if not images:
        return np.zeros((0, 1, 1, 3), np.uint8), np.zeros(0, np.int64)
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def _write_test_metrics(model: Any, shard: Any, classes: list[str], batch_size: int, path: str) -> None:
    """The trained model's accuracy on the test split, as the evaluate stage would compute it.

    Predicting here, in a process that already holds the model, saves the evaluate stage an
    actor pool start (10-20 s on 2 cores). The model is called directly, not through
    ``model.predict``: that would run a collective step that the other ranks never join.
    """
    import tensorflow as tf

    from raysal.report.metrics import accuracy_report

    predict = tf.function(lambda images: tf.cast(model(images, training=False), tf.float32))
    predicted, labels = [], []
    for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy"):
        probs = predict(tf.constant(batch["image"])).numpy()  # [b, c]
        finite = np.isfinite(probs).all(axis=1)  # a non-finite output is skipped, as the scorer does
        predicted.append(np.argmax(probs[finite], axis=1))
        labels.append(batch["label"][finite])
    report = accuracy_report(np.concatenate(predicted) if predicted else np.zeros(0, np.int64),
                             np.concatenate(labels) if labels else np.zeros(0, np.int64), classes)
    with open(path, "w") as f:
        json.dump(report, f)


def workers_for(t: TrainConfig, images: int) -> int:
    """Ray Train workers for a training set: one per ``images_per_worker``, at most ``num_workers``.

    On a few hundred images a second replica costs more in collective steps and start-up than it
    saves; ``images_per_worker = 0`` always uses ``num_workers``.
    """
    if t.images_per_worker <= 0:
        return t.num_workers
    return max(1, min(t.num_workers, math.ceil(images / t.images_per_worker)))


def train_model(cfg: Config, train_ds: ray.data.Dataset, val_ds: ray.data.Dataset, output_dir: str,
                storage_path: str, run_name: str, init_uri: str | None = None, board: Any = None,
                label: str = "training", train_size: int | None = None,
                test_ds: ray.data.Dataset | None = None) -> TrainResult:
    """Train (or continue training from the checkpoint at ``init_uri``) and copy the final
    checkpoint to ``output_dir``. A worker that dies is restarted (``train.max_failures`` times),
    and training starts again from ``init_uri``.

    Args:
        train_ds, val_ds: decoded datasets with an ``image`` [s, s, 3] uint8 and a ``label`` column.
        storage_path: Ray Train's storage (shared by all nodes on a cluster).
        init_uri: a checkpoint in the run's state (a path every node sees, or a URI), read by
            each worker.
        board: a ``progress.Board`` that rank 0 sends one line per epoch to, starting with
            ``label``; None: rank 0 writes the lines to its stdout.
        train_size: the number of training images, when known: it sets the number of workers
            (``workers_for``) and whether shards are held in memory. None: counted here.
        test_ds: a decoded, labelled test split; rank 0 evaluates the trained model on it
            (``TrainResult.test_metrics``).
    """
    t = cfg.train
    phases = _phases(t)
    train_size = train_ds.count() if train_size is None else train_size
    workers = workers_for(t, train_size)
    shard_bytes = math.ceil(train_size / workers) * cfg.model.input_size ** 2 * 3
    datasets = {"train": train_ds, "val": val_ds, **({"test": test_ds} if test_ds is not None else {})}
    resources = {"CPU": t.cpus_per_worker, **({"GPU": t.gpus_per_worker} if t.gpus_per_worker else {})}
    trainer = TensorflowTrainer(
        _train_loop,
        train_loop_config={"model": asdict(cfg.model), "train": asdict(t), "classes": list(cfg.data.classes),
                           "seed": cfg.seed, "init_uri": init_uri, "board": board, "label": label,
                           "total_epochs": sum(p[3] for p in phases), "evaluate": test_ds is not None,
                           # held in memory, an epoch of a few hundred images takes a fraction of a
                           # second instead of the seconds a Ray Data split costs to start
                           "in_memory": shard_bytes <= t.in_memory_mb * 2**20},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=t.gpus_per_worker > 0,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=run_name, storage_path=storage_path,
                             failure_config=FailureConfig(max_failures=t.max_failures),
                             worker_runtime_env={"env_vars": keras_env.worker_env()}),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train", "val"]),  # "test" is read whole, by rank 0
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training run {run_name} finished without a checkpoint")
    tmp_dir = f"{output_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    result.checkpoint.to_directory(tmp_dir)
    test_metrics = None
    if test_ds is not None:  # not part of the model's folder: the caller stores it beside
        with open(os.path.join(tmp_dir, TEST_METRICS_FILE)) as f:
            test_metrics = json.load(f)
        os.remove(os.path.join(tmp_dir, TEST_METRICS_FILE))
    shutil.rmtree(output_dir, ignore_errors=True)
    os.replace(tmp_dir, output_dir)  # the model folder appears whole
    return TrainResult(model_dir=output_dir, metrics=dict(result.metrics or {}), test_metrics=test_metrics)
