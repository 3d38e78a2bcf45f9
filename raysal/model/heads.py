"""A Dropout + Dense softmax head trained alone, in-process, on cached embeddings: what the
simulation retrains each round (``raysal.simulation``), as one head or K members (``model.heads``,
the ``ensemble`` strategy).

Full-batch Adam for a fixed number of steps from given initial weights, so a head depends on its
labelled set alone, not on batch order; TensorFlow runs on one thread with deterministic ops
(``tensorflow``), so a rerun gives the same head. Members differ by their initial weights alone
and each fits its own loss, as the K heads of a model do (``models.training_view``).
TensorFlow is imported when called, not on import.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray

from raysal.model.embeddings import DenseHead

Weights = list[NDArray[np.float32]]  # a head's [kernel [d, c], bias [c]], as Keras' get_weights gives them


@functools.cache  # once per worker process: TensorFlow's threads are set before its first op
def tensorflow() -> tuple[Any, Any]:
    """TensorFlow and Keras 2 in a task: one thread each way (a task holds one CPU), deterministic ops."""
    from raysal.model import keras_env

    keras_env.use_legacy_keras()
    import tensorflow as tf
    import tf_keras as keras

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow ran before in this process (in-process use): its threads stay
        pass
    tf.config.experimental.enable_op_determinism()
    # Each head trains in a tf.function of its own (its dropout draws start from the seed):
    # TensorFlow's warning that functions are retraced says what is meant here.
    tf.get_logger().setLevel("ERROR")
    return tf, keras


def _head(keras: Any, dim: int, n_classes: int, dropout: float) -> Any:
    features = keras.Input((dim,), name="embedding")
    x = keras.layers.Dropout(dropout)(features)
    return keras.Model(features, keras.layers.Dense(n_classes, activation="softmax", name="head")(x))


def initial_weights(dim: int, n_classes: int, dropout: float, members: int, seed: int) -> list[Weights]:
    """``members`` heads' initial weights, drawn one after another from ``seed``: the first is
    what one head starts from, whatever ``members`` is."""
    _, keras = tensorflow()
    keras.utils.set_random_seed(seed)
    return [_head(keras, dim, n_classes, dropout).get_weights() for _ in range(members)]


def train_head(features: NDArray[np.float32], labels: NDArray[np.int64], initial: Weights, steps: int,
               learning_rate: float, dropout: float, seed: int) -> DenseHead:
    """The head trained on ``features`` ``[n, d]`` from ``initial`` weights: ``steps`` full-batch
    Adam steps, its dropout draws from ``seed``. Returned as the numpy head that rescoring applies."""
    tf, keras = tensorflow()
    keras.utils.set_random_seed(seed)  # the dropout masks
    head = _head(keras, features.shape[1], initial[-1].shape[0], dropout)
    head.set_weights(initial)
    optimizer = keras.optimizers.Adam(learning_rate)
    x = tf.constant(features)  # [n, d]
    y = tf.constant(labels)  # [n]
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    @tf.function
    def fit() -> None:
        for _ in tf.range(steps):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, head(x, training=True))
            gradients = tape.gradient(loss, head.trainable_variables)
            optimizer.apply_gradients(zip(gradients, head.trainable_variables, strict=True))

    fit()
    return DenseHead(*head.get_layer("head").get_weights())


def train_heads(features: NDArray[np.float32], labels: NDArray[np.int64], initial: Sequence[Weights], steps: int,
                learning_rate: float, dropout: float, seed: int) -> DenseHead:
    """One head per initial weights, each trained alone (``train_head``): one ``DenseHead``, of
    K members (``[K, d, c]``) when given K > 1."""
    trained = [train_head(features, labels, weights, steps, learning_rate, dropout, seed) for weights in initial]
    if len(trained) == 1:
        return trained[0]
    return DenseHead(np.stack([head.kernel for head in trained]), np.stack([head.bias for head in trained]))
