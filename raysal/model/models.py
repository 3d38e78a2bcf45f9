"""Keras 2 models: a TF Hub backbone + Dense head (the article's), InceptionV3, a small CNN,
and a user's own saved Keras model or TF Hub classifier.

Every model takes uint8 images ``[n, size, size, 3]`` and rescales inside the graph
(``model.preprocess``), so the pipeline ships bytes, not floats. The feature extractor is the
layer named ``backbone``; the head phase of training freezes it, the fine-tune phase unfreezes it.
A pretrained classifier (``model.use = "classifier"``) keeps its own head: for a Keras model its
last layer with weights (plus any Softmax/Activation after it), the layers before it being the
backbone; a TF Hub classifier is all backbone, with no head of its own to train.

A checkpoint is a folder with ``model.json`` (the model config and class names) and
``weights.h5``: rebuilding from the config and loading the weights needs no pickled code.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from typing import Any, Sequence

import numpy as np

from raysal.model import keras_env  # noqa: F401  (first: it sets up Keras 2 before TensorFlow loads)

# isort: split
import pyarrow.fs as pafs
import tensorflow as tf
import tf_keras as keras
from numpy.typing import NDArray

from raysal import storage
from raysal.config import ModelConfig
from raysal.errors import ModelRefused, ModelUnavailable  # noqa: F401  (raised here; importable from here too)
from raysal.model import safety
from raysal.model.embeddings import CONFIG_FILE, DIGEST, FILE_DIGESTS, HEAD_FILE, DenseHead, check_files, sha256_file

BACKBONE = "backbone"
HEAD = "head"  # the Dense head's layer; head_0 .. head_{K-1} those of K members (model.heads)
ENSEMBLE = "ensemble"  # the Average layer of K members' probabilities, the model's output
WEIGHTS_FILE = "weights.h5"
HUB_CACHE_ENV = "TFHUB_CACHE_DIR"


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


def keras_model_available(path: str) -> str | None:
    """Why the saved Keras model at ``path`` (a folder or file, local or URI) cannot be read, or None."""
    try:
        fs, inner = storage.resolve(path)
        found = fs.get_file_info(inner).type != pafs.FileType.NotFound
    except OSError as exc:  # no credentials, an unknown bucket or scheme
        return f"cannot read {path}: {exc}"
    return None if found else f"saved Keras model {path} does not exist"


def pixel_scale_offset(cfg: ModelConfig) -> tuple[float | tuple[float, ...], float | tuple[float, ...]]:
    """(scale, offset), scalars or per channel, so that ``pixels * scale + offset`` is the model's input."""
    mode = cfg.preprocess or ("symmetric" if cfg.kind == "inception_v3" else "unit")
    if mode == "unit":
        return 1 / 255.0, 0.0  # [0, 1]
    if mode == "symmetric":
        return 1 / 127.5, -1.0  # [-1, 1]
    # (pixels / 255 - mean) / std, per channel
    return (tuple(1 / (255.0 * s) for s in cfg.std), tuple(-m / s for m, s in zip(cfg.mean, cfg.std, strict=True)))


def _load_keras(cfg: ModelConfig) -> keras.Model:
    """The saved model at ``model.path``, read on this node (downloaded first when a URI)."""
    problem = keras_model_available(cfg.path)
    if problem:
        raise ModelUnavailable(f"model.path: {problem}")
    with storage.local_copy(cfg.path) as local:  # weights are in memory once loaded: the download can go
        saved_model = os.path.isdir(local)
        if not cfg.trust_code:
            try:
                code = safety.code_layers(local)
                custom = safety.custom_layers(local, {name for name, value in vars(keras.layers).items()
                                                      if isinstance(value, type)})
            except Exception as exc:  # noqa: BLE001  (h5py, zip and protobuf readers each raise their own)
                raise ModelRefused(f"model.path: {cfg.path} is not a saved Keras model whose config can be read "
                                   f"(a SavedModel folder, .keras or .h5 file saved by Keras): {exc}") from None
            if custom and not code:
                raise ModelRefused(
                    f"model.path: {cfg.path} has layers that are no Keras built-in (custom objects), "
                    f"{', '.join(custom)}: loading them would import and run code the file names. Rebuild the "
                    "model from built-in layers, or set model.trust_code = true if you trust whoever wrote the file "
                    "(its classes must then be importable and registered with Keras)")
            if code:
                raise ModelRefused(
                    f"model.path: {cfg.path} has layers that run Python code stored in the file, {', '.join(code)}: "
                    "loading it would run that code on the driver and on every Ray worker. Rebuild the model "
                    "without them (a Rescaling layer in place of a Lambda that scales, say), or set "
                    "model.trust_code = true if you trust whoever wrote the file")
        try:
            net = keras.models.load_model(local, compile=False, safe_mode=not cfg.trust_code)
        except Exception as exc:  # h5py, the SavedModel and the .keras readers each raise their own errors
            raise ModelRefused(f"model.path: {cfg.path} is not a saved Keras model (a SavedModel folder, .keras or "
                               f".h5 file saved by Keras, with no custom layers): {exc}") from None
    if not isinstance(net, keras.Model):
        raise ModelRefused(f"model.path: {cfg.path} is a SavedModel but not a Keras model: load it with "
                           "model.kind = 'hub' and model.handle instead")
    if len(net.inputs or []) != 1 or len(net.outputs or []) != 1:
        raise ModelRefused(f"model.path: {cfg.path} needs exactly one input and one output (a Functional or "
                           f"Sequential model), got {len(net.inputs or [])} and {len(net.outputs or [])}")
    if saved_model:
        # Under a distribution strategy a revived SavedModel's variables lose their layer names, and
        # weights.h5 needs them: rebuild the layers from their config and copy the weights over.
        clone = keras.models.clone_model(net)
        clone.set_weights(net.get_weights())
        net = clone
    shape = tuple(net.inputs[0].shape[1:])
    if len(shape) != 3 or shape[2] != 3 or any(side not in (None, cfg.input_size) for side in shape[:2]):
        raise ModelRefused(f"model.input_size: {cfg.path} takes images of shape {shape}, not "
                           f"({cfg.input_size}, {cfg.input_size}, 3): set model.input_size to its side")
    return net


def _activation(layer: keras.layers.Layer) -> str:
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    return getattr(getattr(layer, "activation", None), "__name__", "linear")


def _split_classifier(net: keras.Model, cfg: ModelConfig) -> tuple[keras.Model, list[keras.layers.Layer], str]:
    """A Keras classifier cut into (backbone, head layers, "logits" | "probs").

    The head is the last layer with weights and the weightless activations after it; the
    backbone is everything before the head.
    """
    layers = [layer for layer in net.layers if not isinstance(layer, keras.layers.InputLayer)]
    first = len(layers) - 1
    while first > 0 and isinstance(layers[first], (keras.layers.Softmax, keras.layers.Activation)):
        first -= 1
    head = layers[first:]
    try:
        chained = head[-1].output is net.outputs[0] and all(
            b.input is a.output for a, b in zip(head, head[1:], strict=False))
        features = head[0].input
    except AttributeError:  # a layer called more than once has no single input or output
        chained, features = False, None
    if not head[0].weights or not chained or isinstance(features, (list, tuple, dict)):
        raise ModelRefused(f"model.use: the classifier {cfg.path} must end in a layer with weights (its head, e.g. "
                           "Dense), optionally followed by Softmax or Activation layers, each called once; "
                           f"it ends in {[type(layer).__name__ for layer in head]}. Or use it with model.use = "
                           "'backbone'")
    activations = [a for a in map(_activation, head) if a != "linear"]
    outputs = cfg.outputs or {(): "logits", ("softmax",): "probs"}.get(tuple(activations), "")
    if not outputs:
        raise ModelRefused(f"model.outputs: cannot tell whether {cfg.path} outputs logits or probabilities (its "
                           f"head's activations are {activations}): set model.outputs = 'logits' or 'probs'")
    return keras.Model(net.inputs, features, name=BACKBONE), head, outputs


def _backbone(cfg: ModelConfig) -> keras.layers.Layer:
    """The feature extractor (use = backbone), or the whole TF Hub classifier (use = classifier)."""
    if cfg.kind == "hub":
        import tensorflow_hub as hub

        problem = hub_handle_available(cfg.handle)
        if problem:
            raise ModelUnavailable(f"model.handle: {problem}")
        try:
            return hub.KerasLayer(os.path.expanduser(cfg.handle), trainable=False, name=BACKBONE)
        except (OSError, ValueError) as exc:  # a folder that is not a SavedModel, a TF1 Hub module
            raise ModelRefused(f"model.handle: {cfg.handle} is not a TF2 SavedModel that hub.KerasLayer loads: "
                               f"{exc}") from None
    if cfg.kind == "keras":
        net = _load_keras(cfg)
        return keras.Model(net.inputs, net.outputs, name=BACKBONE)
    if cfg.kind == "inception_v3":
        if cfg.weights and not os.path.isfile(os.path.expanduser(cfg.weights)):
            raise ModelUnavailable(f"model.weights: InceptionV3 weights file {cfg.weights} does not exist "
                                   "(use the include_top=False weights; '' trains from random init)")
        net = keras.applications.InceptionV3(include_top=False, weights=os.path.expanduser(cfg.weights) or None,
                                             input_shape=(cfg.input_size, cfg.input_size, 3), pooling="avg")
        return keras.Model(net.inputs, net.outputs, name=BACKBONE)
    layers = keras.layers
    return keras.Sequential([
        layers.Conv2D(16, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(32, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(64, 3, padding="same", activation="relu"), layers.MaxPooling2D(), layers.Flatten(),
    ], name=BACKBONE)


def build_model(cfg: ModelConfig, num_classes: int) -> keras.Model:
    """A model whose output is class probabilities ``[n, num_classes]``, with the backbone frozen
    (head phase): backbone + Dropout + Dense softmax head, or with ``model.heads`` = K > 1, K of
    them averaged (train it through ``training_view``), or a pretrained classifier as it is
    (``model.use = "classifier"``; Softmax added when it outputs logits).

    Raises:
        ModelUnavailable: the model's file or handle cannot be read here.
        ModelRefused: a classifier whose class count is not ``num_classes``, or another mismatch.
    """
    scale, offset = pixel_scale_offset(cfg)
    inputs = keras.Input((cfg.input_size, cfg.input_size, 3), dtype=tf.uint8, name="image")
    x = keras.layers.Rescaling(scale, offset)(inputs)
    if cfg.use == "classifier" and cfg.kind == "keras":
        backbone, head, outputs = _split_classifier(_load_keras(cfg), cfg)
    else:
        backbone, head, outputs = _backbone(cfg), [], cfg.outputs or "logits"
    backbone.trainable = False
    x = backbone(x, training=False)  # BatchNorm stays in inference mode even when fine-tuned
    if cfg.use == "backbone" and cfg.heads == 1:
        x = keras.layers.Dropout(cfg.dropout)(x)
        return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax", name=HEAD)(x),
                           name=f"raysal_{cfg.kind}")
    if cfg.use == "backbone":  # K members, each its own dropout; their initial weights are successive draws
        members = [keras.layers.Dense(num_classes, activation="softmax", name=f"{HEAD}_{k}")(
            keras.layers.Dropout(cfg.dropout, name=f"dropout_{k}")(x)) for k in range(cfg.heads)]
        return keras.Model(inputs, keras.layers.Average(name=ENSEMBLE)(members), name=f"raysal_{cfg.kind}")
    for layer in head:
        x = layer(x)
    found = x.shape[-1]
    if found is None:  # a SavedModel whose signature leaves the class count open: run it once
        found = keras.Model(inputs, x)(np.zeros((1, cfg.input_size, cfg.input_size, 3), np.uint8)).shape[-1]
    if found != num_classes:
        where = cfg.path if cfg.kind == "keras" else cfg.handle
        raise ModelRefused(f"model.use: the classifier {where} has {found} outputs but data.classes has "
                           f"{num_classes} classes: list its classes in data.classes, in its output order, or use "
                           "it with model.use = 'backbone' (a new head for your classes)")
    if outputs == "logits":
        x = keras.layers.Softmax(name="probs")(x)
    return keras.Model(inputs, x, name=f"raysal_{cfg.kind}")


def set_backbone_trainable(model: keras.Model, trainable: bool) -> None:
    model.get_layer(BACKBONE).trainable = trainable


def members(model: keras.Model) -> list[keras.layers.Dense]:
    """The Dense heads whose probabilities ``model`` averages (its ``ENSEMBLE`` layer), in order;
    [] when it has no such layer."""
    average = next((layer for layer in model.layers if layer.name == ENSEMBLE), None)
    if not isinstance(average, keras.layers.Average):
        return []
    dense = {id(layer.output): layer for layer in model.layers if isinstance(layer, keras.layers.Dense)}
    found = [dense.get(id(tensor)) for tensor in average.input]
    return [] if None in found else found


def training_view(model: keras.Model) -> tuple[keras.Model, Any, Any]:
    """(model to fit, loss, accuracy metric) for ``compile``. One head: the model itself. K members:
    a view of the same layers whose output is the members' probabilities ``[n, K, c]``, its loss
    the mean of each member's own cross-entropy, so each member learns as if alone (a loss on
    their average would co-adapt them: the ensemble would disagree less than K models); its
    accuracy is the average's, what the model outputs."""
    heads = members(model)
    if not heads:
        return model, "sparse_categorical_crossentropy", "accuracy"
    c = heads[0].units
    stacked = keras.layers.Concatenate(axis=1)([keras.layers.Reshape((1, c))(head.output) for head in heads])

    def members_loss(labels: tf.Tensor, probs: tf.Tensor) -> tf.Tensor:  # [n] or [n, 1], [n, K, c] -> [n, K]
        labels = tf.repeat(tf.reshape(labels, [-1, 1]), len(heads), axis=1)  # [n, K]
        return keras.losses.sparse_categorical_crossentropy(labels, probs)

    def accuracy(labels: tf.Tensor, probs: tf.Tensor) -> tf.Tensor:  # of the members' mean [n, c]
        return keras.metrics.sparse_categorical_accuracy(tf.reshape(labels, [-1]), tf.reduce_mean(probs, axis=1))

    return keras.Model(model.inputs, stacked, name=f"{model.name}_members"), members_loss, accuracy


def save_checkpoint(model: keras.Model, directory: str, cfg: ModelConfig, classes: Sequence[str]) -> None:
    """The weights, the config and classes, the backbone's digest, and the head as numpy
    (``HEAD_FILE``, when ``dense_head`` can express it): what rescoring from embeddings needs."""
    os.makedirs(directory, exist_ok=True)
    model.save_weights(os.path.join(directory, WEIGHTS_FILE))
    head = dense_head(model)
    if head is not None:
        with open(os.path.join(directory, HEAD_FILE), "wb") as f:
            f.write(head.to_bytes())
    meta = {"model": asdict(cfg), "classes": list(classes), DIGEST: backbone_digest(model, cfg),
            FILE_DIGESTS: {name: sha256_file(pafs.LocalFileSystem(), os.path.join(directory, name))
                           for name in (WEIGHTS_FILE, HEAD_FILE) if os.path.exists(os.path.join(directory, name))}}
    with open(os.path.join(directory, CONFIG_FILE), "w") as f:
        json.dump(meta, f, indent=2)


def read_checkpoint_meta(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(path) or not os.path.isfile(os.path.join(directory, WEIGHTS_FILE)):
        raise FileNotFoundError(f"{directory} is not a raysal model checkpoint (needs {CONFIG_FILE}, {WEIGHTS_FILE})")
    with open(path) as f:
        return json.load(f)


def load_checkpoint(directory: str) -> tuple[keras.Model, ModelConfig, list[str]]:
    """Rebuild the model from its stored config and load its weights, once they are found to be
    the files that were published (``check_files``)."""
    meta = read_checkpoint_meta(directory)
    check_files(directory, [WEIGHTS_FILE])
    cfg = ModelConfig.from_dict(meta["model"])
    model = build_model(cfg, len(meta["classes"]))
    model.load_weights(os.path.join(directory, WEIGHTS_FILE))
    return model, cfg, meta["classes"]


def embedding_model(model: keras.Model) -> keras.Model:
    """``model`` cut before its head: uint8 images in, what the head sees out (the backbone's
    features, the penultimate layer), flattened to ``[n, d]``. For a TF Hub classifier, which is all
    backbone, that is its logits."""
    # The backbone's output where this model calls it, not at the backbone's own functional node.
    features = model.get_layer(BACKBONE).get_output_at(-1)
    if len(features.shape) != 2:
        features = keras.layers.Flatten(name="embedding")(features)
    return keras.Model(model.inputs, features, name="embedding")


def dense_head(model: keras.Model) -> DenseHead | None:
    """The head of ``model`` as a ``DenseHead``: when it is one Dense layer with a bias whose
    output is softmaxed (by its own activation or a Softmax / Activation layer after it), with
    only Dropout besides, or K such softmax Dense members averaged (``model.heads``); else None
    (nothing else is applied without TensorFlow)."""
    layers = model.layers
    after = layers[layers.index(model.get_layer(BACKBONE)) + 1:]
    dense = [layer for layer in after if layer.weights]
    ensemble = members(model)
    if ensemble:
        exact = all(type(layer) is keras.layers.Dense and layer.use_bias and _activation(layer) == "softmax"
                    for layer in ensemble)
        others = [layer for layer in after if layer not in ensemble and not isinstance(layer, keras.layers.Dropout)]
        if not exact or len(dense) != len(ensemble) or [layer.name for layer in others] != [ENSEMBLE]:
            return None
        kernel, bias = (np.stack([layer.weights[i].numpy() for layer in ensemble]).astype(np.float32) for i in (0, 1))
        return DenseHead(kernel, bias)  # [K, d, c], [K, c]
    if len(dense) != 1 or type(dense[0]) is not keras.layers.Dense or not dense[0].use_bias:
        return None
    others = [layer for layer in after if layer is not dense[0] and not isinstance(layer, keras.layers.Dropout)]
    if not all(isinstance(layer, (keras.layers.Softmax, keras.layers.Activation)) for layer in others):
        return None
    if [a for a in map(_activation, [dense[0], *others]) if a != "linear"] != ["softmax"]:
        return None
    kernel, bias = (w.numpy().astype(np.float32) for w in dense[0].weights)
    return DenseHead(kernel, bias)


def backbone_digest(model: keras.Model, cfg: ModelConfig) -> str:
    """A hash of everything that makes the embeddings: the backbone's weights and the model
    config's input side (kind, size, preprocessing; not the head's dropout or number of members,
    nor whether its code is trusted). Equal digests: equal embeddings, so cached ones can be reused."""
    digest = hashlib.sha256()
    meta = {k: v for k, v in asdict(cfg).items() if k not in ("dropout", "heads", "outputs", "trust_code")}
    digest.update(json.dumps(meta, sort_keys=True).encode())
    for weight in model.get_layer(BACKBONE).weights:
        digest.update(str(tuple(weight.shape)).encode())  # not the name: it numbers layers per process
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest.hexdigest()


def predict_probs(model: keras.Model, images: NDArray[np.uint8], batch_size: int = 64) -> NDArray[np.float32]:
    """Class probabilities ``[n, c]`` for uint8 images ``[n, s, s, 3]``, in one process."""
    return model.predict(images, batch_size=batch_size, verbose=0)
