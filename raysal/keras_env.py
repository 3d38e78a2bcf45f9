"""Keras 2 (``tf-keras``) for every process that touches TensorFlow.

TensorFlow 2.21 defaults to Keras 3, which breaks ``hub.KerasLayer`` inside a model and
``MultiWorkerMirroredStrategy`` training. TensorFlow reads ``TF_USE_LEGACY_KERAS`` once, when it
is first imported, so every raysal module that imports TensorFlow imports this one first, and
Ray workers also receive the variable through their ``runtime_env``.
"""

from __future__ import annotations

import os
import sys

LEGACY_KERAS_ENV = {"TF_USE_LEGACY_KERAS": "1"}
QUIET_TF_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}  # hide TensorFlow's C++ info lines; errors still show


def worker_env() -> dict[str, str]:
    """Environment variables for Ray workers' ``runtime_env``."""
    return {**QUIET_TF_ENV, **{k: os.environ.get(k, v) for k, v in QUIET_TF_ENV.items()}, **LEGACY_KERAS_ENV}


def use_legacy_keras() -> None:
    """Set the variable, or fail loudly if TensorFlow was already imported without it."""
    for key, value in QUIET_TF_ENV.items():
        os.environ.setdefault(key, value)
    if os.environ.get("TF_USE_LEGACY_KERAS") == "1":
        return
    if "tensorflow" in sys.modules:
        raise ImportError(
            "TensorFlow was imported before raysal could select Keras 2: set TF_USE_LEGACY_KERAS=1 "
            "in the environment, or import raysal before tensorflow"
        )
    os.environ.update(LEGACY_KERAS_ENV)


use_legacy_keras()  # the one import-time effect in raysal, and the reason this module exists
