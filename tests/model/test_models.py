"""raysal.model.models: the real build paths (hub.KerasLayer, InceptionV3, small CNN, a user's saved
Keras model) on models made here, and the model's config.

Nothing is downloaded: the hub backbone is a tiny SavedModel saved by the test, the InceptionV3
weights file is written by the test from the same architecture, the Keras classifiers are saved
by the test in each format. Their Ray scoring and Ray Train paths are in test_own_model.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import raysal.model.keras_env  # noqa: F401  (before TensorFlow)
from raysal.config import ConfigError, ModelConfig, config_from_dict, load_config
from raysal.model import models

from _models import FEATURES, HUB_SIZE, save_hub_module, save_keras_classifier

INCEPTION_SIZE = 75
CLASSES = ["a", "b", "c"]
FAKE_URL = "https://tfhub.dev/raysal-test/tiny-feature-vector/1"


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def saved_model_dir(tmp_path_factory) -> str:
    return save_hub_module(str(tmp_path_factory.mktemp("hub") / "tiny_feature_vector"))


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
    for got, want in zip(loaded, saved, strict=True):
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

    assert meta == {"model": {"kind": "small_cnn", "input_size": 16, "handle": "", "path": "", "use": "backbone",
                              "outputs": "", "weights": "", "preprocess": "", "mean": [], "std": [],
                              "dropout": 0.3, "heads": 1, "trust_code": False}, "classes": CLASSES,
                    "backbone_digest": models.backbone_digest(model, cfg),
                    "sha256": {name: hashlib.sha256((tmp_path / "ckpt" / name).read_bytes()).hexdigest()
                               for name in (models.WEIGHTS_FILE, "head.npz")}}
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


# --- your own model: kind = keras, hub classifiers, preprocessing ----------------------------


def _saved_path(tmp_path, fmt: str, name: str = "net") -> str:
    return str(tmp_path / (f"{name}.{fmt}" if fmt in ("keras", "h5") else name))  # else a SavedModel folder


def _keras_cfg(path: str, **fields) -> ModelConfig:
    return ModelConfig(kind="keras", path=path, input_size=HUB_SIZE, **fields)


def _trainable_shapes(model: tf_keras.Model) -> list[list[int]]:
    return [w.shape.as_list() for w in model.trainable_weights]


@pytest.mark.parametrize("fmt", ["savedmodel", "keras", "h5"])
@pytest.mark.parametrize("ending", ["softmax", "logits", "softmax_layer"])
def test_keras_classifier_predicts_as_saved_with_its_last_layer_as_head(tmp_path, fmt, ending):
    path = _saved_path(tmp_path, fmt)
    net = save_keras_classifier(path, ending)
    model = models.build_model(_keras_cfg(path, use="classifier"), num_classes=3)
    images = _images(6, HUB_SIZE)

    probs = models.predict_probs(model, images)
    raw = net.predict(images.astype(np.float32) / 255.0, verbose=0)  # [6, 3]
    want = tf.nn.softmax(raw).numpy() if ending == "logits" else raw
    assert probs.shape == (6, 3)
    np.testing.assert_allclose(probs, want, atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    # head phase: only the final Dense trains; the conv layer before it is the frozen backbone
    assert _trainable_shapes(model) == [[4, 3], [3]]
    np.testing.assert_array_equal(model.get_layer(models.BACKBONE).get_weights()[0], net.layers[0].get_weights()[0])
    models.set_backbone_trainable(model, True)
    assert _trainable_shapes(model) == [[3, 3, 3, 4], [4], [4, 3], [3]]


@pytest.mark.parametrize("fmt", ["savedmodel", "keras", "h5"])
def test_keras_model_as_backbone_gets_a_new_head(tmp_path, fmt):
    path = _saved_path(tmp_path, fmt)
    net = save_keras_classifier(path, "logits")
    model = models.build_model(_keras_cfg(path, use="backbone"), num_classes=5)  # 3 logits -> 5 new classes

    probs = models.predict_probs(model, _images(4, HUB_SIZE))
    assert probs.shape == (4, 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert _trainable_shapes(model) == [[3, 5], [5]]  # the new head only
    backbone = model.get_layer(models.BACKBONE)
    for got, want in zip(backbone.get_weights(), net.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    models.set_backbone_trainable(model, True)
    assert _trainable_shapes(model) == [[3, 3, 3, 4], [4], [4, 3], [3], [3, 5], [5]]


def test_outputs_field_overrides_what_the_last_layer_says(tmp_path):
    path = _saved_path(tmp_path, "keras")
    net = save_keras_classifier(path, "logits")
    images = _images(3, HUB_SIZE)
    model = models.build_model(_keras_cfg(path, use="classifier", outputs="probs"), num_classes=3)
    assert not any(isinstance(layer, tf_keras.layers.Softmax) for layer in model.layers)  # taken at its word
    np.testing.assert_allclose(models.predict_probs(model, images),
                               net.predict(images.astype(np.float32) / 255.0, verbose=0), atol=1e-6)


@pytest.mark.parametrize(
    ("preprocess", "mean", "std", "want"),
    [
        pytest.param("", (), (), [0.0, 0.2, 1.0], id="default-unit"),
        pytest.param("unit", (), (), [0.0, 0.2, 1.0], id="unit"),
        pytest.param("symmetric", (), (), [-1.0, -0.6, 1.0], id="symmetric"),
        pytest.param("mean_std", (0.5, 0.4, 0.3), (0.25, 0.5, 0.7), [-2.0, -0.4, 1.0], id="mean-std"),
    ],
)
def test_preprocess_maps_pixels_to_the_configured_range(tmp_path, preprocess, mean, std, want):
    """A weightless backbone (a global average) shows exactly what the model receives."""
    inputs = tf_keras.Input((HUB_SIZE, HUB_SIZE, 3))
    path = str(tmp_path / "average.keras")
    tf_keras.Model(inputs, tf_keras.layers.GlobalAveragePooling2D()(inputs)).save(path)
    cfg = _keras_cfg(path, preprocess=preprocess, mean=mean, std=std)
    model = models.build_model(cfg, num_classes=3)
    rescale = next(layer for layer in model.layers if isinstance(layer, tf_keras.layers.Rescaling))
    pixels = np.broadcast_to(np.array([0, 51, 255], np.uint8), (1, HUB_SIZE, HUB_SIZE, 3))  # R, G, B
    seen = model.get_layer(models.BACKBONE)(rescale(pixels))  # [1, 3]
    np.testing.assert_allclose(seen.numpy()[0], want, atol=1e-6)


def test_default_preprocess_of_each_kind():
    assert models.pixel_scale_offset(ModelConfig(kind="inception_v3", input_size=75)) == (1 / 127.5, -1.0)
    assert models.pixel_scale_offset(ModelConfig(kind="small_cnn")) == (1 / 255.0, 0.0)
    assert models.pixel_scale_offset(ModelConfig(kind="hub", handle="h")) == (1 / 255.0, 0.0)
    assert models.pixel_scale_offset(ModelConfig(kind="small_cnn", preprocess="symmetric")) == (1 / 127.5, -1.0)


def test_keras_checkpoint_round_trip_keeps_mean_std_and_fine_tuned_weights(tmp_path):
    path = _saved_path(tmp_path, "h5")
    save_keras_classifier(path, "softmax")
    cfg = _keras_cfg(path, use="classifier", preprocess="mean_std", mean=(0.5, 0.5, 0.5), std=(0.2, 0.3, 0.4))
    model = models.build_model(cfg, num_classes=3)
    conv = model.get_layer(models.BACKBONE).weights[0]
    conv.assign(conv.numpy() * -1.5)  # as if fine-tuned: differs from the saved file
    images = _images(5, HUB_SIZE, seed=4)
    expected = models.predict_probs(model, images)

    models.save_checkpoint(model, str(tmp_path / "ckpt"), cfg, CLASSES)
    meta = models.read_checkpoint_meta(str(tmp_path / "ckpt"))
    loaded, loaded_cfg, _ = models.load_checkpoint(str(tmp_path / "ckpt"))

    assert meta["model"]["mean"] == [0.5, 0.5, 0.5] and meta["model"]["use"] == "classifier"  # JSON lists
    assert loaded_cfg == cfg and loaded_cfg.std == (0.2, 0.3, 0.4)  # back to tuples
    np.testing.assert_array_equal(models.predict_probs(loaded, images), expected)


def test_checkpoint_written_before_these_fields_still_loads(tmp_path):
    cfg = ModelConfig(kind="small_cnn", input_size=16)
    models.save_checkpoint(models.build_model(cfg, 3), str(tmp_path), cfg, CLASSES)
    meta_path = tmp_path / models.CONFIG_FILE
    old = {"model": {"kind": "small_cnn", "input_size": 16, "handle": "", "weights": "", "dropout": 0.2},
           "classes": CLASSES}
    meta_path.write_text(json.dumps(old))
    _, loaded_cfg, _ = models.load_checkpoint(str(tmp_path))
    assert loaded_cfg == cfg


@pytest.mark.parametrize(
    ("ending", "fields", "classes", "message"),
    [
        pytest.param("softmax", {}, 4, r"^model\.use: the classifier .* has 3 outputs but data\.classes has 4",
                     id="class-count"),
        pytest.param("sigmoid", {}, 3, r"^model\.outputs: cannot tell whether .* logits or probabilities",
                     id="unknown-activation"),
        pytest.param("softmax", {"input_size": 24}, 3, r"^model\.input_size: .* takes images of shape \(16, 16, 3\)",
                     id="input-size"),
    ],
)
def test_keras_model_that_does_not_fit_the_config_is_refused(tmp_path, ending, fields, classes, message):
    path = _saved_path(tmp_path, "keras")
    save_keras_classifier(path, ending)
    cfg = ModelConfig(**{"kind": "keras", "path": path, "use": "classifier", "input_size": HUB_SIZE, **fields})
    with pytest.raises(models.ModelRefused, match=message):
        models.build_model(cfg, num_classes=classes)


def test_file_that_is_not_a_keras_model_is_refused(tmp_path, saved_model_dir):
    notes = tmp_path / "model.h5"
    notes.write_text("not a model\n")
    with pytest.raises(models.ModelRefused, match=r"^model\.path: .*model\.h5 is not a saved Keras model"):
        models.build_model(_keras_cfg(str(notes)), 3)
    # a SavedModel of a plain tf.Module loads in TensorFlow, but it is a hub model, not a Keras one
    with pytest.raises(models.ModelRefused, match=r"not a Keras model: load it with model\.kind = 'hub'"):
        models.build_model(_keras_cfg(saved_model_dir), 3)


def test_hub_folder_that_is_not_a_saved_model_is_refused(tmp_path):
    with pytest.raises(models.ModelRefused, match=r"^model\.handle: .* is not a TF2 SavedModel .*saved_model\.pb"):
        models.build_model(ModelConfig(kind="hub", handle=str(tmp_path), input_size=HUB_SIZE), 3)


def test_missing_keras_model_is_unavailable(tmp_path):
    missing = str(tmp_path / "absent.keras")
    assert models.keras_model_available(missing) == f"saved Keras model {missing} does not exist"
    with pytest.raises(models.ModelUnavailable, match=r"^model\.path: saved Keras model .*absent\.keras does not"):
        models.build_model(_keras_cfg(missing), 3)


@pytest.fixture(scope="module")
def hub_classifier_dir(tmp_path_factory) -> str:
    return save_hub_module(str(tmp_path_factory.mktemp("hub") / "tiny_classifier"), width=3)


def test_hub_classifier_is_the_whole_model(hub_classifier_dir):
    model = models.build_model(ModelConfig(kind="hub", handle=hub_classifier_dir, input_size=HUB_SIZE,
                                           use="classifier"), num_classes=3)
    images = _images(5, HUB_SIZE)
    kernel = model.get_layer(models.BACKBONE).get_weights()[0]  # [3, 3]
    logits = images.astype(np.float32).mean(axis=(1, 2)) / 255.0 @ kernel  # what the module computes
    np.testing.assert_allclose(models.predict_probs(model, images), tf.nn.softmax(logits).numpy(), atol=1e-5)
    assert model.trainable_weights == []  # no head of its own
    models.set_backbone_trainable(model, True)
    assert _trainable_shapes(model) == [[3, 3]]


def test_hub_classifier_with_other_classes_is_refused(hub_classifier_dir):
    cfg = ModelConfig(kind="hub", handle=hub_classifier_dir, input_size=HUB_SIZE, use="classifier")
    with pytest.raises(models.ModelRefused, match=r"^model\.use: the classifier .* has 3 outputs but data\.classes "
                                                 r"has 5 classes"):
        models.build_model(cfg, num_classes=5)


def test_hub_classification_handle_as_backbone_gets_a_new_head(hub_classifier_dir):
    model = models.build_model(ModelConfig(kind="hub", handle=hub_classifier_dir, input_size=HUB_SIZE), 5)
    probs = models.predict_probs(model, _images(4, HUB_SIZE))
    assert probs.shape == (4, 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert _trainable_shapes(model) == [[3, 5], [5]]


# --- a model on object storage ---------------------------------------------------------------


def _upload(local: str, uri: str) -> None:
    import pyarrow.fs as pafs

    from raysal import storage

    fs, inner = storage.resolve(uri)
    pafs.copy_files(local, inner, destination_filesystem=fs)


@pytest.mark.parametrize("fmt", ["keras", "savedmodel"])
def test_keras_model_on_s3_loads_like_the_local_one(s3, tmp_path, fmt):
    from raysal import storage

    local = _saved_path(tmp_path, fmt)
    save_keras_classifier(local, "softmax")
    uri = f"s3://raysal-test/own-model/{fmt}/{os.path.basename(local)}"
    _upload(local, uri)
    with storage.local_copy(uri) as copy:  # a file keeps its name; a folder comes whole
        kept = copy
        if fmt == "keras":
            assert os.path.isfile(copy) and os.path.basename(copy) == "net.keras"
        else:
            assert os.path.isfile(os.path.join(copy, "saved_model.pb"))
            assert os.path.isdir(os.path.join(copy, "variables"))
    assert not os.path.exists(kept)  # the download is removed after the block

    images = _images(4, HUB_SIZE)
    from_s3 = models.build_model(_keras_cfg(uri, use="classifier"), 3)
    from_disk = models.build_model(_keras_cfg(local, use="classifier"), 3)
    np.testing.assert_array_equal(models.predict_probs(from_s3, images), models.predict_probs(from_disk, images))
    assert models.keras_model_available(uri) is None
    assert "does not exist" in models.keras_model_available(uri + ".missing")


# --- the model's config ----------------------------------------------------------------------


def test_own_model_fields_load_from_toml_overrides_and_round_trip():
    cfg = load_config("demo", {"model.kind": "keras", "model.path": "s3://bucket/models/net.keras",
                               "model.use": "classifier", "model.outputs": "logits", "model.preprocess": "mean_std",
                               "model.mean": [0.485, 0.456, 0.406], "model.std": [0.229, 0.224, 1]})
    assert cfg.model.mean == (0.485, 0.456, 0.406) and cfg.model.std == (0.229, 0.224, 1.0)
    assert type(cfg.model.std[2]) is float
    assert config_from_dict(cfg.to_dict()) == cfg
    assert ModelConfig.from_dict(cfg.to_dict()["model"]) == cfg.model


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"model.kind": "keras"}, r"^model\.path: is required when model\.kind = 'keras'", id="no-path"),
        pytest.param({"model.path": "net.keras"}, r"^model\.path: is only read when model\.kind = 'keras', not "
                     r"'small_cnn'", id="path-without-keras"),
        pytest.param({"model.kind": "keras", "model.path": "n.h5", "model.use": "head"},
                     r"^model\.use: 'head' is not one of \('backbone', 'classifier'\)", id="unknown-use"),
        pytest.param({"model.use": "classifier"}, r"^model\.use: 'classifier' needs a pretrained classifier .* not "
                     r"'small_cnn'", id="classifier-from-scratch"),
        pytest.param({"model.kind": "keras", "model.path": "n.h5", "model.use": "classifier", "model.outputs": "raw"},
                     r"^model\.outputs: 'raw' is not one of", id="unknown-outputs"),
        pytest.param({"model.kind": "keras", "model.path": "n.h5", "model.outputs": "logits"},
                     r"^model\.outputs: is only read when model\.use = 'classifier'", id="outputs-of-backbone"),
        pytest.param({"model.preprocess": "imagenet"}, r"^model\.preprocess: 'imagenet' is not one of",
                     id="unknown-preprocess"),
        pytest.param({"model.preprocess": "mean_std", "model.mean": [0.5, 0.5, 0.5]},
                     r"^model\.std: needs 3 values \(R, G, B\) when model\.preprocess = 'mean_std', got \[\]",
                     id="mean-std-without-std"),
        pytest.param({"model.preprocess": "mean_std", "model.mean": [0.5], "model.std": [0.2, 0.2, 0.2]},
                     r"^model\.mean: needs 3 values .* got \[0\.5\]", id="one-mean"),
        pytest.param({"model.preprocess": "mean_std", "model.mean": [0.5] * 3, "model.std": [0.2, 0, 0.2]},
                     r"^model\.std: every value must be > 0, got \[0\.2, 0\.0, 0\.2\]", id="zero-std"),
        pytest.param({"model.mean": [0.5] * 3}, r"^model\.mean: is only read when model\.preprocess = 'mean_std'",
                     id="mean-without-mean-std"),
        pytest.param({"model.preprocess": "mean_std", "model.mean": [0.5, "a", 0.5], "model.std": [0.2] * 3},
                     r"^model\.mean: must be a list of finite numbers, got \[0\.5, 'a', 0\.5\]", id="mean-not-numbers"),
        pytest.param({"model.kind": "hub", "model.handle": "h", "model.use": "classifier"},
                     r"^train\.head_epochs: must be 0 when model\.kind = 'hub' and model\.use = 'classifier' .* got 3",
                     id="hub-classifier-head-epochs"),
    ],
)
def test_bad_own_model_config_is_refused_naming_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo", {"train.head_epochs": 3, **overrides})


def test_hub_classifier_trains_with_fine_tuning_only():
    cfg = load_config("demo", {"model.kind": "hub", "model.handle": "h", "model.use": "classifier",
                               "train.head_epochs": 0, "train.finetune_epochs": 2})
    assert (cfg.model.use, cfg.train.head_epochs) == ("classifier", 0)
    keras_head = load_config("demo", {"model.kind": "keras", "model.path": "n.keras", "model.use": "classifier",
                                      "train.head_epochs": 3})
    assert keras_head.train.head_epochs == 3  # a Keras classifier's last layer is its head
