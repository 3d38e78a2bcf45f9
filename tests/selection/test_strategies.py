"""Selection strategies: the budget as a sample (power, softmax) done as an exact Gumbel top-k."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import raysal
from raysal.config import ConfigError, config_from_dict, load_config
from raysal.run import context, rounds
from raysal.run import topk as distributed
from raysal.run.stages import select as select_stage
from raysal.run.state import RunState
from raysal.selection.criteria import SelectionKeys, gumbel_noise
from raysal.selection.topk import top_k_indices

from _jobs import copy_state, round_file
from _scores import random_pool, score_source, scores_table


def test_gumbel_noise_depends_on_seed_round_and_id_only_and_is_standard_gumbel():
    ids = np.arange(200_000, dtype=np.int64)
    noise = gumbel_noise(ids, seed=7, round_number=3)
    np.testing.assert_array_equal(gumbel_noise(ids[::-1], 7, 3), noise[::-1])  # per id, not per position
    assert not np.allclose(gumbel_noise(ids, 7, 4), noise) and not np.allclose(gumbel_noise(ids, 8, 3), noise)
    assert np.isfinite(noise).all()
    assert abs(noise.mean() - 0.5772156649) < 0.01  # the Euler-Mascheroni constant
    assert abs(noise.var() - math.pi ** 2 / 6) < 0.03


@pytest.mark.parametrize("strategy, beta, scores, expected", [
    ("power", 1.0, [1.0, 2.0, 7.0], [0.1, 0.2, 0.7]),  # proportional to score
    ("power", 2.0, [1.0, 2.0, 3.0], [1 / 14, 4 / 14, 9 / 14]),  # to score^2
    ("softmax", 2.0, [0.0, 0.5, 1.0], list(np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum())),
])
def test_a_budget_of_one_is_drawn_with_the_strategys_probabilities(strategy, beta, scores, expected):
    """The Gumbel-max property, over 20,000 rounds: the top key is image i with probability p_i."""
    ids = np.array([11, 12, 13], dtype=np.int64)
    wins = np.zeros(3)
    for round_number in range(20_000):
        wins[np.argmax(SelectionKeys(strategy, beta, seed=1, round_number=round_number)(np.array(scores), ids))] += 1
    np.testing.assert_allclose(wins / wins.sum(), expected, atol=0.015)  # ~5 standard errors


def test_keys_keep_top_k_nan_and_zero_scores():
    scores, ids = np.array([0.3, np.nan, 0.0, 0.9]), np.arange(4, dtype=np.int64)
    np.testing.assert_array_equal(SelectionKeys("top_k")(scores, ids), scores)
    for strategy in ("power", "softmax"):
        keys = SelectionKeys(strategy, 1.0, 0, 1)(scores, ids)
        assert np.isnan(keys[1]) and np.isfinite(keys[[0, 2, 3]]).all(), (strategy, keys)  # 0 stays selectable
    with pytest.raises(ValueError, match="unknown strategy"):
        SelectionKeys("clusters")


@pytest.mark.parametrize("bad, message", [({"select.strategy": "greedy"}, "select.strategy"),
                                          ({"select.beta": 0}, "select.beta"),
                                          ({"select.beta": float("inf")}, "select.beta")])
def test_a_bad_strategy_is_refused_naming_the_field(bad, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo", bad)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["parquet", "lazy"])
def test_the_distributed_sample_is_the_exact_top_k_of_the_keys(ray_session, tmp_path, kind):
    n = 40_000
    ids, scores, exclude = random_pool(3, n, unscored=100, excluded=300)
    source = score_source(kind, scores_table(ids, scores, [""] * n), 9, tmp_path / "scores")
    keys = SelectionKeys("power", 1.0, seed=3, round_number=2)
    got = distributed.select_top_k(source, 500, exclude, keys=keys, tasks=3)
    expected = top_k_indices(keys(scores, ids), ids, 500, np.sort(exclude))  # all in memory
    np.testing.assert_array_equal(got.rows["image_id"], ids[expected])
    np.testing.assert_array_equal(got.rows["score"], scores[expected])  # the scores, not the keys
    assert got.score_max == np.nanmax(scores) and got.score_min == np.nanmin(scores)
    plain = distributed.select_top_k(source, 500, exclude, tasks=3).rows["image_id"]
    assert 0 < len(np.intersect1d(plain, got.rows["image_id"])) < 500  # a sample: neither top-k nor disjoint

    frame = pd.DataFrame({"image_id": ids, "score": scores})  # the Python API picks the same images
    chosen = raysal.select(frame, 500, exclude, strategy="power", seed=3, round_number=2)
    np.testing.assert_array_equal(chosen["image_id"].to_numpy(), got.rows["image_id"])
    assert chosen["rank"].tolist() == list(range(1, 501))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("strategy", ["power", "class_balanced"])
def test_a_round_selects_with_its_strategy(ray_session, waiting_state, tmp_path, strategy):
    """The select stage of a real round, run again with another strategy: its selection is what
    the strategy picks from the round's own scores, computed here in memory."""
    from raysal.selection.topk import class_balanced_indices

    state_dir = copy_state(waiting_state, tmp_path / "state", keep_rounds=True)
    stored = json.loads((state_dir / "rounds" / "0001" / "config.json").read_text())
    cfg = config_from_dict(stored)
    cfg = dataclasses.replace(cfg, select=dataclasses.replace(cfg.select, strategy=strategy, beta=2.0))
    (state_dir / "rounds" / "0001" / "stages" / "select.json").unlink()
    r = context.Round(RunState(str(state_dir)), cfg, 1, {})
    assert select_stage.stage_select(r, None) == rounds.DONE

    scores = pq.read_table(round_file(state_dir, 1, "scores"), columns=["image_id", "score", "predicted"])
    ids, values = scores["image_id"].to_numpy(), scores["score"].to_numpy(zero_copy_only=False)
    if strategy == "power":
        keys = SelectionKeys("power", 2.0, seed=cfg.seed, round_number=1)(values, ids)
        expected = top_k_indices(keys, ids, cfg.select.budget)
    else:
        expected = class_balanced_indices(values, ids, scores["predicted"].to_numpy(), cfg.select.budget,
                                          len(cfg.data.classes))
        assert set(ids[expected]) != set(ids[top_k_indices(values, ids, cfg.select.budget)])  # the quotas mattered
    selection = pq.read_table(round_file(state_dir, 1, "selection.parquet")).to_pydict()
    assert selection["image_id"] == ids[expected].tolist()
    assert selection["rank"] == list(range(1, cfg.select.budget + 1))
    record = r.state.stage_done(1, "select")
    assert record["score_max"] == float(np.nanmax(values)) and record["selected"] == cfg.select.budget
    assert record["kappa"] is None and record["stop_labelling"] is False  # round 1: no earlier model scored
    line = rounds.format_outcome(rounds.RoundOutcome(1, rounds.DONE, record={
        "round": 1, "selected": 40, "pool_size": 897, "skipped": 0, "criterion": cfg.select.criterion,
        "strategy": strategy, "beta": 2.0, "labelled_total": 340, "test_accuracy_before": 0.9,
        "test_accuracy_after": 0.9, "selection_accuracy_before": 0.5, "selection": "s"},
        stage_seconds={"select": 1.0})).splitlines()[0]
    shown = "(power sampling, beta 2)" if strategy == "power" else "(class-balanced: a quota per predicted class)"
    assert line == (f"round 1: selected 40 of 897 pool images (0 skipped) by {cfg.select.criterion} {shown}, "
                    "340 labelled in all")


def test_class_balanced_known_answers():
    from raysal.selection.topk import class_balanced_indices

    scores, ids, classes = np.array([.9, .8, .7, .6, .5, .4]), np.arange(6), np.array([0, 0, 0, 0, 1, 2])
    assert class_balanced_indices(scores, ids, classes, 3, 3).tolist() == [0, 4, 5]  # one each
    assert class_balanced_indices(scores, ids, classes, 4, 3).tolist() == [0, 1, 4, 5]  # and the best left
    assert class_balanced_indices(scores, ids, classes, 7, 3).tolist() == [0, 1, 2, 3, 4, 5]  # class 1, 2 run out
    assert class_balanced_indices(scores, ids, classes, 2, 3).tolist() == [0, 1]  # no quota below 3: plain top-k
    assert class_balanced_indices(scores, ids, classes, 6, 4).tolist() == [0, 1, 2, 3, 4, 5]  # class 3 has none
    assert class_balanced_indices(scores, ids, classes, 3, 3, exclude_ids=np.array([4])).tolist() == [0, 1, 5]
    with pytest.raises(ValueError, match="class outside"):  # three classes present, two said
        class_balanced_indices(scores, ids, classes, 4, 2)
    with pytest.raises(ValueError, match="k >= 0"):
        class_balanced_indices(scores, ids, classes, -1, 3)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind, tasks", [("parquet", 3), ("lazy", 3), ("parquet", 20)])  # 20: merged in tasks too
def test_the_distributed_class_balanced_selection_is_exact(ray_session, tmp_path, kind, tasks):
    """Skewed classes: most images in class 0, a rare class 3, none in class 4 of 5; the scan
    keeps every class's best k, and the quotas give the same images as in memory."""
    from raysal.selection.topk import class_balanced_indices

    n, k = 30_000, 500
    ids, scores, exclude = random_pool(11, n, unscored=50, excluded=200)
    classes = np.random.default_rng(12).choice(4, n, p=[0.85, 0.1, 0.047, 0.003])
    source = score_source(kind, scores_table(ids, scores, [""] * n, classes), 40, tmp_path / "scores")
    got = distributed.select_top_k(source, k, exclude, tasks=tasks, per_class=5)
    expected = class_balanced_indices(scores, ids, classes, k, 5, exclude)
    np.testing.assert_array_equal(got.rows["image_id"], ids[expected])
    per_class = np.bincount(got.rows["predicted"].astype(np.int64), minlength=5)
    rare = int((classes == 3)[~np.isnan(scores) & ~np.isin(ids, exclude)].sum())
    assert per_class[1] >= 100 and per_class[2] >= 100 and per_class[3] == rare < 100, per_class  # quota 100 each
    assert per_class.sum() == k

    frame = pd.DataFrame({"image_id": ids, "score": scores, "predicted": classes})
    chosen = raysal.select(frame, k, exclude, strategy="class_balanced", n_classes=5)
    np.testing.assert_array_equal(chosen["image_id"].to_numpy(), got.rows["image_id"])
    with pytest.raises(ValueError, match="n_classes"):
        raysal.select(frame, k, strategy="class_balanced")
