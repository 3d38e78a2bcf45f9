"""Checks that run before any Ray work: is every input of the round present and readable?

A round that would fail on missing data or a model it cannot load offline stops here, in
seconds, with a message that says what is missing and how to provide it.
"""

from __future__ import annotations

import os

import pyarrow.fs as pafs

from raysal import storage
from raysal.config import Config, SourceConfig
from raysal.sources import SourceError, ensure_digits, prepared_tfds_builder, resolve_path


class Unavailable(RuntimeError):
    """An input of the round is missing; the message names the config field."""


def _check_source(cfg: SourceConfig, root: str) -> None:
    try:
        if cfg.kind == "tfds":
            prepared_tfds_builder(cfg)
            return
        if cfg.kind == "digits":
            ensure_digits(resolve_path(cfg.path, root))
            return
    except SourceError as exc:  # TFDS messages name the field already
        raise Unavailable(str(exc) if cfg.kind == "tfds" else f"{cfg.where}.path: {exc}") from None
    path = resolve_path(cfg.path, root)
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
