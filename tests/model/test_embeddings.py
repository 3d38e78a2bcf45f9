"""Embeddings beside the scores, rescoring from them with the head alone, and the diversity strategy."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq
import pytest

import raysal
from raysal.config import ConfigError, ModelConfig, config_from_dict, load_config
from raysal.model import embeddings, scorer
from raysal.run import context, embedding_cache, rounds, scoring
from raysal.run import topk as distributed
from raysal.run.stages import score as score_stage
from raysal.run.stages import select as select_stage
from raysal.run.state import RunState, embeddings_key
from raysal.selection.diversity import k_center_greedy
from raysal.selection.topk import top_k_indices

from _jobs import copy_state, round_file

# --- k-center greedy --------------------------------------------------------------------------

def test_k_center_greedy_known_answers():
    line = np.array([[0.0], [0.1], [10.0], [5.0], [9.9], [0.2]])
    # row 0 first; then the farthest from it (10.0), then the farthest from both (5.0)
    assert k_center_greedy(line, 3).tolist() == [0, 2, 3]
    assert k_center_greedy(line, 0).tolist() == []
    assert sorted(k_center_greedy(line, 10).tolist()) == list(range(6))  # more than there are: all
    square = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [0.5, 0.5]], dtype=np.float16)
    assert k_center_greedy(square, 2).tolist() == [0, 3]  # the far corner
    # after two opposite corners the other two are equally far: the better-ranked (lower row) wins
    assert k_center_greedy(square, 4).tolist() == [0, 3, 1, 2]


def test_k_center_greedy_skips_rows_that_are_not_finite_and_duplicates_come_last():
    x = np.array([[np.nan, 0.0], [0.0, 0.0], [0.0, 0.0], [3.0, 4.0], [np.inf, 1.0]])
    assert k_center_greedy(x, 5).tolist() == [1, 3, 2]  # the first finite row leads; the duplicate is last
    with pytest.raises(ValueError, match="k must be >= 0"):
        k_center_greedy(x, -1)
    with pytest.raises(ValueError, match=r"shape \[m, d\]"):
        k_center_greedy(np.zeros(3), 1)


def test_k_center_greedy_covers_clusters_that_top_k_leaves_out():
    """Three tight clusters; the most uncertain candidates are all in one: top-k takes them all,
    k-center greedy one per cluster."""
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [10, 0], [0, 10]], dtype=np.float32)
    cluster = np.repeat(np.arange(3), [20, 5, 5])
    x = centers[cluster] + rng.normal(0, 0.1, (30, 2))
    picks = k_center_greedy(x, 3)
    assert sorted(cluster[picks].tolist()) == [0, 1, 2]
    assert cluster[:3].tolist() == [0, 0, 0]  # what the first three by rank would be
    # every point is within 2 x the optimal radius of a pick (the 2-approximation), here ~0.3
    distances = np.linalg.norm(x[:, None] - x[picks][None], axis=2).min(axis=1)
    assert distances.max() < 1.0


# --- the model's embedding and head -----------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model():
    import tf_keras as keras

    from raysal.model import models

    keras.utils.set_random_seed(3)
    cfg = ModelConfig(kind="small_cnn", input_size=16)
    return models.build_model(cfg, 3), cfg


def test_the_head_as_numpy_gives_the_models_probabilities(tiny_model):
    from raysal.model import models

    model, _ = tiny_model
    images = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    features = models.embedding_model(model).predict(images, verbose=0)
    assert features.shape == (6, 2 * 2 * 64)  # the small CNN's flattened last pooling
    head = models.dense_head(model)
    np.testing.assert_allclose(head.probs(features), model.predict(images, verbose=0), atol=1e-6)
    again = embeddings.DenseHead.from_bytes(head.to_bytes())
    np.testing.assert_array_equal(again.kernel, head.kernel)
    np.testing.assert_array_equal(again.bias, head.bias)


def test_a_head_numpy_cannot_apply_is_not_offered():
    import tf_keras as keras

    from raysal.model import models

    inputs = keras.Input((4,))
    features = keras.Model(inputs, keras.layers.Dense(3)(inputs), name=models.BACKBONE)(inputs)
    two_layers = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Dense(5)(features)))
    assert models.dense_head(two_layers) is None
    no_softmax = keras.Model(inputs, keras.layers.Dense(2, activation="sigmoid")(features))
    assert models.dense_head(no_softmax) is None
    then_softmax = keras.Model(inputs, keras.layers.Softmax()(keras.layers.Dense(2)(features)))
    assert models.dense_head(then_softmax) is not None


def test_the_backbone_digest_follows_the_backbone_not_the_head(tiny_model, tmp_path):
    from raysal.model import models

    model, cfg = tiny_model
    digest = models.backbone_digest(model, cfg)
    models.save_checkpoint(model, str(tmp_path / "a"), cfg, ["a", "b", "c"])
    loaded, _, _ = models.load_checkpoint(str(tmp_path / "a"))  # another build: other layer names
    assert models.backbone_digest(loaded, cfg) == digest
    assert json.loads((tmp_path / "a" / embeddings.CONFIG_FILE).read_text())[embeddings.DIGEST] == digest
    head = loaded.get_layer("head")
    head.set_weights([w + 1 for w in head.get_weights()])
    assert models.backbone_digest(loaded, cfg) == digest  # a new head: the same embeddings
    assert models.backbone_digest(loaded, dataclasses.replace(cfg, dropout=0.5)) == digest
    assert models.backbone_digest(loaded, dataclasses.replace(cfg, preprocess="symmetric")) != digest
    conv = loaded.get_layer(models.BACKBONE).layers[0]
    kernel, bias = conv.get_weights()
    conv.set_weights([kernel, bias + 1e-3])
    assert models.backbone_digest(loaded, cfg) != digest


# --- scoring with embeddings, and rescoring from them -----------------------------------------

@pytest.mark.timeout(240)
def test_scoring_writes_embeddings_and_rescoring_them_gives_the_same_scores(ray_session, tiny_checkpoint, tmp_path):
    """The scorer's embedding column is the model's penultimate layer; the head alone, applied to
    those float16 embeddings in plain tasks, gives the scorer's scores, and leaves out the excluded
    ids and keeps the skipped images skipped."""
    import ray

    from raysal.model import models

    rng = np.random.default_rng(1)
    n = 150
    images = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    errors = np.array(["" if i % 37 else "corrupt" for i in range(n)], dtype=object)
    batch_ds = ray.data.from_items([{"image_id": i, "uri": f"u{i}", "label": float(i % 3), "image": images[i],
                                     "error": errors[i]} for i in range(n)], override_num_blocks=5)
    cfg = load_config("demo", {"select.criterion": "smallest_margin", "score.batch_size": 16,
                               "model.input_size": 16, "data.classes": ["a", "b", "c"]})
    full = str(tmp_path / "full")
    scoring.write_scores(scoring.score(batch_ds, tiny_checkpoint, cfg, embeddings=True), full, n)
    scored = pq.read_table(full).to_pandas().sort_values("image_id").reset_index(drop=True)
    matrix = np.stack(scored["embedding"].to_numpy())
    assert matrix.dtype == np.float16 and matrix.shape == (n, 2 * 2 * 64)
    model, _, _ = models.load_checkpoint(tiny_checkpoint)
    ok = scored["error"].to_numpy() == ""
    expected = models.embedding_model(model).predict(images[ok], verbose=0)
    np.testing.assert_allclose(matrix[ok].astype(np.float32), expected, rtol=2e-3, atol=2e-3)
    assert np.isnan(matrix[~ok].astype(np.float32)).all() and scored.loc[~ok, "score"].isna().all()

    exclude = np.array([2, 3, 5, 149])
    rescored_dir = str(tmp_path / "rescored")
    head_uri = f"{tiny_checkpoint}/{embeddings.HEAD_FILE}"
    assert scoring.rescore(full, rescored_dir, head_uri, exclude, cfg, tasks=2) == n - len(exclude)
    rescored = pq.read_table(rescored_dir).to_pandas().sort_values("image_id").reset_index(drop=True)
    assert "embedding" not in rescored.columns
    assert rescored.columns.tolist()[:len(scorer.SCORE_COLUMNS)] == list(scorer.SCORE_COLUMNS)
    kept = scored[~scored["image_id"].isin(exclude)].reset_index(drop=True)
    assert rescored["image_id"].tolist() == kept["image_id"].tolist()
    assert rescored["error"].tolist() == kept["error"].tolist()
    np.testing.assert_allclose(rescored["score"], kept["score"], atol=2e-3)  # float16 embeddings
    assert (rescored["predicted"] == kept["predicted"]).mean() > 0.95
    # exactly the head on the stored embeddings
    head = embeddings.DenseHead.from_bytes(open(head_uri, "rb").read())
    probs = head.probs(np.stack(kept["embedding"].to_numpy())[kept["error"].to_numpy() == ""])
    margin = 1 - np.diff(np.sort(probs, axis=1)[:, -2:], axis=1)[:, 0]
    np.testing.assert_allclose(rescored.loc[rescored["error"] == "", "score"], margin, rtol=1e-6)
    np.testing.assert_array_equal(np.stack(rescored.loc[rescored["error"] == "", "top_classes"].to_numpy())[:, 0],
                                  probs.argmax(axis=1))



@pytest.mark.timeout(240)
def test_bald_scores_images_and_their_cached_embeddings_alike(ray_session, tiny_checkpoint, tmp_path):
    """bald through the scorer is the MC dropout passes of the head over each image's stored
    (float16) embedding; rescoring those embeddings gives the same scores, and another round
    draws other masks. The predicted class stays the model's own, without dropout."""
    import ray

    from raysal.model.sampling import DropoutSampler
    from raysal.selection.criteria import bald

    rng = np.random.default_rng(3)
    n = 80
    images = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    ds = ray.data.from_items([{"image_id": i, "uri": f"u{i}", "label": float(i % 3), "image": images[i],
                               "error": "" if i % 29 else "corrupt"} for i in range(n)], override_num_blocks=3)
    cfg = load_config("demo", {"select.criterion": "bald", "select.mc_samples": 8, "score.batch_size": 16,
                               "model.input_size": 16, "data.classes": ["a", "b", "c"]})
    full = str(tmp_path / "full")
    scoring.write_scores(scoring.score(ds, tiny_checkpoint, cfg, embeddings=True, round_number=3), full, n)
    scored = pq.read_table(full).to_pandas().sort_values("image_id").reset_index(drop=True)
    ok = scored["error"].to_numpy() == ""
    assert (~ok).sum() == 3 and scored.loc[~ok, "score"].isna().all()
    matrix = np.stack(scored["embedding"].to_numpy())[ok]  # [m, d] float16
    head = embeddings.DenseHead.from_bytes(open(f"{tiny_checkpoint}/{embeddings.HEAD_FILE}", "rb").read())
    samples = DropoutSampler(head, 0.2, 8, cfg.seed, 3)(matrix)  # [8, m, 3]
    expected = bald(samples, scored.loc[ok, "image_id"].to_numpy())
    np.testing.assert_allclose(scored.loc[ok, "score"], expected, rtol=1e-5, atol=1e-8)  # float32 products
    assert expected.min() > 0 and len(np.unique(expected)) == ok.sum()  # dropout on: the passes disagree
    np.testing.assert_array_equal(scored.loc[ok, "predicted"], head.probs(matrix).argmax(axis=1))

    for round_number, same in ((3, True), (4, False)):
        out = str(tmp_path / f"rescored-{round_number}")
        assert scoring.rescore(full, out, f"{tiny_checkpoint}/{embeddings.HEAD_FILE}", np.zeros(0, np.int64), cfg,
                               tasks=2, round_number=round_number) == n
        rescored = pq.read_table(out).to_pandas().sort_values("image_id").reset_index(drop=True)
        close = np.allclose(rescored.loc[ok, "score"], scored.loc[ok, "score"], rtol=1e-5, atol=1e-8)
        assert close == same, round_number
        assert rescored.loc[~ok, "score"].isna().all()

def _round_config(state_dir, **select) -> tuple:
    stored = json.loads((state_dir / "rounds" / "0001" / "config.json").read_text())
    cfg = config_from_dict(stored)
    return dataclasses.replace(cfg, score=dataclasses.replace(cfg.score, embeddings=True),
                               select=dataclasses.replace(cfg.select, **select))


def _publish_model(state: RunState, number: int, change_backbone: bool) -> None:
    """Model ``number``: the round-0 model with a new head (and, if asked, a changed backbone)."""
    import tempfile

    from raysal.model import models

    model, model_cfg, classes = models.load_checkpoint(state.uri(state.model_key(0)))
    head = model.get_layer("head")
    head.set_weights([w * 0.5 + 0.01 for w in head.get_weights()])
    if change_backbone:
        conv = model.get_layer(models.BACKBONE).layers[0]
        conv.set_weights([w * 1.01 for w in conv.get_weights()])
    with tempfile.TemporaryDirectory() as tmp:
        models.save_checkpoint(model, tmp, model_cfg, classes)
        state.delete_dir(state.model_key(number))
        state.publish_dir(tmp, state.model_key(number))


def _redo_round_1(state_dir) -> None:
    """Round 1 of a copied state as if never scored: its outputs and its markers removed. The
    stages then run here with no lease, so they write into the round's own folder."""
    for folder in (state_dir / "rounds" / "0001").glob("g*"):
        shutil.rmtree(folder)
    for stage in ("score", "select"):
        (state_dir / "rounds" / "0001" / "stages" / f"{stage}.json").unlink()


@pytest.mark.timeout(400)
def test_a_round_rescores_from_the_embeddings_its_backbone_made_and_not_after_it_changed(
        ray_session, waiting_state, tmp_path):
    """Round 1 scores with embeddings and records them for model 0's backbone. Round 2's model has
    the same backbone and a new head: its score stage rescores round 1's embeddings with the head
    alone, leaving out round 1's selection, and gives what scoring the images gives. Once the
    backbone changes, its digest finds no embeddings: round 2 scores the images again."""
    state_dir = copy_state(waiting_state, tmp_path / "state", keep_rounds=True)
    state = RunState(str(state_dir))
    cfg = _round_config(state_dir)
    _redo_round_1(state_dir)
    round1 = context.Round(state, cfg, 1, {})
    assert score_stage.stage_score(round1, None) == rounds.DONE
    digest = embedding_cache.read_checkpoint_digest(state, state.model_key(0))
    entry = json.loads((state_dir / embeddings_key(digest)).read_text())
    assert entry == {"digest": digest, "scores": "rounds/0001/scores", "round": 1, "model": 0, "rows": 897,
                     "excluded": 0}
    assert select_stage.stage_select(round1, None) == rounds.DONE
    selected = pq.read_table(round_file(state_dir, 1, "selection.parquet"))["image_id"].to_numpy()

    _publish_model(state, 1, change_backbone=False)
    assert embedding_cache.read_checkpoint_digest(state, state.model_key(1)) == digest
    state.write_json("rounds/0002/config.json", cfg.to_dict())
    round2 = context.Round(state, cfg, 2, {})
    assert score_stage.stage_score(round2, None) == rounds.DONE
    assert state.stage_done(2, "score")["rescored_from"] == "rounds/0001/scores"
    rescored = pq.read_table(state_dir / "rounds" / "0002" / "scores").to_pandas().sort_values("image_id")
    assert not set(selected) & set(rescored["image_id"]) and len(rescored) == 897 - len(selected)
    direct = raysal.score(cfg, state.uri(state.model_key(1)), state=str(state_dir), embeddings=True)
    direct = direct[~direct["image_id"].isin(selected)].sort_values("image_id")
    cached = pq.read_table(state_dir / "rounds" / "0001" / "scores").to_pandas().set_index("image_id")
    np.testing.assert_allclose(np.stack(direct["embedding"].to_numpy()).astype(np.float32),  # the same backbone
                               np.stack(cached.loc[direct["image_id"], "embedding"].to_numpy()).astype(np.float32),
                               rtol=1e-2, atol=1e-3)
    assert rescored["image_id"].tolist() == direct["image_id"].tolist()
    np.testing.assert_allclose(rescored["score"], direct["score"], atol=5e-3)
    assert (rescored["predicted"].to_numpy() == direct["predicted"].to_numpy()).mean() > 0.98

    # bald: round 2 rescores with the head's MC dropout passes, masks drawn for round 2
    from raysal.model.sampling import DropoutSampler
    from raysal.selection.criteria import bald

    (state_dir / "rounds" / "0002" / "stages" / "score.json").unlink()
    bald_cfg = dataclasses.replace(cfg, select=dataclasses.replace(cfg.select, criterion="bald", mc_samples=6))
    assert score_stage.stage_score(context.Round(state, bald_cfg, 2, {}), None) == rounds.DONE
    by_bald = pq.read_table(state_dir / "rounds" / "0002" / "scores").to_pandas().sort_values("image_id")
    head = embeddings.DenseHead.from_bytes(state.read_bytes(f"{state.model_key(1)}/{embeddings.HEAD_FILE}"))
    stored = np.stack(cached.loc[by_bald["image_id"], "embedding"].to_numpy())  # [n, d] float16
    expected = bald(DropoutSampler(head, cfg.model.dropout, 6, cfg.seed, 2)(stored), by_bald["image_id"].to_numpy())
    np.testing.assert_allclose(by_bald["score"], expected, rtol=1e-5, atol=1e-8)  # float32 products, other blocks
    assert by_bald["image_id"].tolist() == direct["image_id"].tolist() and expected.max() > 0.01

    _publish_model(state, 1, change_backbone=True)  # fine-tuned: another backbone
    changed = embedding_cache.read_checkpoint_digest(state, state.model_key(1))
    assert changed != digest and embedding_cache.lookup(state, changed, 2) is None
    (state_dir / "rounds" / "0002" / "stages" / "score.json").unlink()
    assert score_stage.stage_score(round2, None) == rounds.DONE
    assert "rescored_from" not in state.stage_done(2, "score")
    assert json.loads((state_dir / embeddings_key(changed)).read_text())["scores"] == "rounds/0002/scores"
    again = pq.read_table(state_dir / "rounds" / "0002" / "scores").to_pandas().sort_values("image_id")
    assert "embedding" in again.columns and again["image_id"].tolist() == direct["image_id"].tolist()
    # round 3 with the same changed backbone would rescore round 2's; round 2 never reads its own
    assert embedding_cache.lookup(state, changed, 3)["round"] == 2 and embedding_cache.lookup(state, changed, 2) is None

    # The pool lost images since round 2's embeddings: round 3 scores the images in full.
    (state_dir / "rounds" / "0002" / "stages" / "score.json").unlink()
    manifest_path = state_dir / "data" / "digits" / "manifest.parquet"
    manifest_table = pq.read_table(manifest_path)
    kept = manifest_table.filter(pa.compute.invert(pa.compute.is_in(manifest_table["image_id"],
                                                                    pa.array(direct["image_id"].to_numpy()[-5:]))))
    pq.write_table(kept, manifest_path)
    assert score_stage.stage_score(round2, None) == rounds.DONE
    assert "rescored_from" not in state.stage_done(2, "score")
    assert pq.read_table(state_dir / "rounds" / "0002" / "scores").num_rows == len(direct) - 5


@pytest.mark.timeout(300)
def test_a_round_selects_diverse_images_among_the_most_uncertain(ray_session, waiting_state, tmp_path):
    """select.strategy = diversity: the round's selection is k-center greedy over its candidates'
    embeddings, the same as ``raysal.select`` in memory, and not the plain top k."""
    state_dir = copy_state(waiting_state, tmp_path / "state", keep_rounds=True)
    state = RunState(str(state_dir))
    cfg = _round_config(state_dir, strategy="diversity", candidates=3)
    _redo_round_1(state_dir)
    r = context.Round(state, cfg, 1, {})
    score_stage.stage_score(r, None)
    assert select_stage.stage_select(r, None) == rounds.DONE
    scores = pq.read_table(state_dir / "rounds" / "0001" / "scores").to_pandas()
    expected = raysal.select(scores, cfg.select.budget, strategy="diversity", candidates=3)
    selection = pq.read_table(round_file(state_dir, 1, "selection.parquet")).to_pydict()
    assert selection["image_id"] == expected["image_id"].tolist()
    assert selection["rank"] == list(range(1, cfg.select.budget + 1))
    ids, values = scores["image_id"].to_numpy(), scores["score"].to_numpy()
    candidates = set(ids[top_k_indices(values, ids, 3 * cfg.select.budget)])
    assert set(selection["image_id"]) <= candidates
    assert set(selection["image_id"]) != set(ids[top_k_indices(values, ids, cfg.select.budget)])
    assert selection["image_id"][0] == ids[top_k_indices(values, ids, 1)][0]  # the most uncertain first
    record = rounds.format_outcome(rounds.RoundOutcome(1, rounds.DONE, record={
        "round": 1, "selected": 40, "pool_size": 897, "skipped": 0, "criterion": "entropy", "strategy": "diversity",
        "candidates": 3, "beta": 1.0, "labelled_total": 340, "test_accuracy_before": 0.9,
        "test_accuracy_after": 0.9, "selection_accuracy_before": 0.5, "selection": "s"}, stage_seconds={"select": 1.0}))
    assert "by entropy (diversity: k-center greedy over the 3 x budget most uncertain)" in record


@pytest.mark.timeout(120)
def test_diversity_with_nothing_left_to_select_selects_nothing(ray_session, tmp_path):
    """Every image already selected: the candidates are none, and so is the selection."""
    ids = np.arange(20, dtype=np.int64)
    pq.write_table(pa.table({"image_id": ids, "uri": [f"u{i}" for i in ids], "score": np.linspace(0, 1, 20),
                             "predicted": np.zeros(20, np.int64),
                             "embedding": pa.array(list(np.eye(20, 4, dtype=np.float16)), pa.list_(pa.float16()))}),
                   tmp_path / "part-0.parquet")
    result = distributed.select_top_k(str(tmp_path), 8, exclude_ids=ids, columns=("image_id", "uri", "embedding"))
    assert result.rows["embedding"].shape == (0, 0) and k_center_greedy(result.rows["embedding"], 2).size == 0
    some = distributed.select_top_k(str(tmp_path), 8, exclude_ids=ids[10:], columns=("image_id", "uri", "embedding"))
    assert some.rows["embedding"].shape == (8, 4) and some.rows["image_id"].tolist() == list(range(9, 1, -1))
    np.testing.assert_array_equal(some.rows["embedding"], np.eye(20, 4, dtype=np.float16)[9:1:-1])


def test_diversity_in_memory_needs_embeddings_and_a_bad_candidates_value_is_refused():
    frame = pd.DataFrame({"image_id": [1, 2], "score": [0.5, 0.4]})
    with pytest.raises(ValueError, match=r"embedding column: raysal.score\(..., embeddings=True\)"):
        raysal.select(frame, 1, strategy="diversity")
    frame["embedding"] = [np.zeros(2, np.float16)] * 2
    with pytest.raises(ValueError, match="candidates must be >= 1"):
        raysal.select(frame, 1, strategy="diversity", candidates=0)
    with pytest.raises(ConfigError, match="select.candidates: must be >= 1"):
        load_config("demo", {"select.candidates": 0})
