"""Checks that run before any Ray work: is every input of the round present and readable?

A round that would fail on missing data or a model it cannot load offline stops here, in
seconds, with a message that says what is missing and how to provide it.
"""

from __future__ import annotations

import os

import pyarrow.fs as pafs

from raysal import storage
from raysal.config import Config, SourceConfig
from raysal.sources import SourceError, ensure_digits, resolve_path


class Unavailable(RuntimeError):
    """An input of the round is missing; the message names the config field."""


def _check_source(cfg: SourceConfig, root: str) -> None:
    if cfg.kind == "tfds":
        from raysal import keras_env  # noqa: F401  (before TensorFlow)
        import tensorflow_datasets as tfds

        data_dir = os.path.expanduser(cfg.data_dir) if cfg.data_dir else None
        builder = tfds.builder(cfg.tfds_name, data_dir=data_dir)
        if not builder.is_prepared():
            raise Unavailable(
                f"{cfg.where}: TFDS dataset {cfg.tfds_name!r} is not prepared in {builder.data_dir}, and raysal never "
                f"downloads at run time. On a machine with network run `tfds build {cfg.tfds_name} --data_dir DIR`, "
                f"copy DIR here and set {cfg.where}.data_dir (e.g. --set {cfg.where}.data_dir=DIR)")
        return
    path = resolve_path(cfg.path, root)
    if cfg.kind == "digits":
        try:
            ensure_digits(path)
        except SourceError as exc:
            raise Unavailable(f"{cfg.where}.path: {exc}") from None
        return
    fs, inner = storage.resolve(path)
    kind = fs.get_file_info(inner).type
    wanted = pafs.FileType.Directory if cfg.kind == "folder" else pafs.FileType.File
    if kind != wanted:
        what = "image folder" if cfg.kind == "folder" else "manifest file"
        raise Unavailable(f"{cfg.where}.path: {what} {path} does not exist")


def check(cfg: Config, state_dir: str) -> None:
    """Raise ``Unavailable`` naming the first missing input of the round."""
    root = cfg.data.root or os.path.join(state_dir, "data")
    for source in (cfg.data.labelled, cfg.data.val, cfg.data.test, cfg.data.pool):
        _check_source(source, root)
    if cfg.model.kind == "hub" or (cfg.model.kind == "inception_v3" and cfg.model.weights):
        from raysal import models

        problem = (models.hub_handle_available(cfg.model.handle) if cfg.model.kind == "hub"
                   else None if os.path.isfile(os.path.expanduser(cfg.model.weights))
                   else f"InceptionV3 weights file {cfg.model.weights} does not exist")
        if problem:
            field = "model.handle" if cfg.model.kind == "hub" else "model.weights"
            raise Unavailable(f"{field}: {problem}")
    if storage.is_uri(state_dir):
        return
    try:
        os.makedirs(state_dir, exist_ok=True)
    except OSError as exc:
        raise Unavailable(f"--state: cannot create {state_dir}: {exc}") from None
