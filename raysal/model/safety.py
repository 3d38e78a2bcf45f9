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
KERAS_MODULES = ("keras", "tf_keras")  # where a built-in layer's class comes from (a .keras config's "module")
# Built-in classes a layer config may name beside the layers of ``tf_keras.layers``: models, and
# the layers that the functional API makes of TensorFlow ops (they name a TF function, not code).
MODEL_CLASSES = ("Functional", "Sequential", "Model", "TFOpLambda", "SlicingOpLambda")


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
        return [json.loads(node.metadata) for node in saved.nodes  # a layer or model each; metrics are no code
                if node.metadata and node.identifier != "_tf_keras_metric"]
    if zipfile.is_zipfile(path):  # .keras
        with zipfile.ZipFile(path) as archive:
            return [json.loads(archive.read("config.json"))] if "config.json" in archive.namelist() else []
    import h5py

    with h5py.File(path, "r") as f:
        config = f.attrs.get("model_config")
    if config is None:
        return []
    return [json.loads(config.decode() if isinstance(config, bytes) else config)]


def _layers(node: Any, top: bool = True) -> Iterator[dict[str, Any]]:
    """The model config ``node`` and every layer config in it (the items of its ``layers``
    lists), nested models included; not the initializers, regularizers and the like."""
    if isinstance(node, dict):
        if top and "class_name" in node:
            yield node
        for key, value in node.items():
            if key == "layers" and isinstance(value, list):
                for item in value:
                    if isinstance(item, dict) and "class_name" in item:
                        yield item
            yield from _layers(value, top=False)
    elif isinstance(node, list):
        for value in node:
            yield from _layers(value, top=False)


def custom_layers(path: str, built_in: set[str]) -> list[str]:
    """The layers of the saved model at ``path`` (local) whose class is no Keras built-in
    (``built_in``: the classes of ``tf_keras.layers``; ``MODEL_CLASSES``): a custom object,
    which loading would import from the module its config names, or fail on. ``"name (Class)"``."""
    found = []
    known = built_in | set(MODEL_CLASSES)
    for config in _configs(path):
        for layer in _layers(config):
            cls, module = layer.get("class_name"), layer.get("module")
            registered = layer.get("registered_name")
            if cls not in known or (module and module.split(".")[0] not in KERAS_MODULES) or \
                    (registered and registered != cls):
                name = (layer.get("config") or {}).get("name") or layer.get("name") or "?"
                found.append(f"{name!r} ({registered or cls}{f' from {module}' if module else ''})")
    return sorted(set(found))


def code_layers(path: str) -> list[str]:
    """The layers of the saved model at ``path`` (local) that would run Python code: ``"name (Lambda)"``."""
    found = []
    for config in _configs(path):
        for layer in _walk(config):
            if layer.get("class_name") in CODE_LAYERS:
                name = (layer.get("config") or {}).get("name") or layer.get("name") or "?"
                found.append(f"{name!r} ({layer['class_name']})")
    return sorted(set(found))
