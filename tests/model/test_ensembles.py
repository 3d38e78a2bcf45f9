"""Head ensembles (``model.heads = K``): K Dense heads on one backbone, each trained on its own
loss, the model's output their mean; the numpy head applies them alike, and ``bald`` scores the
members' disagreement, from images and from cached embeddings."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ray.data.extensions import ArrowTensorArray

from raysal.config import ModelConfig, load_config
from raysal.model.embeddings import EMBEDDING, HEAD_FILE, DenseHead


def _separable(n: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """16x16 images whose class (of 3) is their brightness: ``[n, 16, 16, 3]`` uint8, labels ``[n]``."""
    labels = np.arange(n) % 3
    noise = np.random.default_rng(seed).integers(0, 40, (n, 16, 16, 3))
    return (noise + 100 * labels[:, None, None, None]).astype(np.uint8), labels


def test_one_head_is_the_model_it_always_was(tiny_checkpoint):
    from raysal.model import models

    model, cfg, _ = models.load_checkpoint(tiny_checkpoint)
    assert cfg.heads == 1
    assert [type(layer).__name__ for layer in model.layers] == ["InputLayer", "Rescaling", "Sequential", "Dropout",
                                                               "Dense"]
    assert model.layers[-1].name == "head" and models.members(model) == []
    assert models.training_view(model) == (model, "sparse_categorical_crossentropy", "accuracy")


def test_each_member_fits_its_own_loss_and_the_model_outputs_their_mean():
    """Each member's gradient is its own cross-entropy's (a loss on the average would couple
    them); once fitted, every member alone classifies a separable set, yet they differ; the model
    outputs their mean, and the accuracy compiled in is that of the mean."""
    import tensorflow as tf
    import tf_keras as keras

    from raysal.model import models

    keras.utils.set_random_seed(5)
    model = models.build_model(ModelConfig(kind="small_cnn", input_size=16, heads=3), 3)
    view, loss, accuracy = models.training_view(model)
    heads = models.members(model)
    assert [head.name for head in heads] == ["head_0", "head_1", "head_2"]
    images, labels = _separable()
    with tf.GradientTape(persistent=True) as tape:
        stacked = view(images, training=False)  # [n, K, c]
        total = tf.reduce_mean(loss(tf.constant(labels), stacked))
        alone = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, stacked[:, 1]))
    for weight in heads[1].trainable_weights:  # the mean over K members scales each one's gradient by 1/K
        np.testing.assert_allclose(tape.gradient(total, weight), tape.gradient(alone, weight) / 3, rtol=1e-4,
                                   atol=1e-7)
    assert all(tape.gradient(total, w) is None for w in model.get_layer(models.BACKBONE).trainable_weights)

    view.compile(optimizer=keras.optimizers.Adam(5e-2), loss=loss, metrics=[accuracy])
    history = view.fit(images, labels, batch_size=len(labels), epochs=60, verbose=0)
    assert set(history.history) == {"loss", "accuracy"}  # what training reports, as for one head
    member_probs = np.stack(keras.Model(model.inputs, [h.output for h in heads]).predict(images, verbose=0))
    probs = model.predict(images, verbose=0)  # [n, c]
    np.testing.assert_allclose(probs, member_probs.mean(axis=0), rtol=1e-5, atol=1e-6)
    assert [(p.argmax(axis=1) == labels).mean() for p in member_probs] == [1.0, 1.0, 1.0]  # chance: 1/3
    assert np.abs(member_probs[0] - member_probs[1]).max() > 1e-3  # other initial weights, other members
    evaluated = view.evaluate(images[:20], labels[:20], verbose=0)[1]
    assert evaluated == pytest.approx((probs[:20].argmax(axis=1) == labels[:20]).mean())


def test_an_ensemble_checkpoint_round_trips_and_its_numpy_head_gives_the_models_probabilities(
        tiny_ensemble_checkpoint):
    from raysal.model import models

    model, cfg, classes = models.load_checkpoint(tiny_ensemble_checkpoint)
    assert cfg.heads == 3 and classes == ["a", "b", "c"]
    stored = DenseHead.from_bytes(open(f"{tiny_ensemble_checkpoint}/{HEAD_FILE}", "rb").read())
    head = models.dense_head(model)  # from the weights loaded from weights.h5
    assert head.kernel.shape == (3, 2 * 2 * 64, 3) and head.bias.shape == (3, 3)
    np.testing.assert_array_equal(head.kernel, stored.kernel)
    np.testing.assert_array_equal(head.bias, stored.bias)
    assert not np.allclose(head.kernel[0], head.kernel[1])  # each member its own initial weights
    images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    features = models.embedding_model(model).predict(images, verbose=0)  # [n, d]
    np.testing.assert_allclose(head.probs(features), model.predict(images, verbose=0), atol=1e-5)
    layers = models.members(model)
    by_keras = np.stack(models.keras.Model(model.inputs, [h.output for h in layers]).predict(images, verbose=0))
    np.testing.assert_allclose(head.members(features), by_keras, atol=1e-5)
    assert models.backbone_digest(model, cfg) == models.backbone_digest(model, ModelConfig(kind="small_cnn",
                                                                                           input_size=16))


@pytest.mark.timeout(180)
def test_bald_scores_the_members_disagreement_from_images_and_cached_embeddings(
        ray_session, tiny_ensemble_checkpoint, tmp_path):
    """With three heads and no dropout, bald in the scorer is the members' mutual information on
    each image's stored embedding, and rescoring those embeddings gives the same scores in any
    round (no masks to draw); the predicted class is the model's, the members' mean."""
    from raysal.model.scorer import Scorer
    from raysal.run import scoring
    from raysal.selection.criteria import bald

    n = 40
    images = np.random.default_rng(7).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    errors = np.array(["" if i % 13 else "corrupt" for i in range(n)], dtype=object)
    batch = {"image_id": np.arange(n), "uri": np.array([f"u{i}" for i in range(n)], dtype=object),
             "label": np.arange(n) % 3.0, "image": images, "error": errors}
    scorer = Scorer(tiny_ensemble_checkpoint, "bald", seed=0, batch_size=16, top_probs=3, embeddings=True,
                    round_number=2)
    scored = scorer(batch)
    ok = errors == ""
    stored = scored[EMBEDDING][ok]  # [m, d] float16
    head = DenseHead.from_bytes(open(f"{tiny_ensemble_checkpoint}/{HEAD_FILE}", "rb").read())
    expected = bald(head.members(stored), np.arange(n)[ok])  # [K = 3, m, c] in
    np.testing.assert_allclose(scored["score"][ok], expected, rtol=1e-6, atol=1e-9)
    assert np.isnan(scored["score"][~ok]).all() and expected.min() > 0  # the members disagree
    np.testing.assert_array_equal(scored["predicted"][ok], head.probs(stored).argmax(axis=1))

    folder = tmp_path / "scores"
    folder.mkdir()
    pq.write_table(pa.table({"image_id": batch["image_id"], "uri": batch["uri"], "label": batch["label"],
                             "error": errors.tolist(), EMBEDDING: ArrowTensorArray.from_numpy(scored[EMBEDDING])}),
                   folder / "part-0.parquet")
    cfg = load_config("demo", {"select.criterion": "bald", "model.dropout": 0.0, "model.heads": 3,
                               "model.input_size": 16, "data.classes": ["a", "b", "c"]})
    out = str(tmp_path / "rescored")
    assert scoring.rescore(str(folder), out, f"{tiny_ensemble_checkpoint}/{HEAD_FILE}", np.zeros(0, np.int64), cfg,
                           tasks=1, round_number=5) == n
    rescored = pq.read_table(out).to_pandas().sort_values("image_id")
    np.testing.assert_allclose(rescored["score"].to_numpy()[ok], expected, rtol=1e-6, atol=1e-9)
