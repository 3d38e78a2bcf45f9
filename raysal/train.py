"""Training across Ray Train workers: ``TensorflowTrainer`` + ``MultiWorkerMirroredStrategy``.

Two phases, as in the article: the head with the backbone frozen, then the whole model
fine-tuned at a lower learning rate. Every rank saves the weights (the strategy's collective ops
need all ranks); rank 0's copy is reported as the Ray Train checkpoint and returned.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from typing import Any

from raysal import keras_env  # noqa: I001  (before anything that may import TensorFlow)

import ray.data
import ray.train
from ray.train import Checkpoint, FailureConfig, RunConfig, ScalingConfig
from ray.train.tensorflow import TensorflowTrainer
from raysal.config import Config, ModelConfig, TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    model_dir: str  # the checkpoint folder (model.json + weights.h5)
    metrics: dict[str, float]  # the last epoch's loss/accuracy and val_loss/val_accuracy


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

    from raysal import models, storage

    model_cfg = ModelConfig(**loop_config["model"])
    train_cfg = TrainConfig(**loop_config["train"])
    classes = loop_config["classes"]
    keras.utils.set_random_seed(loop_config["seed"])  # this worker process only
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = models.build_model(model_cfg, len(classes))
        if loop_config["init_uri"]:  # read on this worker's node: the driver's disk may be another machine's
            with storage.local_copy(loop_config["init_uri"]) as init_dir:
                model.load_weights(os.path.join(init_dir, models.WEIGHTS_FILE))

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF  # Ray shards

    def shard(name: str, shuffle: bool) -> tf.data.Dataset:
        ds = ray.train.get_dataset_shard(name).to_tf(
            "image", "label", batch_size=train_cfg.batch_size,
            local_shuffle_buffer_size=4 * train_cfg.batch_size if shuffle else None,
            local_shuffle_seed=loop_config["seed"] if shuffle else None)
        return ds.with_options(options)

    total = loop_config["total_epochs"]
    board = loop_config["board"]
    train_ds, val_ds = shard("train", shuffle=True), shard("val", shuffle=False)  # re-iterated each epoch
    metrics: dict[str, Any] = {}

    class ReportEpoch(keras.callbacks.Callback):
        def __init__(self, phase: str) -> None:
            super().__init__()
            self.phase = phase

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            metrics.clear()
            metrics.update({k: float(v) for k, v in (logs or {}).items()}, epoch=epoch + 1, phase=self.phase)
            if ray.train.get_context().get_world_rank() == 0:  # one line per epoch, shown by the driver
                line = (f"{loop_config['label']}: {self.phase} epoch {epoch + 1}/{total}: loss "
                        f"{metrics.get('loss', 0):.4f}, accuracy {metrics.get('accuracy', 0):.4f}, "
                        f"val accuracy {metrics.get('val_accuracy', 0):.4f}")
                if board is not None:
                    board.say.remote(line)  # the driver logs it: a cluster's worker output stays on its node
                else:  # not print(): Ray Train patches it to log each line twice
                    sys.stdout.write(f"raysal {line}\n")
                    sys.stdout.flush()
            if epoch + 1 < total:  # the last epoch is reported below, with the checkpoint
                ray.train.report(dict(metrics))

    done = 0
    for phase, trainable, learning_rate, epochs in _phases(train_cfg):
        with strategy.scope():
            models.set_backbone_trainable(model, trainable)
            model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(train_ds, validation_data=val_ds, initial_epoch=done, epochs=done + epochs, verbose=0,
                  callbacks=[ReportEpoch(phase)])
        done += epochs
    # Every rank must save (collective ops); only rank 0's copy becomes the checkpoint.
    with tempfile.TemporaryDirectory() as tmp:
        models.save_checkpoint(model, tmp, model_cfg, classes)
        rank0 = ray.train.get_context().get_world_rank() == 0
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp) if rank0 else None)


def train_model(cfg: Config, train_ds: ray.data.Dataset, val_ds: ray.data.Dataset, output_dir: str,
                storage_path: str, run_name: str, init_uri: str | None = None, board: Any = None,
                label: str = "training") -> TrainResult:
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
    """
    t = cfg.train
    phases = _phases(t)
    resources = {"CPU": t.cpus_per_worker, **({"GPU": t.gpus_per_worker} if t.gpus_per_worker else {})}
    trainer = TensorflowTrainer(
        _train_loop,
        train_loop_config={"model": asdict(cfg.model), "train": asdict(t), "classes": list(cfg.data.classes),
                           "seed": cfg.seed, "init_uri": init_uri, "board": board, "label": label,
                           "total_epochs": sum(p[3] for p in phases)},
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.gpus_per_worker > 0,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=run_name, storage_path=storage_path,
                             failure_config=FailureConfig(max_failures=t.max_failures),
                             worker_runtime_env={"env_vars": keras_env.worker_env()}),
        datasets={"train": train_ds, "val": val_ds},
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training run {run_name} finished without a checkpoint")
    tmp_dir = f"{output_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    result.checkpoint.to_directory(tmp_dir)
    shutil.rmtree(output_dir, ignore_errors=True)
    os.replace(tmp_dir, output_dir)  # the model folder appears whole
    return TrainResult(model_dir=output_dir, metrics=dict(result.metrics or {}))
