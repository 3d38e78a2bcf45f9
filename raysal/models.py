"""Keras 2 models: a TF Hub backbone + Dense head (the article's), InceptionV3, a small CNN.

Every model takes uint8 images ``[n, size, size, 3]`` and rescales inside the graph, so the
pipeline ships bytes, not floats. The feature extractor is the layer named ``backbone``; the
head phase of training freezes it, the fine-tune phase unfreezes it.

A checkpoint is a folder with ``model.json`` (the model config and class names) and
``weights.h5``: rebuilding from the config and loading the weights needs no pickled code.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Any, Sequence

from raysal import keras_env  # noqa: F401  (before TensorFlow)

import numpy as np
import tensorflow as tf
import tf_keras as keras
from numpy.typing import NDArray

from raysal.config import ModelConfig

BACKBONE = "backbone"
CONFIG_FILE = "model.json"
WEIGHTS_FILE = "weights.h5"
HUB_CACHE_ENV = "TFHUB_CACHE_DIR"


class ModelUnavailable(RuntimeError):
    """A model that cannot be built offline; the message says how to provide it."""


def hub_handle_available(handle: str) -> str | None:
    """Why ``handle`` cannot be loaded without network, or None if it can."""
    if "://" not in handle:
        return None if os.path.isdir(os.path.expanduser(handle)) else f"local SavedModel folder {handle} does not exist"
    if not handle.startswith(("http://", "https://")):
        return None  # gs://, file://: a SavedModel folder that TensorFlow reads directly
    import hashlib

    from tensorflow_hub import resolver

    # tensorflow_hub caches a URL handle in <cache>/<sha1(handle)>, the cache defaulting to a temp folder.
    cache_dir = resolver.tfhub_cache_dir(use_temp=True) or ""
    cached = os.path.join(cache_dir, hashlib.sha1(handle.encode()).hexdigest()) if cache_dir else ""
    if cached and os.path.isfile(os.path.join(cached, "saved_model.pb")):
        return None
    return (f"TF Hub model {handle} is not in the local cache ({HUB_CACHE_ENV}={cache_dir or 'unset'}) and nothing "
            "is downloaded at run time: download it on a machine with network and set model.handle to the "
            f"SavedModel folder, or copy a populated cache and set {HUB_CACHE_ENV}")


def _backbone(cfg: ModelConfig) -> tuple[keras.layers.Layer, float, float]:
    """The feature extractor and the (scale, offset) that maps uint8 pixels to its input range."""
    if cfg.kind == "hub":
        import tensorflow_hub as hub

        problem = hub_handle_available(cfg.handle)
        if problem:
            raise ModelUnavailable(f"model.handle: {problem}")
        return hub.KerasLayer(os.path.expanduser(cfg.handle), trainable=False, name=BACKBONE), 1 / 255.0, 0.0
    if cfg.kind == "inception_v3":
        if cfg.weights and not os.path.isfile(os.path.expanduser(cfg.weights)):
            raise ModelUnavailable(f"model.weights: InceptionV3 weights file {cfg.weights} does not exist "
                                   "(use the include_top=False weights; '' trains from random init)")
        net = keras.applications.InceptionV3(include_top=False, weights=os.path.expanduser(cfg.weights) or None,
                                             input_shape=(cfg.input_size, cfg.input_size, 3), pooling="avg")
        return keras.Model(net.inputs, net.outputs, name=BACKBONE), 1 / 127.5, -1.0
    layers = keras.layers
    cnn = keras.Sequential([
        layers.Conv2D(16, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(32, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(64, 3, padding="same", activation="relu"), layers.MaxPooling2D(), layers.Flatten(),
    ], name=BACKBONE)
    return cnn, 1 / 255.0, 0.0


def build_model(cfg: ModelConfig, num_classes: int) -> keras.Model:
    """Backbone + Dropout + Dense softmax head, with the backbone frozen (head phase)."""
    backbone, scale, offset = _backbone(cfg)
    backbone.trainable = False
    inputs = keras.Input((cfg.input_size, cfg.input_size, 3), dtype=tf.uint8, name="image")
    x = keras.layers.Rescaling(scale, offset)(inputs)
    x = backbone(x, training=False)  # BatchNorm stays in inference mode even when fine-tuned
    x = keras.layers.Dropout(cfg.dropout)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name=f"raysal_{cfg.kind}")


def set_backbone_trainable(model: keras.Model, trainable: bool) -> None:
    model.get_layer(BACKBONE).trainable = trainable


def save_checkpoint(model: keras.Model, directory: str, cfg: ModelConfig, classes: Sequence[str]) -> None:
    os.makedirs(directory, exist_ok=True)
    model.save_weights(os.path.join(directory, WEIGHTS_FILE))
    meta = {"model": asdict(cfg), "classes": list(classes)}
    with open(os.path.join(directory, CONFIG_FILE), "w") as f:
        json.dump(meta, f, indent=2)


def read_checkpoint_meta(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(path) or not os.path.isfile(os.path.join(directory, WEIGHTS_FILE)):
        raise FileNotFoundError(f"{directory} is not a raysal model checkpoint (needs {CONFIG_FILE}, {WEIGHTS_FILE})")
    with open(path) as f:
        return json.load(f)


def load_checkpoint(directory: str) -> tuple[keras.Model, ModelConfig, list[str]]:
    """Rebuild the model from its stored config and load its weights."""
    meta = read_checkpoint_meta(directory)
    cfg = ModelConfig(**meta["model"])
    model = build_model(cfg, len(meta["classes"]))
    model.load_weights(os.path.join(directory, WEIGHTS_FILE))
    return model, cfg, meta["classes"]


def predict_probs(model: keras.Model, images: NDArray[np.uint8], batch_size: int = 64) -> NDArray[np.float32]:
    """Class probabilities ``[n, c]`` for uint8 images ``[n, s, s, 3]``, in one process."""
    return model.predict(images, batch_size=batch_size, verbose=0)
