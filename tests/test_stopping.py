"""The stopping signal: Cohen's kappa between consecutive models' predictions on a stop set.

The stop set is a fixed pseudo-random sample of the pool, chosen by a key per image id while
selection scans the scores; each round keeps its scoring model's predictions on it, and the next
round compares its own.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysal import cli, pipeline, rounds
from raysal.config import ConfigError, load_config
from raysal.metrics import cohen_kappa
from raysal.state import RunState


@pytest.mark.parametrize("a, b, expected", [
    ([0, 0, 1, 1], [0, 1, 1, 1], 0.5),  # agree on 3/4; chance 1/2 * 1/4 + 1/2 * 3/4 = 1/2
    ([0] * 20 + [0] * 5 + [1] * 10 + [1] * 15, [0] * 20 + [1] * 5 + [0] * 10 + [1] * 15, 0.4),  # 0.7 vs 0.5
    ([0, 1, 2, 2], [0, 1, 2, 2], 1.0),
    ([0, 1, 0, 1], [1, 0, 1, 0], -1.0),  # always disagree, each class half the time
    ([3, 3, 3], [3, 3, 3], 1.0),  # one class each, the same: chance agreement is 1, and so is theirs
    ([0, 1, 0, 1], [0, 0, 1, 1], 0.0),  # agree as often as chance
])
def test_cohen_kappa_known_answers(a, b, expected):
    assert cohen_kappa(np.array(a), np.array(b)) == pytest.approx(expected)


@pytest.mark.parametrize("a, b", [([], []), ([0, 1], [0]), ([0, -1], [0, 1])])
def test_cohen_kappa_refuses_what_it_cannot_compare(a, b):
    with pytest.raises(ValueError):
        cohen_kappa(np.array(a, dtype=np.int64), np.array(b, dtype=np.int64))


def test_id_keys_are_splitmix64():
    """splitmix64 seeded with 0 gives 0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F:
    the keys of the ids that are its states after one, two and three steps, less one step."""
    golden = 0x9E3779B97F4A7C15
    ids = np.array([(step * golden) % 2**64 for step in range(3)], dtype=np.uint64).view(np.int64)
    assert [int(k) for k in pipeline._id_keys(ids)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def _write_scores(folder, ids: np.ndarray, predicted: np.ndarray, scores: np.ndarray, files: int) -> None:
    folder.mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(ids)), files)):
        pq.write_table(pa.table({"image_id": ids[part], "uri": [f"u{j}" for j in ids[part]], "score": scores[part],
                                 "predicted": predicted[part], "error": ["" if s == s else "bad" for s in scores[part]]}),
                       folder / f"part-{i}.parquet")


@pytest.mark.timeout(120)
def test_the_stop_set_is_the_smallest_keys_of_the_scored_images_left(ray_session, tmp_path):
    rng = np.random.default_rng(0)
    n = 30_000
    ids = rng.permutation(10 * n)[:n].astype(np.int64)
    predicted = rng.integers(0, 5, n)
    scores = rng.random(n)
    scores[rng.choice(n, 300, replace=False)] = np.nan  # could not be scored: never in the stop set
    exclude = rng.choice(ids, 500, replace=False)
    _write_scores(tmp_path / "scores", ids, predicted, scores, files=7)

    got = pipeline.select_top_k(str(tmp_path / "scores"), 50, exclude, sample=2_000, tasks=3).stop_set
    eligible = np.flatnonzero(~np.isnan(scores) & ~np.isin(ids, exclude))
    expected = eligible[np.argsort(pipeline._id_keys(ids[eligible]))[:2_000]]  # brute force, all in memory
    order = np.argsort(ids[expected])
    np.testing.assert_array_equal(got["image_id"], ids[expected][order])
    np.testing.assert_array_equal(got["predicted"], predicted[expected][order])

    # The next round: the images selected since leave it, and the stop set keeps the rest.
    later = pipeline.select_top_k(str(tmp_path / "scores"), 50, np.union1d(exclude, got["image_id"][:100]),
                                  sample=2_000, tasks=2).stop_set
    assert len(np.intersect1d(later["image_id"], got["image_id"])) == 1_900


def _round(state: RunState, number: int, **select: object) -> rounds._Round:
    return rounds._Round(state, load_config("demo", {f"select.{k}": v for k, v in select.items()}), number, {})


def test_agreement_compares_the_stop_set_images_both_rounds_predicted(tmp_path):
    state = RunState(str(tmp_path / "state"))
    assert rounds._agreement(_round(state, 1), {"image_id": np.arange(5), "predicted": np.zeros(5, np.int64)}) == {
        "kappa": None, "kappa_images": 0}  # round 1: no model scored the pool before
    before = pa.table({"image_id": pa.array([9, 1, 4, 7, 3], pa.int64()), "predicted": pa.array([0, 1, 1, 0, 0])})
    state.write_table("rounds/0001/stop_set.parquet", before)  # not sorted by id: _agreement does not rely on it
    now = {"image_id": np.array([1, 2, 3, 4, 7, 8]), "predicted": np.array([1, 0, 1, 1, 1, 2])}  # 9 was selected
    got = rounds._agreement(_round(state, 2), now)
    # common ids 1, 3, 4, 7: before 1, 0, 1, 0; now 1, 1, 1, 1
    assert got == {"kappa": pytest.approx(cohen_kappa(np.array([1, 0, 1, 0]), np.array([1, 1, 1, 1]))),
                   "kappa_images": 4}


def _record(**extra: object) -> dict:
    return {"round": 3, "selected": 40, "pool_size": 857, "skipped": 0, "criterion": "least_confidence",
            "labelled_total": 380, "test_accuracy_before": 0.9, "test_accuracy_after": 0.92,
            "selection_accuracy_before": 0.5, "selection": "s", "metrics": "m", "learning_curve": "l", **extra}


def test_the_summary_and_status_report_the_kappa_and_when_to_stop(capsys):
    quiet = rounds.format_outcome(rounds.RoundOutcome(3, rounds.DONE, record=_record(
        kappa=0.95, kappa_images=817, stop_kappa=0.99, stop_labelling=False), stage_seconds={"score": 1.0}))
    assert "  predictions on the pool: models 1 and 2 agree with kappa 0.9500 on 817 stop-set images" in quiet
    assert "stop labelling" not in quiet
    stop = rounds.format_outcome(rounds.RoundOutcome(3, rounds.DONE, record=_record(
        kappa=0.995, kappa_images=817, stop_kappa=0.99, stop_labelling=True), stage_seconds={"score": 1.0}))
    assert ("  stop labelling: kappa 0.9950 >= select.stop_kappa 0.99, the model's predictions have stabilised"
            in stop.splitlines())
    first = rounds.format_outcome(rounds.RoundOutcome(1, rounds.DONE, record=_record(
        round=1, kappa=None, kappa_images=0, stop_kappa=0.0, stop_labelling=False), stage_seconds={"score": 1.0}))
    assert "kappa" not in first

    cli.print_status({"state": "s", "rounds": [{**_record(kappa=0.995, stop_labelling=True), "state": "done"}],
                      "latest_model": "m", "leased_by": None}, as_json=False)
    assert "kappa 0.9950 (stop labelling)" in capsys.readouterr().out


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_a_stop_kappa_outside_0_to_1_is_refused(value):
    with pytest.raises(ConfigError, match="select.stop_kappa"):
        load_config("demo", {"select.stop_kappa": value})

