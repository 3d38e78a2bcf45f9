"""Your own model through the real Ray paths: Ray Train (head phase, then fine-tuning) and Ray
Data scoring, for a saved Keras model in each use and for TF Hub classifiers and feature vectors;
and the preflight that refuses a model before any Ray work.

Every model is tiny and saved by the test (16x16 images, a 4-filter conv or a 3xN kernel), one
epoch per phase: what is checked is which weights each phase moves, and that Ray's scores equal
the same checkpoint's in-process probabilities.
"""

from __future__ import annotations

import numpy as np
import pytest
import tf_keras

import raysal.model.keras_env  # noqa: F401  (before TensorFlow)
from raysal.config import Config, load_config
from raysal.model import models
from raysal.run import preflight, scoring

from _models import HUB_SIZE, save_hub_module, save_keras_classifier

CLASSES = ["red", "green", "blue"]
COLOURS = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]])  # [c, 3]: one colour per class


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images of each class's colour ``[n, 16, 16, 3]`` and their labels ``[n]``."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    noise = rng.integers(-40, 40, (n, HUB_SIZE, HUB_SIZE, 3))
    return np.clip(COLOURS[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8), labels


def _config(head_epochs: int, finetune_epochs: int, **model: object) -> Config:
    return load_config("demo", {
        "data.classes": CLASSES, "model.input_size": HUB_SIZE, **{f"model.{k}": v for k, v in model.items()},
        "train.num_workers": 1, "train.batch_size": 8, "train.head_epochs": head_epochs,
        "train.finetune_epochs": finetune_epochs, "train.head_learning_rate": 0.05,
        "train.finetune_learning_rate": 0.05, "train.max_failures": 0, "score.batch_size": 8, "score.top_probs": 3})


def _train(cfg: Config, tmp_path, name: str, init_uri: str | None = None) -> tf_keras.Model:
    """Train through Ray Train on 24 images (3 batches), validate on 6; the trained checkpoint's model."""
    import ray.data

    from raysal.model import train

    def dataset(n: int, seed: int) -> ray.data.Dataset:
        images, labels = _images(n, seed)
        return ray.data.from_items([{"image": image, "label": int(label)}
                                    for image, label in zip(images, labels, strict=True)])

    result = train.train_model(cfg, dataset(24, 0), dataset(6, 1), output_dir=str(tmp_path / name),
                               storage_path=str(tmp_path / "ray_train"), run_name=name, init_uri=init_uri)
    assert set(result.metrics) >= {"loss", "accuracy", "val_accuracy"}
    assert np.isfinite(result.metrics["loss"])
    return models.load_checkpoint(result.model_dir)[0]


def _initial_checkpoint(cfg: Config, directory: str) -> tf_keras.Model:
    """The model before training, saved where ``train_model(init_uri=...)`` starts from."""
    tf_keras.utils.set_random_seed(cfg.seed)
    model = models.build_model(cfg.model, len(CLASSES))
    models.save_checkpoint(model, directory, cfg.model, CLASSES)
    return model


def _assert_ray_scores_equal_in_process(cfg: Config, model_dir: str) -> None:
    """Score 10 images with the Ray Data actor pool; compare with the checkpoint loaded here."""
    import ray.data

    images, labels = _images(10, seed=2)
    rows = ray.data.from_items([{"image_id": i, "uri": f"memory:{i}", "label": int(label), "image": image, "error": ""}
                                for i, (image, label) in enumerate(zip(images, labels, strict=True))])
    scored = sorted(scoring.score(rows, model_dir, cfg).take_all(), key=lambda r: r["image_id"])
    probs = models.predict_probs(models.load_checkpoint(model_dir)[0], images)  # [10, 3]

    assert [r["image_id"] for r in scored] == list(range(10)) and all(r["error"] == "" for r in scored)
    top_probs = np.stack([r["top_probs"] for r in scored])  # [10, 3]: every class, most likely first
    np.testing.assert_allclose(top_probs, -np.sort(-probs, axis=1), atol=1e-5)
    np.testing.assert_allclose(top_probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal([r["predicted"] for r in scored], probs.argmax(axis=1))
    np.testing.assert_allclose([r["score"] for r in scored], 1.0 - probs.max(axis=1), atol=1e-5)  # least confidence


def _weights(model: tf_keras.Model, layer: str) -> list[np.ndarray]:
    return model.get_layer(layer).get_weights()


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    assert [x.shape for x in a] == [y.shape for y in b]
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


# --- kind = keras ----------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_keras_classifier_file_head_then_finetune(ray_session, tmp_path):
    """A .keras classifier ending in logits, its own last layer as head."""
    path = str(tmp_path / "net.keras")
    save_keras_classifier(path, "logits")
    cfg = _config(head_epochs=1, finetune_epochs=1, kind="keras", path=path, use="classifier")
    saved = models.build_model(cfg.model, len(CLASSES))  # the file's weights, untrained
    head = saved.layers[-2].name  # the file's last Dense; a Softmax follows it for the logits

    trained = _train(cfg, tmp_path, "keras-classifier")

    assert isinstance(trained.layers[-1], tf_keras.layers.Softmax)
    assert not _same(_weights(trained, head), _weights(saved, head))  # the head phase trained it
    assert not _same(_weights(trained, models.BACKBONE), _weights(saved, models.BACKBONE))  # fine-tuned
    _assert_ray_scores_equal_in_process(cfg, str(tmp_path / "keras-classifier"))


@pytest.mark.timeout(300)
def test_keras_saved_model_as_backbone_stays_frozen_in_the_head_phase(ray_session, tmp_path):
    """A SavedModel folder's classifier as a backbone under three new heads (``model.heads``),
    each trained on its own loss through Ray Train; head phase only. Ray Train only: scoring a
    Keras model through Ray is the Keras classifier's test."""
    path = str(tmp_path / "net_savedmodel")
    save_keras_classifier(path, "softmax")
    cfg = _config(head_epochs=1, finetune_epochs=0, kind="keras", path=path, use="backbone", heads=3)
    initial = _initial_checkpoint(cfg, str(tmp_path / "init"))

    trained = _train(cfg, tmp_path, "keras-backbone", init_uri=str(tmp_path / "init"))

    assert _same(_weights(trained, models.BACKBONE), _weights(initial, models.BACKBONE))
    for k in range(3):
        assert not _same(_weights(trained, f"head_{k}"), _weights(initial, f"head_{k}"))
    assert models.dense_head(trained).kernel.shape[0] == 3
    np.testing.assert_allclose(models.predict_probs(trained, _images(4, seed=3)[0]).sum(axis=1), 1.0, rtol=1e-5)


# --- kind = hub ------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_hub_classifier_is_fine_tuned_whole(ray_session, tmp_path):
    """Ray Train only: scoring a classifier's logits through a Softmax is the Keras classifier's test."""
    handle = save_hub_module(str(tmp_path / "hub_classifier"), width=len(CLASSES))
    cfg = _config(head_epochs=0, finetune_epochs=1, kind="hub", handle=handle, use="classifier")
    initial = _initial_checkpoint(cfg, str(tmp_path / "init"))

    trained = _train(cfg, tmp_path, "hub-classifier", init_uri=str(tmp_path / "init"))

    assert [w.shape.as_list() for w in trained.weights] == [[3, 3]]  # the module's kernel, and no head
    assert not _same(_weights(trained, models.BACKBONE), _weights(initial, models.BACKBONE))
    np.testing.assert_allclose(models.predict_probs(trained, _images(4, seed=3)[0]).sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.timeout(420)  # two trainings
def test_article_shape_hub_feature_vector_head_phase_then_fine_tuning(ray_session, tmp_path):
    """The article's model: a hub feature vector under a Dense head; the head phase alone leaves the
    backbone as it was, the head phase followed by fine-tuning changes it. Both from one start."""
    handle = save_hub_module(str(tmp_path / "hub_features"))
    head_only = _config(head_epochs=1, finetune_epochs=0, kind="hub", handle=handle)
    both = _config(head_epochs=1, finetune_epochs=1, kind="hub", handle=handle)
    initial = _initial_checkpoint(head_only, str(tmp_path / "init"))

    after_head = _train(head_only, tmp_path, "article-head", init_uri=str(tmp_path / "init"))
    after_both = _train(both, tmp_path, "article-both", init_uri=str(tmp_path / "init"))

    assert _same(_weights(after_head, models.BACKBONE), _weights(initial, models.BACKBONE))
    assert not _same(_weights(after_head, "head"), _weights(initial, "head"))
    assert not _same(_weights(after_both, models.BACKBONE), _weights(initial, models.BACKBONE))
    assert not _same(_weights(after_both, "head"), _weights(initial, "head"))
    _assert_ray_scores_equal_in_process(both, str(tmp_path / "article-both"))


# --- preflight: refused before any Ray work --------------------------------------------------


def _preflight(tmp_path, classes: list[str] = CLASSES, **model: object) -> None:
    cfg = load_config("demo", {"data.classes": classes, "data.root": str(tmp_path / "data"),
                               "model.input_size": HUB_SIZE, **{f"model.{k}": v for k, v in model.items()}})
    preflight.check(cfg, str(tmp_path / "state"))


def test_preflight_accepts_a_keras_model_that_fits(tmp_path):
    path = str(tmp_path / "net.h5")
    save_keras_classifier(path, "softmax")
    _preflight(tmp_path, kind="keras", path=path, use="classifier")  # raises nothing
    _preflight(tmp_path, classes=["a", "b"], kind="keras", path=path, use="backbone")  # any count under a new head


def test_preflight_missing_model_path_is_unavailable(tmp_path):
    missing = str(tmp_path / "models" / "absent.keras")
    with pytest.raises(preflight.Unavailable, match=rf"^model\.path: saved Keras model {missing} does not exist"):
        _preflight(tmp_path, kind="keras", path=missing)


def test_preflight_refuses_a_classifier_of_other_classes(tmp_path):
    path = str(tmp_path / "net.keras")
    save_keras_classifier(path, "softmax", classes=4)
    four_of_three = r"^model\.use: the classifier .* has 4 outputs but data\.classes has 3"
    with pytest.raises(preflight.Refused, match=four_of_three):
        _preflight(tmp_path, kind="keras", path=path, use="classifier")
    hub = save_hub_module(str(tmp_path / "hub_classifier"), width=4)
    with pytest.raises(preflight.Refused, match=four_of_three):
        _preflight(tmp_path, kind="hub", handle=hub, use="classifier")


def test_preflight_refuses_a_file_that_is_not_a_keras_model(tmp_path):
    path = tmp_path / "net.keras"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(preflight.Refused, match=r"^model\.path: .*net\.keras is not a saved Keras model"):
        _preflight(tmp_path, kind="keras", path=str(path))
