"""What a saved Keras model would run when loaded: found from its config, before loading it.

A ``Lambda`` layer carries Python bytecode (marshalled into ``.h5`` and SavedModel files, and into
a ``.keras`` file's config), which Keras runs when the model is loaded and called: on the driver,
on every scoring actor and on every Ray Train worker. A model file in a shared bucket is then a
way to run code on the whole cluster. raysal reads the model's config first (the ``model_config``
attribute of an ``.h5`` file, ``config.json`` in a ``.keras`` archive, ``keras_metadata.pb`` of a
SavedModel) and refuses such a model unless ``model.trust_code = true``. Reading these needs no
TensorFlow: h5py and the standard library, and the protobuf of tf_keras' metadata.
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any, Iterator

CODE_LAYERS = ("Lambda",)  # layer classes whose config holds Python code


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every dict with a ``class_name`` in a Keras config, nested models included."""
    if isinstance(node, dict):
        if "class_name" in node:
            yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _configs(path: str) -> list[Any]:
    """The Keras configs saved in a model file or SavedModel folder (empty when it has none)."""
    if os.path.isdir(path):
        metadata = os.path.join(path, "keras_metadata.pb")
        if not os.path.isfile(metadata):
            return []
        from tf_keras.protobuf import saved_metadata_pb2

        saved = saved_metadata_pb2.SavedMetadata()
        with open(metadata, "rb") as f:
            saved.ParseFromString(f.read())
        return [json.loads(node.metadata) for node in saved.nodes if node.metadata]
    if zipfile.is_zipfile(path):  # .keras
        with zipfile.ZipFile(path) as archive:
            return [json.loads(archive.read("config.json"))] if "config.json" in archive.namelist() else []
    import h5py

    with h5py.File(path, "r") as f:
        config = f.attrs.get("model_config")
    if config is None:
        return []
    return [json.loads(config.decode() if isinstance(config, bytes) else config)]


def code_layers(path: str) -> list[str]:
    """The layers of the saved model at ``path`` (local) that would run Python code: ``"name (Lambda)"``."""
    found = []
    for config in _configs(path):
        for layer in _walk(config):
            if layer.get("class_name") in CODE_LAYERS:
                name = (layer.get("config") or {}).get("name") or layer.get("name") or "?"
                found.append(f"{name!r} ({layer['class_name']})")
    return sorted(set(found))
