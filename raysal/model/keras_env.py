"""Keras 2 (``tf-keras``) for every process that touches TensorFlow.

TensorFlow 2.21 defaults to Keras 3, which breaks ``hub.KerasLayer`` inside a model and
``MultiWorkerMirroredStrategy`` training. raysal's code imports ``tf_keras`` by name, never
``tf.keras``, and ``tensorflow_hub`` picks ``tf_keras`` itself when ``tf.keras`` is Keras 3, so a
process where TensorFlow was imported first (a notebook) still builds and runs raysal's models.
``TF_USE_LEGACY_KERAS=1`` is set as well, for the processes started from here, and Ray workers
receive it through their ``runtime_env``.
"""

from __future__ import annotations

import os

LEGACY_KERAS_ENV = {"TF_USE_LEGACY_KERAS": "1"}
QUIET_TF_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}  # hide TensorFlow's C++ info lines; errors still show


def worker_env() -> dict[str, str]:
    """Environment variables for Ray workers' ``runtime_env``."""
    return {**QUIET_TF_ENV, **{k: os.environ.get(k, v) for k, v in QUIET_TF_ENV.items()}, **LEGACY_KERAS_ENV}


def use_legacy_keras() -> None:
    """Select Keras 2 for TensorFlow imported from now on, here and in child processes.

    Where TensorFlow is already imported (with Keras 3 as ``tf.keras``), this changes nothing in
    this process, and needs not: raysal never uses ``tf.keras``.
    """
    for key, value in QUIET_TF_ENV.items():
        os.environ.setdefault(key, value)
    os.environ.update(LEGACY_KERAS_ENV)


def share_gpus() -> None:
    """Let TensorFlow in this process take GPU memory as it needs it, not all at once: a scoring
    actor at 0.5 GPU and another, or a Ray Train worker, may share one GPU. Call after importing
    TensorFlow, before it touches a GPU. Nothing happens without GPUs."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)


use_legacy_keras()  # the one import-time effect in raysal, and the reason this module exists
