"""jobs/simulate.py as a user runs it (a subprocess with its own Ray), and the summary's maths."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from raysal.simulation import FAST_PATH, Settings, area_under_curve, labels_to_reach, summarise

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


@pytest.mark.timeout(120)
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
    seeds, rounds, seed_size, budget = 2, 2, 30, 12
    out_dir = tmp_path / "sim"
    args = ["--state", str(tmp_path / "state"), "--strategies", "random,diversity", "--seeds", str(seeds),
            "--rounds", str(rounds), "--seed-size", str(seed_size), "--budget", str(budget), "--round0-epochs", "4",
            "--head-steps", "60", "--set", 'data.test.rows="500:700"', "--num-cpus", "2", "--out", str(out_dir)]
    proc = subprocess.run([sys.executable, str(REPO / "jobs" / "simulate.py"), *args], capture_output=True,
                          text=True, cwd=tmp_path, timeout=230)
    console = proc.stdout + proc.stderr
    assert proc.returncode == 0, console[-3000:]
    for word in ("error", "Traceback", "WARNING", "E0000"):  # the engines' output goes to the log
        assert word not in console, console
    assert "4/4 seed" in console and "| diversity |" in console

    result = json.loads((out_dir / "simulation.json").read_text())
    labelled = [seed_size + r * budget for r in range(rounds + 1)]
    assert result["fast_path"] == FAST_PATH
    assert result["labelled"] == labelled and result["test_images"] == 200 and result["pool_images"] == 897
    assert result["settings"]["strategies"] == ["random", "diversity"]
    strategies = result["strategies"]
    assert list(strategies) == ["random", "diversity"]
    for name, entry in strategies.items():  # a curve per seed, summarised (the maths: the unit tests above)
        acc = np.array(entry["accuracy"])
        assert acc.shape == (seeds, rounds + 1), name
        assert entry["auc"]["per_seed"] == pytest.approx([area_under_curve(labelled, row) for row in acc])
    # The same initial model within a seed: every strategy's round 0 is the same head on the same set.
    random_acc, diversity_acc = (np.array(strategies[n]["accuracy"]) for n in ("random", "diversity"))
    assert random_acc[:, 0].tolist() == diversity_acc[:, 0].tolist()
    assert result["target"] == pytest.approx(random_acc[:, -1].mean())
    # Different seeds draw different seed sets and models; different strategies select differently.
    assert random_acc[0].tolist() != random_acc[1].tolist()
    assert random_acc[:, 1:].tolist() != diversity_acc[:, 1:].tolist()
    assert (out_dir / "simulation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out_dir / "simulation.log").stat().st_size > 0  # what Ray and TensorFlow said went there
