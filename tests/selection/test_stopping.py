"""The stopping signal: Cohen's kappa between consecutive models' predictions on a stop set.

The stop set is a fixed pseudo-random sample of the pool, chosen by a key per image id while
selection scans the scores; each round keeps its scoring model's predictions on it, and the next
round compares its own.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from raysal import hashing
from raysal.cli.status import print_status
from raysal.config import ConfigError, load_config
from raysal.run import context, rounds
from raysal.run import topk as distributed
from raysal.run.stages import select as select_stage
from raysal.run.state import RunState
from raysal.selection import stopping
from raysal.selection.stopping import cohen_kappa

from _scores import random_pool, score_source, scores_table


def _kappa_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    observed = np.mean(a == b)
    expected = sum(np.mean(a == c) * np.mean(b == c) for c in np.union1d(a, b))
    return (observed - expected) / (1 - expected)


@pytest.mark.parametrize("a, b, expected", [
    ([0, 0, 1, 1], [0, 1, 1, 1], 0.5),  # agree on 3/4; chance 1/2 * 1/4 + 1/2 * 3/4 = 1/2
    ([0] * 20 + [0] * 5 + [1] * 10 + [1] * 15, [0] * 20 + [1] * 5 + [0] * 10 + [1] * 15, 0.4),  # 0.7 vs 0.5
    ([0, 1, 2, 2], [0, 1, 2, 2], 1.0),
    ([0, 1, 0, 1], [1, 0, 1, 0], -1.0),  # always disagree, each class half the time
    ([0, 1, 0, 1], [0, 0, 1, 1], 0.0),  # agree as often as chance
    ([2, 2, 2], [1, 1, 1], 0.0),  # one class each, different ones: never agree, nor would chance
])
def test_cohen_kappa_known_answers(a, b, expected):
    assert cohen_kappa(np.array(a), np.array(b)) == pytest.approx(expected)
    assert _kappa_by_hand(np.array(a), np.array(b)) == pytest.approx(expected)


def test_cohen_kappa_equals_scikit_learns():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(2)
    for n_classes in (2, 5, 40):
        a = rng.integers(0, n_classes, 1_000)
        b = np.where(rng.random(1_000) < 0.6, a, rng.integers(0, n_classes, 1_000))
        assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)


def test_cohen_kappa_is_undefined_when_chance_agrees_on_everything():
    """Both models put every image in one class, the same: no evidence that they are stable."""
    assert cohen_kappa(np.array([3, 3, 3]), np.array([3, 3, 3])) is None


@pytest.mark.parametrize("a, b", [([], []), ([0, 1], [0])])
def test_cohen_kappa_refuses_what_it_cannot_compare(a, b):
    with pytest.raises(ValueError):
        cohen_kappa(np.array(a, dtype=np.int64), np.array(b, dtype=np.int64))


def test_id_keys_are_splitmix64():
    """splitmix64 seeded with 0 gives 0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F:
    the keys of the ids that are its states after one, two and three steps, less one step."""
    golden = 0x9E3779B97F4A7C15
    ids = np.array([(step * golden) % 2**64 for step in range(3)], dtype=np.uint64).view(np.int64)
    assert [int(k) for k in hashing.id_keys(ids)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["parquet", "blocks"])
def test_the_stop_set_is_the_smallest_keys_of_the_scored_images_left(ray_session, tmp_path, kind):
    n = 30_000
    ids, scores, exclude = random_pool(0, n, unscored=300, excluded=500)  # unscored: never in the stop set
    predicted = np.random.default_rng(1).integers(0, 5, n)
    table = scores_table(ids, scores, ["" if s == s else "bad" for s in scores], predicted)
    source = score_source(kind, table, 7, tmp_path / "scores")

    got = distributed.select_top_k(source, 50, exclude, sample=2_000, tasks=3).stop_set
    eligible = np.flatnonzero(~np.isnan(scores) & ~np.isin(ids, exclude))
    expected = eligible[np.argsort(hashing.id_keys(ids[eligible]))[:2_000]]  # brute force, all in memory
    order = np.argsort(ids[expected])
    np.testing.assert_array_equal(got["image_id"], ids[expected][order])
    np.testing.assert_array_equal(got["predicted"], predicted[expected][order])

    # The next round: the images selected since leave it, and the stop set keeps the rest.
    later = distributed.select_top_k(source, 50, np.union1d(exclude, got["image_id"][:100]),
                                  sample=2_000, tasks=2).stop_set
    assert len(np.intersect1d(later["image_id"], got["image_id"])) == 1_900


def _round(state: RunState, number: int, **select: object) -> context.Round:
    return context.Round(state, load_config("demo", {f"select.{k}": v for k, v in select.items()}), number, {})


def test_agreement_compares_the_stop_set_images_both_rounds_predicted(tmp_path):
    state = RunState(str(tmp_path / "state"))
    first = select_stage.agreement(_round(state, 1), {"image_id": np.arange(500), "predicted": np.zeros(500, np.int64)})
    assert first["kappa"] is None and first["kappa_images"] == 0  # round 1: no model scored the pool before

    rng = np.random.default_rng(5)
    ids_before = rng.permutation(400).astype(np.int64)  # not sorted: _agreement must not rely on an order
    before = rng.integers(0, 4, 400)
    state.write_table("rounds/0001/stop_set.parquet", pa.table({"image_id": ids_before, "predicted": before}))
    ids_now = np.arange(150, 600, dtype=np.int64)  # 150-399 in both: 250 images
    now = rng.integers(0, 4, len(ids_now))
    now[:200] = np.where(rng.random(200) < 0.7, before[np.argsort(ids_before)][150:350], now[:200])  # mostly agree
    got = select_stage.agreement(_round(state, 2), {"image_id": ids_now, "predicted": now})
    by_id_before = dict(zip(ids_before.tolist(), before.tolist(), strict=True))
    common = [i for i, image_id in enumerate(ids_now.tolist()) if image_id in by_id_before]
    expected = _kappa_by_hand(now[common], np.array([by_id_before[int(ids_now[i])] for i in common]))
    assert got["kappa_images"] == 250 and got["kappa"] == pytest.approx(expected, abs=1e-6) and 0.3 < expected < 0.9
    assert got["kappa_mean"] is None and got["stop_labelling"] is False  # round 2: one kappa, the window needs 3


def test_too_few_images_in_common_give_no_kappa(tmp_path):
    state = RunState(str(tmp_path / "state"))
    state.write_table(state.files(1).stop_set, pa.table({"image_id": np.arange(99), "predicted": np.arange(99) % 2}))
    got = select_stage.agreement(_round(state, 2), {"image_id": np.arange(99), "predicted": np.arange(99) % 2})
    assert got["kappa"] is None and got["kappa_images"] == stopping.MIN_KAPPA_IMAGES - 1


@pytest.mark.parametrize("threshold, earlier, stop", [
    (0.9, [0.95, 0.99], True),  # mean of 0.95, 0.99 and 1.0 is 0.98
    (0.99, [0.95, 0.99], False),
    (0.9, [None, 0.99], False),  # a round without a kappa: no mean of three
    (0.0, [0.95, 0.99], False),  # no threshold, no signal; the mean is still reported
])
def test_the_stop_signal_is_the_mean_kappa_of_the_last_three_rounds(tmp_path, threshold, earlier, stop):
    state = RunState(str(tmp_path / "state"))
    for number, kappa in zip((2, 3), earlier, strict=True):
        state.write_json(f"rounds/{number:04d}/stages/select.json", {"kappa": kappa, "stage": "select"})
    ids = np.arange(300, dtype=np.int64)
    state.write_table("rounds/0003/stop_set.parquet", pa.table({"image_id": ids, "predicted": ids % 3}))
    got = select_stage.agreement(_round(state, 4, stop_kappa=threshold), {"image_id": ids, "predicted": ids % 3})
    assert got["kappa"] == 1.0 and got["stop_labelling"] is stop and got["stop_kappa"] == threshold
    assert got["kappa_mean"] == (None if None in earlier else pytest.approx((sum(earlier) + 1.0) / 3))


def _record(**extra: object) -> dict:
    return {"round": 3, "selected": 40, "pool_size": 857, "skipped": 0, "criterion": "least_confidence",
            "labelled_total": 380, "test_accuracy_before": 0.9, "test_accuracy_after": 0.92,
            "selection_accuracy_before": 0.5, "selection": "s", "metrics": "m", "learning_curve": "l", **extra}


def test_the_summary_and_status_report_the_kappa_and_when_to_stop(capsys, tmp_path):
    quiet = rounds.format_outcome(rounds.RoundOutcome(3, rounds.DONE, record=_record(
        kappa=0.95, kappa_images=817, kappa_mean=None, stop_kappa=0.99, stop_labelling=False),
        stage_seconds={"score": 1.0}))
    assert "  predictions on the pool: models 1 and 2 agree with kappa 0.9500 on 817 stop-set images" in quiet
    assert "stop labelling" not in quiet
    stop = rounds.format_outcome(rounds.RoundOutcome(3, rounds.DONE, record=_record(
        kappa=0.995, kappa_images=817, kappa_mean=0.993, stop_kappa=0.99, stop_labelling=True),
        stage_seconds={"score": 1.0})).splitlines()
    assert ("  predictions on the pool: models 1 and 2 agree with kappa 0.9950 on 817 stop-set images (mean of the "
            "last 3 rounds 0.9930)") in stop
    assert ("  stop labelling: the mean kappa of the last 3 rounds, 0.9930, is >= select.stop_kappa 0.99: the "
            "model's predictions have stabilised") in stop
    first = rounds.format_outcome(rounds.RoundOutcome(1, rounds.DONE, record=_record(
        round=1, kappa=None, kappa_images=0, kappa_mean=None, stop_kappa=0.0, stop_labelling=False),
        stage_seconds={"score": 1.0}))
    assert "kappa" not in first

    # A round that selected and waits for labels: its kappa is known before the labels are bought.
    state = RunState(str(tmp_path / "state"))
    state.write_json("rounds/0004/config.json", {})
    state.write_json("rounds/0004/stages/score.json", {"stage": "score"})
    state.write_json("rounds/0004/stages/select.json", {"stage": "select", "selected": 40, "kappa": 0.995,
                                                        "kappa_images": 800, "kappa_mean": 0.993,
                                                        "stop_labelling": True})
    state.write_bytes("rounds/0004/to_label.csv", b"image_id,uri\n")
    report = rounds.status(state.root)
    assert report["rounds"][0]["state"] == rounds.WAITING and report["rounds"][0]["kappa"] == 0.995
    print_status(report, as_json=False)
    assert "round 4: waiting for labels, selected 40, kappa 0.9950 (stop labelling)" in capsys.readouterr().out


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_a_stop_kappa_outside_0_to_1_is_refused(value):
    with pytest.raises(ConfigError, match="select.stop_kappa"):
        load_config("demo", {"select.stop_kappa": value})

