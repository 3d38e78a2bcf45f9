"""Tiny models the tests save: a TF Hub SavedModel and Keras classifiers in each format."""

from __future__ import annotations

import warnings

import tensorflow as tf
import tf_keras

import raysal.model.keras_env  # noqa: F401  (before TensorFlow)

HUB_SIZE = 16
FEATURES = 8


class _TinyHubModule(tf.Module):
    """[n, 16, 16, 3] float32 in [0, 1] -> [n, width]: per-channel means through a trainable kernel
    (a feature vector, or a classifier's logits when width is its class count)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.kernel = tf.Variable(tf.random.stateless_normal([3, width], seed=[1, 2]), name="kernel")

    @tf.function(input_signature=[tf.TensorSpec([None, HUB_SIZE, HUB_SIZE, 3], tf.float32)])
    def __call__(self, images):
        return tf.matmul(tf.reduce_mean(images, axis=[1, 2]), self.kernel)


def save_hub_module(path: str, width: int = FEATURES) -> str:
    """A TF2 SavedModel in the reusable-SavedModel form hub.KerasLayer expects (variables listed)."""
    net = _TinyHubModule(width)
    export = tf.train.Checkpoint(net=net)
    export.__call__ = net.__call__
    export.variables = list(net.variables)
    export.trainable_variables = list(net.trainable_variables)
    export.regularization_losses = []
    tf.saved_model.save(export, path)
    return path


def save_keras_classifier(path: str, ending: str = "softmax", classes: int = 3, size: int = HUB_SIZE,
                          seed: int = 0) -> tf_keras.Model:
    """A tiny conv classifier saved at ``path`` (a ``.keras`` or ``.h5`` file, else a SavedModel
    folder), and returned. ``ending``: softmax (a Dense with softmax), logits (a plain Dense),
    softmax_layer (a plain Dense, then a Softmax layer) or sigmoid."""
    tf_keras.utils.set_random_seed(seed)
    layers = tf_keras.layers
    activation = {"softmax": "softmax", "sigmoid": "sigmoid"}.get(ending)
    stack = [tf_keras.Input((size, size, 3)), layers.Conv2D(4, 3, activation="relu"), layers.GlobalAveragePooling2D(),
             layers.Dense(classes, activation=activation), *([layers.Softmax()] if ending == "softmax_layer" else [])]
    net = tf_keras.Sequential(stack)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "You are saving your model as an HDF5 file")  # .h5 is what we test
        net.save(path)
    return net
