"""Starting or joining Ray with the environment raysal's workers need."""

from __future__ import annotations

import os

import ray

from raysal import keras_env


def init_ray(num_cpus: int | None = None) -> None:
    """Join the cluster in ``RAY_ADDRESS`` (as under ``ray job submit``), else start a local one."""
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or None
    ray.init(address=address or "local", num_cpus=None if address else num_cpus,
             runtime_env={"env_vars": keras_env.worker_env()}, log_to_driver=True)
