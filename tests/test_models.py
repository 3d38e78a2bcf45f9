"""raysal.models: the real build paths (hub.KerasLayer, InceptionV3, small CNN) on models made here.

Nothing is downloaded: the hub backbone is a tiny SavedModel saved by the test, the InceptionV3
weights file is written by the test from the same architecture.
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.request

import raysal.keras_env  # noqa: F401  (before TensorFlow)
from raysal import models
from raysal.config import ModelConfig

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

HUB_SIZE = 16
FEATURES = 8
INCEPTION_SIZE = 75
CLASSES = ["a", "b", "c"]
FAKE_URL = "https://tfhub.dev/raysal-test/tiny-feature-vector/1"


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


class _TinyFeatureVector(tf.Module):
    """[n, 16, 16, 3] float32 in [0, 1] -> [n, 8]: per-channel means through a trainable kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel = tf.Variable(tf.random.stateless_normal([3, FEATURES], seed=[1, 2]), name="kernel")

    @tf.function(input_signature=[tf.TensorSpec([None, HUB_SIZE, HUB_SIZE, 3], tf.float32)])
    def __call__(self, images):
        return tf.matmul(tf.reduce_mean(images, axis=[1, 2]), self.kernel)


@pytest.fixture(scope="module")
def saved_model_dir(tmp_path_factory) -> str:
    """A TF2 SavedModel in the reusable-SavedModel form hub.KerasLayer expects (variables listed)."""
    net = _TinyFeatureVector()
    export = tf.train.Checkpoint(net=net)
    export.__call__ = net.__call__
    export.variables = list(net.variables)
    export.trainable_variables = list(net.trainable_variables)
    export.regularization_losses = []
    path = str(tmp_path_factory.mktemp("hub") / "tiny_feature_vector")
    tf.saved_model.save(export, path)
    return path


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """An empty TFHUB_CACHE_DIR, the default (compressed) load format, and no network at all."""
    cache = tmp_path / "tfhub_cache"
    cache.mkdir()
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    monkeypatch.delenv("TFHUB_MODEL_LOAD_FORMAT", raising=False)

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:1]}")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return cache


# --- hub backbone ---------------------------------------------------------------------------


def test_hub_model_outputs_softmax_rows(saved_model_dir):
    model = models.build_model(ModelConfig(kind="hub", handle=saved_model_dir, input_size=HUB_SIZE),
                               num_classes=3)
    probs = models.predict_probs(model, _images(5, HUB_SIZE))
    assert probs.shape == (5, 3)
    assert np.all(np.isfinite(probs)) and np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_hub_backbone_frozen_by_default_and_unfrozen_on_request(saved_model_dir):
    model = models.build_model(ModelConfig(kind="hub", handle=saved_model_dir, input_size=HUB_SIZE),
                               num_classes=3)
    backbone = model.get_layer(models.BACKBONE)
    head_weights = len(model.get_layer("head").trainable_weights)  # kernel + bias
    assert not backbone.trainable
    assert backbone.trainable_weights == [] and len(backbone.non_trainable_weights) == 1
    assert len(model.trainable_weights) == head_weights

    models.set_backbone_trainable(model, True)
    assert backbone.trainable
    assert [w.shape.as_list() for w in backbone.trainable_weights] == [[3, FEATURES]]
    assert len(model.trainable_weights) == head_weights + 1

    models.set_backbone_trainable(model, False)
    assert len(model.trainable_weights) == head_weights


def test_hub_handle_available_for_local_folders(saved_model_dir, tmp_path):
    assert models.hub_handle_available(saved_model_dir) is None
    missing = str(tmp_path / "no_such_model")
    message = models.hub_handle_available(missing)
    assert message is not None and missing in message


def test_missing_hub_folder_raises_model_unavailable(tmp_path):
    with pytest.raises(models.ModelUnavailable, match="model.handle"):
        models.build_model(ModelConfig(kind="hub", handle=str(tmp_path / "absent"), input_size=HUB_SIZE), 3)


def test_uncached_hub_url_is_reported_without_downloading(hub_cache):
    message = models.hub_handle_available(FAKE_URL)
    assert message is not None
    assert FAKE_URL in message and "TFHUB_CACHE_DIR" in message and str(hub_cache) in message
    with pytest.raises(models.ModelUnavailable, match="model.handle"):
        models.build_model(ModelConfig(kind="hub", handle=FAKE_URL, input_size=HUB_SIZE), 3)


def test_cached_hub_url_is_available_and_loads_offline(hub_cache, saved_model_dir):
    # tensorflow_hub's compressed resolver (the default load format) caches a URL handle in
    # $TFHUB_CACHE_DIR/<sha1 of the handle> and uses that folder without any request once it exists.
    shutil.copytree(saved_model_dir, hub_cache / hashlib.sha1(FAKE_URL.encode("utf8")).hexdigest())
    assert models.hub_handle_available(FAKE_URL) is None

    model = models.build_model(ModelConfig(kind="hub", handle=FAKE_URL, input_size=HUB_SIZE), 3)
    local = models.build_model(ModelConfig(kind="hub", handle=saved_model_dir, input_size=HUB_SIZE), 3)
    np.testing.assert_array_equal(model.get_layer(models.BACKBONE).get_weights()[0],
                                  local.get_layer(models.BACKBONE).get_weights()[0])


def test_hub_cache_folder_without_saved_model_is_not_available(hub_cache):
    partial = hub_cache / hashlib.sha1(FAKE_URL.encode("utf8")).hexdigest()
    (partial / "variables").mkdir(parents=True)  # an interrupted copy: no saved_model.pb
    assert models.hub_handle_available(FAKE_URL) is not None


def test_hub_checkpoint_round_trip_keeps_fine_tuned_backbone(saved_model_dir, tmp_path):
    tf_keras.utils.set_random_seed(3)
    cfg = ModelConfig(kind="hub", handle=saved_model_dir, input_size=HUB_SIZE)
    model = models.build_model(cfg, num_classes=3)
    kernel = model.get_layer(models.BACKBONE).weights[0]
    tuned = kernel.numpy() * -2.0 + 0.5  # as if fine-tuned: differs from the SavedModel's values
    kernel.assign(tuned)
    images = _images(6, HUB_SIZE, seed=1)
    expected = models.predict_probs(model, images)

    models.save_checkpoint(model, str(tmp_path / "ckpt"), cfg, CLASSES)
    loaded, loaded_cfg, classes = models.load_checkpoint(str(tmp_path / "ckpt"))

    assert loaded_cfg == cfg and classes == CLASSES
    np.testing.assert_array_equal(loaded.get_layer(models.BACKBONE).get_weights()[0], tuned)
    np.testing.assert_array_equal(models.predict_probs(loaded, images), expected)


# --- InceptionV3 ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory) -> tuple[str, list[np.ndarray]]:
    """An include_top=False InceptionV3 weights file written here, and the weights in it."""
    tf_keras.utils.set_random_seed(7)
    net = tf_keras.applications.InceptionV3(include_top=False, weights=None,
                                            input_shape=(INCEPTION_SIZE, INCEPTION_SIZE, 3), pooling="avg")
    path = str(tmp_path_factory.mktemp("inception") / "w.h5")
    net.save_weights(path)
    return path, net.get_weights()


@pytest.fixture(scope="module")
def inception_random():
    return models.build_model(ModelConfig(kind="inception_v3", input_size=INCEPTION_SIZE), num_classes=3)


def test_inception_random_init_builds(inception_random):
    probs = models.predict_probs(inception_random, _images(2, INCEPTION_SIZE))
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    backbone = inception_random.get_layer(models.BACKBONE)
    assert backbone.output_shape == (None, 2048) and not backbone.trainable


def test_inception_loads_local_weights_file(inception_weights, inception_random):
    path, saved = inception_weights
    model = models.build_model(ModelConfig(kind="inception_v3", input_size=INCEPTION_SIZE, weights=path), 3)
    loaded = model.get_layer(models.BACKBONE).get_weights()
    assert len(loaded) == len(saved)
    for got, want in zip(loaded, saved):
        np.testing.assert_array_equal(got, want)
    # the comparison is not vacuous: a random-init backbone differs from the file
    random_first_kernel = inception_random.get_layer(models.BACKBONE).get_weights()[0]
    assert random_first_kernel.shape == saved[0].shape and not np.array_equal(random_first_kernel, saved[0])


def test_inception_missing_weights_file_raises(tmp_path):
    missing = str(tmp_path / "nope.h5")
    with pytest.raises(models.ModelUnavailable, match="model.weights") as info:
        models.build_model(ModelConfig(kind="inception_v3", input_size=INCEPTION_SIZE, weights=missing), 3)
    assert missing in str(info.value)


# --- small CNN and checkpoints --------------------------------------------------------------


def test_small_cnn_checkpoint_round_trip(tmp_path):
    tf_keras.utils.set_random_seed(5)
    cfg = ModelConfig(kind="small_cnn", input_size=16, dropout=0.3)
    model = models.build_model(cfg, num_classes=3)
    images = _images(8, 16, seed=2)
    expected = models.predict_probs(model, images)
    directory = str(tmp_path / "ckpt")

    models.save_checkpoint(model, directory, cfg, CLASSES)
    meta = models.read_checkpoint_meta(directory)
    loaded, loaded_cfg, classes = models.load_checkpoint(directory)

    assert meta == {"model": {"kind": "small_cnn", "input_size": 16, "handle": "", "weights": "",
                              "dropout": 0.3}, "classes": CLASSES}
    assert loaded_cfg == cfg and classes == CLASSES
    np.testing.assert_array_equal(models.predict_probs(loaded, images), expected)
    fresh = models.build_model(cfg, num_classes=3)  # without the weights, predictions differ
    assert not np.allclose(models.predict_probs(fresh, images), expected)


def test_read_checkpoint_meta_refuses_other_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a raysal model checkpoint"):
        models.read_checkpoint_meta(str(tmp_path))
    (tmp_path / models.CONFIG_FILE).write_text('{"model": {}, "classes": []}')
    with pytest.raises(FileNotFoundError, match=models.WEIGHTS_FILE):  # weights missing
        models.read_checkpoint_meta(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        models.load_checkpoint(str(tmp_path / "absent"))
