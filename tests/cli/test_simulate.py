"""jobs/simulate.py as a user runs it (a subprocess with its own Ray), the summary's maths, and
the ensemble strategy's heads."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from raysal.cli import simulate as simulate_cli
from raysal.config import load_config
from raysal.data.imbalance import long_tail_counts
from raysal.errors import ConfigError, Refused
from raysal.report.simulation_report import format_table, pool_line
from raysal.simulation import (
    ENSEMBLE_HEADS,
    FAST_PATH,
    STRATEGIES,
    Settings,
    Split,
    area_under_curve,
    labels_to_reach,
    long_tailed,
    run_strategy,
    summarise,
)

from _jobs import REPO


def test_area_under_curve_is_the_mean_accuracy_over_the_labelled_range() -> None:
    # Trapezoids: (0.5 + 0.7) / 2 * 10 + (0.7 + 0.8) / 2 * 30 = 6 + 22.5 over a width of 40.
    assert area_under_curve([10, 20, 50], [0.5, 0.7, 0.8]) == pytest.approx(28.5 / 40)
    assert area_under_curve([10, 20, 30], [0.9, 0.9, 0.9]) == pytest.approx(0.9)
    assert area_under_curve([10], [0.6]) == pytest.approx(0.6)


@pytest.mark.parametrize(("accuracy", "target", "expected"), [
    ([0.5, 0.7, 0.9], 0.8, 25.0),  # halfway between the rounds at 20 and 30 labels
    ([0.5, 0.7, 0.9], 0.7, 20.0),  # reached exactly at a round
    ([0.5, 0.7, 0.9], 0.4, 10.0),  # reached before the first selection
    ([0.5, 0.9, 0.8], 0.85, 18.75),  # the first crossing counts, not a later one
    ([0.5, 0.7, 0.9], 0.95, None),  # never reached
])
def test_labels_to_reach_interpolates_the_first_crossing(accuracy, target, expected) -> None:
    assert labels_to_reach([10, 20, 30], accuracy, target) == (None if expected is None else pytest.approx(expected))


def test_summary_compares_with_random_at_its_final_accuracy() -> None:
    labelled = [10, 20, 30]
    accuracy = {"random": [[0.5, 0.6, 0.7], [0.5, 0.6, 0.9]],  # mean 0.5, 0.6, 0.8: the target is 0.8 at 30
                "margin": [[0.5, 0.8, 0.9], [0.5, 0.8, 0.9]],  # 0.8 at 20: saves 10 of 30
                "worse": [[0.5, 0.5, 0.6], [0.5, 0.5, 0.6]]}  # never reaches 0.8
    summary = summarise(labelled, accuracy)
    assert summary["target"] == pytest.approx(0.8)
    random, margin, worse = (summary["strategies"][n] for n in ("random", "margin", "worse"))
    assert random["labels_to_target"] == pytest.approx(30) and random["labels_saved"] == pytest.approx(0)
    assert margin["labels_to_target"] == pytest.approx(20)
    assert margin["labels_saved"] == pytest.approx(10) and margin["labels_saved_fraction"] == pytest.approx(1 / 3)
    assert worse["labels_to_target"] is None and worse["labels_saved"] is None
    assert random["final_accuracy"] == pytest.approx({"mean": 0.8, "std": 0.1, "min": 0.7, "max": 0.9})
    aucs = [area_under_curve(labelled, [0.5, 0.6, 0.7]), area_under_curve(labelled, [0.5, 0.6, 0.9])]
    assert random["auc"]["per_seed"] == pytest.approx(aucs)
    assert random["auc"]["mean"] == pytest.approx(np.mean(aucs)) and random["auc"]["std"] == pytest.approx(np.std(aucs))
    margin = summarise(labelled, accuracy, target=0.55)["strategies"]["margin"]
    assert margin["labels_to_target"] == pytest.approx(10 + 10 / 6)


def test_settings_refuse_unknown_strategies_and_bad_sizes() -> None:
    with pytest.raises(ValueError, match="strategies"):
        Settings(strategies=("random", "kmeans"))
    with pytest.raises(ValueError, match="budget"):
        Settings(budget=0)
    with pytest.raises(ValueError, match="no accuracy to reach: give one, or run the 'random' baseline"):
        Settings(strategies=("margin", "diversity"))
    assert Settings(strategies=("margin",), target=0.9).target == 0.9
    for ratio in (0.5, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="--imbalance"):
            Settings(imbalance=ratio)


def test_a_bad_imbalance_is_refused_with_2_before_anything_runs(tmp_path, capsys) -> None:
    assert simulate_cli.main(["--imbalance", "0.5", "--state", str(tmp_path / "state"), "--out",
                              str(tmp_path / "sim")]) == 2
    err = capsys.readouterr().err
    assert "error: imbalance: --imbalance 0.5 must be a finite number >= 1" in err, err
    assert not (tmp_path / "state").exists() and not (tmp_path / "sim").exists()


def test_the_pool_is_subsampled_long_tailed_or_refused_when_too_small() -> None:
    cfg = load_config("demo")
    labels = np.repeat(np.arange(10), 40)  # [400], 40 of each digit
    pool = Split(np.arange(1000, 1400), np.zeros((400, 2, 2, 3), np.uint8), labels)
    assert long_tailed(cfg, Settings(), pool) is pool  # imbalance 1: the pool as it is
    kept = long_tailed(cfg, Settings(imbalance=4, seed_size=20, rounds=2, budget=10), pool)
    expected = long_tail_counts(np.full(10, 40), 4, cfg.seed)  # the config's seed orders the classes
    assert np.bincount(kept.labels, minlength=10).tolist() == expected.tolist()
    assert max(expected) == 40 and min(expected) == 10
    assert (kept.image_ids - 1000 == np.flatnonzero(np.isin(np.arange(400), kept.image_ids - 1000))).all()
    assert (pool.labels[kept.image_ids - 1000] == kept.labels).all()  # ids, images and labels stay together
    with pytest.raises(Refused, match=rf"--imbalance 4 keeps {len(kept.labels)} of the pool's 400 images, fewer "
                                      r"than --seed-size \+ --rounds x --budget = 250 to label"):
        long_tailed(cfg, Settings(imbalance=4, seed_size=50, rounds=8, budget=25), pool)


def _entry(auc: float, balanced_auc: float | None) -> dict:
    entry = {"final_accuracy": {"mean": 0.9, "std": 0.01}, "auc": {"mean": auc, "std": 0.02},
             "labels_to_target": 40.0, "labels_saved": 10.0, "labels_saved_fraction": 0.2}
    if balanced_auc is not None:
        entry["balanced_accuracy"] = {**entry, "auc": {"mean": balanced_auc, "std": 0.03}}
    return entry


def test_the_table_shows_the_area_under_the_balanced_accuracy() -> None:
    result = {"target": 0.9, "baseline": "random",
              "strategies": {"random": _entry(0.8, 0.7), "class_balanced": _entry(0.82, 0.78)}}
    lines = format_table(result).splitlines()
    assert lines[0] == ("| strategy | final accuracy | AUC | balanced accuracy AUC | labels to reach 0.900 | "
                        "labels saved vs random |")
    assert lines[3] == "| class_balanced | 0.900 ± 0.010 | 0.820 ± 0.020 | 0.780 ± 0.030 | 40 | 10 (20%) |"
    # A result written before balanced accuracy was measured: "-" in its column.
    old = format_table({**result, "strategies": {"random": _entry(0.8, None)}}).splitlines()
    assert old[2] == "| random | 0.900 ± 0.010 | 0.800 ± 0.020 | - | 40 | 10 (20%) |"


def test_the_pool_line_says_what_each_class_kept() -> None:
    result = {"settings": {"imbalance": 4.0}, "pool_images": 70, "pool_images_available": 120,
              "pool_per_class": {"cat": 40, "dog": 10, "fox": 20}}
    assert pool_line(result) == ("pool subsampled long-tailed (--imbalance 4): 70 of 120 images, 40 to 10 per class "
                                 "(cat 40, dog 10, fox 20)")
    as_is = {**result, "settings": {"imbalance": 1.0}, "pool_images": 120}
    assert pool_line(as_is) == "pool: 120 images (cat 40, dog 10, fox 20)"


@pytest.mark.timeout(240)
def test_a_pool_that_imbalance_leaves_too_small_is_refused_with_2(ray_session, tmp_path, capsys) -> None:
    """Ray is up (the session's): the pool is decoded and subsampled, then refused before any task."""
    # The demo pool's smallest digit has 82 images; --imbalance 20 keeps 280 of its 897.
    code = simulate_cli.main(["--state", str(tmp_path / "state"), "--imbalance", "20", "--rounds", "10",
                              "--out", str(tmp_path / "sim")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert ("error: --imbalance 20 keeps 280 of the pool's 897 images, fewer than --seed-size + --rounds x --budget "
            "= 300 to label") in err, err
    assert "Traceback" not in err and not (tmp_path / "sim" / "simulation.json").exists()


def test_the_ensemble_strategy_selects_by_the_disagreement_of_heads_each_trained_alone() -> None:
    """ensemble trains ENSEMBLE_HEADS heads (model.heads when > 1) from their own initial weights,
    each as it would train alone, the first from one head's; it selects the budget where the
    members disagree most (bald of their probabilities): round 1's head is the one trained on
    the seed set and those images. Run with model.heads = 2, to train fewer heads."""
    from raysal.config import load_config
    from raysal.model import heads
    from raysal.model.embeddings import DenseHead
    from raysal.selection.criteria import bald

    cfg = load_config("demo")
    assert STRATEGIES["ensemble"].heads(cfg) == ENSEMBLE_HEADS == 5 and STRATEGIES["bald"].heads(cfg) == 1
    two = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, heads=2))
    assert STRATEGIES["ensemble"].heads(two) == STRATEGIES["margin"].heads(two) == 2

    c, d, seed = len(cfg.data.classes), 16, 3
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1, (c, d))
    labels = np.arange(120) % c
    embeddings = (centers[labels] + rng.normal(0, 0.8, (120, d))).astype(np.float16)  # [n, d], as cached
    pool = Split(np.arange(100, dtype=np.int64) * 7, np.zeros((100, 1, 1, 3), np.uint8), labels[:100])
    test = Split(np.arange(20, dtype=np.int64), np.zeros((20, 1, 1, 3), np.uint8), labels[100:])
    initial = heads.initial_weights(d, c, cfg.model.dropout, 2, seed)
    one = heads.initial_weights(d, c, cfg.model.dropout, 1, seed)
    assert all(np.array_equal(a, b) for a, b in zip(initial[0], one[0], strict=True))
    assert not np.allclose(initial[0][0], initial[1][0])
    settings = Settings(strategies=("random", "ensemble"), rounds=1, seed_size=20, budget=6, head_steps=100)
    seed_rows = np.arange(20)
    start = {"seed_rows": seed_rows, "pool_embeddings": embeddings[:100], "test_embeddings": embeddings[100:],
             "head_weights": initial}
    result = run_strategy(two, settings, pool, test, start, seed, "ensemble")

    x = embeddings.astype(np.float32)

    def train(rows: np.ndarray) -> DenseHead:
        return heads.train_heads(x[rows], labels[rows], initial, settings.head_steps, settings.head_learning_rate,
                                 cfg.model.dropout, seed)

    first = train(seed_rows)
    alone = heads.train_head(x[seed_rows], labels[seed_rows], initial[1], settings.head_steps,
                             settings.head_learning_rate, cfg.model.dropout, seed)
    assert first.kernel.shape == (2, d, c)
    np.testing.assert_array_equal(first.kernel[1], alone.kernel)  # a member is the head trained alone
    rest = np.arange(20, 100)
    scores = bald(first.members(x[rest]), pool.image_ids[rest])  # [K = 2, u, c] in
    chosen = rest[np.lexsort((pool.image_ids[rest], -scores))[:6]]  # by score, then image_id
    second = train(np.sort(np.concatenate([seed_rows, chosen])))  # in pool order, as a round reads them
    assert result["labelled"] == [20, 26] and min(result["accuracy"]) > 0.3  # chance: 0.1
    assert result["accuracy"] == [float((h.probs(x[100:]).argmax(axis=1) == test.labels).mean())
                                  for h in (first, second)]


@pytest.mark.timeout(120)
def test_a_typical_seed_set_is_the_typiclust_pick_of_the_pools_pixels() -> None:
    from sklearn.datasets import load_digits

    from raysal.selection import typical
    from raysal.simulation import seed_set, typical_seed_set

    digits = load_digits()
    images = np.repeat((digits.images[:600] * 15).astype(np.uint8)[..., None], 3, axis=-1)  # [600, 8, 8, 3]
    pool = Split(np.arange(600, dtype=np.int64) * 3 + 1, images, digits.target[:600].astype(np.int64))
    rows = typical_seed_set(load_config("demo"), pool, 20, seed=4)
    features = typical.pixel_features(images)
    projected = typical.Pca.fit(*typical.moments(features)).project(features)
    assert rows.tolist() == sorted(typical.typical_indices(projected, 20, 4, image_ids=pool.image_ids).tolist())
    assert len(set(rows.tolist())) == 20 and rows.tolist() != seed_set(600, 20, 4).tolist()
    assert len(set(pool.labels[rows].tolist())) >= 9  # the ten digits' modes, nearly all of them


def test_a_cold_start_config_is_refused_with_2(tmp_path, capsys) -> None:
    seeded = [item for split in ("labelled", "val", "test") for item in ("--set", f'data.{split}={{kind="seed"}}')]
    assert simulate_cli.main([*seeded, "--set", "select.seed_budget=30", "--state", str(tmp_path / "state"),
                              "--out", str(tmp_path / "sim")]) == 2
    assert "a cold start's seed set, val and test are chosen by its round 0" in capsys.readouterr().err
    assert not (tmp_path / "sim").exists()


def test_more_images_to_label_than_the_pool_has_is_refused_before_anything_runs(tmp_path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / "simulate.py"), "--state", str(tmp_path / "state"),
                           "--rounds", "8", "--budget", "200", "--num-cpus", "2", "--out", str(tmp_path / "sim")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=110)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert ("error: --seed-size + --rounds x --budget = 1650 images to label, more than the pool's 897"
            in proc.stderr), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and not (tmp_path / "sim" / "simulation.json").exists()


@pytest.mark.timeout(240)
def test_simulate_job_on_the_demo(tmp_path) -> None:
    """On a long-tailed pool (--imbalance 10), which also runs every step of a pool as it is."""
    seeds, rounds, seed_size, budget = 2, 2, 30, 12
    out_dir = tmp_path / "sim"
    args = ["--state", str(tmp_path / "state"), "--strategies", "random,diversity,bald,ensemble", "--seeds", str(seeds),
            "--rounds", str(rounds), "--seed-size", str(seed_size), "--budget", str(budget), "--round0-epochs", "4",
            "--head-steps", "60", "--set", 'data.test.rows="500:700"', "--num-cpus", "2", "--imbalance", "10",
            "--seed-strategy", "typical", "--out", str(out_dir)]
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / "simulate.py"), *args], capture_output=True,
                          text=True, cwd=tmp_path, timeout=230)
    console = proc.stdout + proc.stderr
    assert proc.returncode == 0, console[-3000:]
    for word in ("error", "Traceback", "WARNING", "E0000"):  # the engines' output goes to the log
        assert word not in console, console
    assert "8/8 seed" in console and "| diversity |" in console and "| bald |" in console and "| ensemble |" in console
    assert "balanced accuracy AUC" in console
    assert "pool subsampled long-tailed (--imbalance 10): 335 of 897 images, 82 to 8 per class" in console

    result = json.loads((out_dir / "simulation.json").read_text())
    labelled = [seed_size + r * budget for r in range(rounds + 1)]
    assert result["fast_path"] == FAST_PATH
    assert result["labelled"] == labelled and result["test_images"] == 200 and result["pool_images"] == 335
    assert result["pool_images_available"] == 897 and sum(result["pool_per_class"].values()) == 335
    per_class = list(result["pool_per_class"].values())  # the largest 10 times the smallest, rounded
    assert max(per_class) == 82 and min(per_class) == 8
    assert result["settings"]["strategies"] == ["random", "diversity", "bald", "ensemble"]
    assert result["settings"]["imbalance"] == 10 and result["settings"]["seed_strategy"] == "typical"
    accuracy0 = result["round0_model_accuracy"]
    assert len(accuracy0) == seeds and all(0 < a <= 1 for a in accuracy0)
    assert (f"round-0 model (seed set of {seed_size}, typical): test accuracy {sum(accuracy0) / seeds:.3f} mean over "
            f"{seeds} seeds") in console
    strategies = result["strategies"]
    assert list(strategies) == ["random", "diversity", "bald", "ensemble"]
    assert strategies["ensemble"].keys() == strategies["bald"].keys()  # the fields every strategy has
    assert (strategies["ensemble"]["criterion"], strategies["ensemble"]["strategy"]) == ("bald", "top_k")
    for name, entry in strategies.items():  # a curve per seed, summarised (the maths: the unit tests above)
        acc = np.array(entry["accuracy"])
        assert acc.shape == (seeds, rounds + 1), name
        assert entry["auc"]["per_seed"] == pytest.approx([area_under_curve(labelled, row) for row in acc])
        balanced = np.array(entry["balanced_accuracy"]["accuracy"])  # the same fields, of the balanced accuracy
        assert balanced.shape == (seeds, rounds + 1) and ((0 <= balanced) & (balanced <= 1)).all(), name
        assert entry["balanced_accuracy"]["auc"]["per_seed"] == pytest.approx(
            [area_under_curve(labelled, row) for row in balanced])
        assert entry["balanced_accuracy"]["mean"] == pytest.approx(balanced.mean(axis=0).tolist())
        assert balanced.tolist() != acc.tolist()  # on a balanced test split it differs, if a little
    # The same initial model within a seed: every strategy's round 0 is the same head on the same set.
    random_acc, diversity_acc, bald_acc = (np.array(strategies[n]["accuracy"]) for n in ("random", "diversity", "bald"))
    assert random_acc[:, 0].tolist() == diversity_acc[:, 0].tolist() == bald_acc[:, 0].tolist()
    assert result["target"] == pytest.approx(random_acc[:, -1].mean())
    random_balanced = np.array(strategies["random"]["balanced_accuracy"]["accuracy"])
    assert result["balanced_accuracy_target"] == pytest.approx(random_balanced[:, -1].mean())
    # Different seeds draw different seed sets and models; different strategies select differently.
    assert random_acc[0].tolist() != random_acc[1].tolist()
    assert random_acc[:, 1:].tolist() != diversity_acc[:, 1:].tolist()
    assert random_acc[:, 1:].tolist() != bald_acc[:, 1:].tolist()
    assert (out_dir / "simulation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out_dir / "simulation.log").stat().st_size > 0  # what Ray and TensorFlow said went there
