"""Tests for raysal.selection.criteria: known answers, the registry contract and the random baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest

from raysal.config import CRITERION_NAMES
from raysal.selection.criteria import (
    CRITERIA,
    SAMPLED,
    RandomBaseline,
    bald,
    entropy,
    get_criterion,
    least_confidence,
    smallest_margin,
)

UNCERTAINTY = ["least_confidence", "smallest_margin", "entropy"]
OF_PROBS = sorted(set(CRITERIA) - SAMPLED)  # criteria of probabilities [n, c]; bald's contract is below
_MASK64 = (1 << 64) - 1


def _splitmix64_finaliser(x: int) -> int:
    """Plain-int reference for the mix the random baseline documents (splitmix64 finaliser)."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _reference_random_score(seed: int, image_id: int) -> float:
    mixed = _splitmix64_finaliser((image_id & _MASK64) ^ _splitmix64_finaliser(seed))
    return (mixed >> 11) / float(1 << 53)


def _ids(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64)


# --- known answers -------------------------------------------------------------------------------

# (row, least confidence = 1 - max, smallest margin = 1 - (top1 - top2), entropy in nats)
KNOWN_ANSWERS = [
    pytest.param([1.0, 0.0], 0.0, 0.0, 0.0, id="one-hot-2"),
    pytest.param([0.0, 0.0, 1.0, 0.0], 0.0, 0.0, 0.0, id="one-hot-4"),
    pytest.param([0.5, 0.5], 0.5, 1.0, math.log(2), id="uniform-2"),
    pytest.param([0.25, 0.25, 0.25, 0.25], 0.75, 1.0, math.log(4), id="uniform-4"),
    pytest.param([0.2] * 5, 0.8, 1.0, math.log(5), id="uniform-5"),
    # -(0.5 ln 0.5 + 2 * 0.25 ln 0.25) = 0.5 ln 2 + ln 2
    pytest.param([0.5, 0.25, 0.25], 0.5, 0.75, 1.5 * math.log(2), id="half-quarter-quarter"),
    pytest.param([0.25, 0.5, 0.25], 0.5, 0.75, 1.5 * math.log(2), id="max-in-middle"),
    pytest.param([0.1, 0.2, 0.7], 0.3, 0.5, -(0.1 * math.log(0.1) + 0.2 * math.log(0.2) + 0.7 * math.log(0.7)),
                 id="max-last"),
    pytest.param([0.3, 0.1, 0.6], 0.4, 0.7, -(0.3 * math.log(0.3) + 0.1 * math.log(0.1) + 0.6 * math.log(0.6)),
                 id="runner-up-first"),
    pytest.param([0.35, 0.05, 0.5, 0.1], 0.5, 0.85,
                 -(0.35 * math.log(0.35) + 0.05 * math.log(0.05) + 0.5 * math.log(0.5) + 0.1 * math.log(0.1)),
                 id="runner-up-not-adjacent"),
    pytest.param([0.4, 0.4, 0.2], 0.6, 1.0, -(2 * 0.4 * math.log(0.4) + 0.2 * math.log(0.2)), id="tied-top-two"),
    pytest.param([0.6, 0.4], 0.4, 0.8, -(0.6 * math.log(0.6) + 0.4 * math.log(0.4)), id="binary"),
]


@pytest.mark.parametrize(("row", "expected_lc", "expected_margin", "expected_entropy"), KNOWN_ANSWERS)
def test_known_answers(row: list[float], expected_lc: float, expected_margin: float, expected_entropy: float) -> None:
    probs = np.array([row])  # [1, c]
    assert least_confidence(probs, _ids(1)) == pytest.approx([expected_lc], abs=1e-12)
    assert smallest_margin(probs, _ids(1)) == pytest.approx([expected_margin], abs=1e-12)
    assert entropy(probs, _ids(1)) == pytest.approx([expected_entropy], abs=1e-12)


def test_known_answers_vectorised_over_rows() -> None:
    rows = [[0.5, 0.25, 0.25], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.4, 0.4, 0.2]]
    probs = np.array(rows)  # [4, 3]
    np.testing.assert_allclose(least_confidence(probs, _ids(4)), [0.5, 0.0, 2 / 3, 0.6], atol=1e-12)
    np.testing.assert_allclose(smallest_margin(probs, _ids(4)), [0.75, 0.0, 1.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(
        entropy(probs, _ids(4)),
        [1.5 * math.log(2), 0.0, math.log(3), -(0.8 * math.log(0.4) + 0.2 * math.log(0.2))],
        atol=1e-12,
    )


# The article's case, checked by hand:
#   A = [0.40, 0.38, 0.10, 0.07, 0.05]: LC 0.60, margin 1 - 0.02 = 0.98, entropy ~1.300
#   B = [0.30, 0.20, 0.20, 0.15, 0.15]: LC 0.70, margin 1 - 0.10 = 0.90, entropy ~1.574
# so least confidence and entropy pick B, smallest margin picks A.
ARTICLE_A = [0.40, 0.38, 0.10, 0.07, 0.05]
ARTICLE_B = [0.30, 0.20, 0.20, 0.15, 0.15]


@pytest.mark.parametrize(
    ("name", "expected_pick", "expected_scores"),
    [
        ("least_confidence", "B", [0.60, 0.70]),
        ("smallest_margin", "A", [0.98, 0.90]),
        ("entropy", "B", [1.3003915518, 1.5741029989]),
    ],
)
def test_article_example_criteria_disagree(name: str, expected_pick: str, expected_scores: list[float]) -> None:
    probs = np.array([ARTICLE_A, ARTICLE_B])  # [2, 5]
    scores = CRITERIA[name](probs, _ids(2))
    np.testing.assert_allclose(scores, expected_scores, atol=1e-9)
    assert "AB"[int(np.argmax(scores))] == expected_pick


def _confident_probs(n: int, c: int, rng: np.random.Generator) -> np.ndarray:
    """Rows with one class at >= 0.9: every row far from uncertain."""
    winners = rng.integers(0, c, size=n)  # [n]
    noise = rng.dirichlet(np.ones(c), size=n)  # [n, c]
    return 0.9 * np.eye(c)[winners] + 0.1 * noise  # [n, c], rows sum to 1


@pytest.mark.parametrize("name", UNCERTAINTY)
@pytest.mark.parametrize("planted_at", [0, 417, 999])
def test_planted_uncertain_row_ranks_first(name: str, planted_at: int) -> None:
    rng = np.random.default_rng(1234)
    probs = _confident_probs(1000, 4, rng)  # [1000, 4]
    probs[planted_at] = [0.26, 0.25, 0.25, 0.24]
    scores = CRITERIA[name](probs, _ids(1000))
    assert int(np.argmax(scores)) == planted_at
    assert np.count_nonzero(scores == scores.max()) == 1


# --- the registry contract -----------------------------------------------------------------------


def test_registry_offers_exactly_the_configurable_criteria() -> None:
    assert sorted(CRITERIA) == sorted(CRITERION_NAMES)
    assert set(UNCERTAINTY) | {"random"} | {"bald"} == set(CRITERIA) and SAMPLED == {"bald"}


@pytest.mark.parametrize("name", OF_PROBS)
def test_get_criterion_returns_the_registered_function(name: str) -> None:
    criterion = get_criterion(name)
    probs = np.array([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]])
    np.testing.assert_array_equal(criterion(probs, np.array([5, 9])), CRITERIA[name](probs, np.array([5, 9])))


@pytest.mark.parametrize("name", OF_PROBS)
@pytest.mark.parametrize(("n", "c"), [(1, 2), (7, 3), (64, 10)])
def test_contract_shape_dtype_finite(name: str, n: int, c: int) -> None:
    rng = np.random.default_rng(n * 100 + c)
    probs = rng.dirichlet(np.ones(c), size=n).astype(np.float32)  # models emit float32
    scores = get_criterion(name)(probs, rng.permutation(10 * n)[:n].astype(np.int64))
    assert scores.shape == (n,)
    assert scores.dtype == np.float64
    assert np.isfinite(scores).all()


@pytest.mark.parametrize("name", OF_PROBS)
def test_contract_empty_batch_gives_empty_scores(name: str) -> None:
    scores = get_criterion(name)(np.zeros((0, 3)), np.zeros(0, dtype=np.int64))
    assert scores.shape == (0,)


@pytest.mark.parametrize("name", UNCERTAINTY)
@pytest.mark.parametrize("c", [2, 3, 10])
def test_uncertainty_uniform_row_scores_above_one_hot_row(name: str, c: int) -> None:
    probs = np.stack([np.eye(c)[c - 1], np.full(c, 1.0 / c)])  # [2, c]: one-hot, uniform
    one_hot_score, uniform_score = get_criterion(name)(probs, _ids(2))
    assert one_hot_score == pytest.approx(0.0, abs=1e-12)
    assert uniform_score > one_hot_score + 0.4


@pytest.mark.parametrize("name", OF_PROBS)
def test_contract_order_independence(name: str) -> None:
    rng = np.random.default_rng(7)
    probs = rng.dirichlet(np.ones(5), size=200)  # [200, 5]
    image_ids = rng.permutation(10_000)[:200].astype(np.int64)  # [200]
    perm = rng.permutation(200)
    criterion = get_criterion(name, seed=3)
    scores = criterion(probs, image_ids)
    permuted_scores = criterion(probs[perm], image_ids[perm])
    np.testing.assert_array_equal(permuted_scores, scores[perm])
    assert len(np.unique(scores)) > 150  # the scores vary, so a wrong permutation would show


@pytest.mark.parametrize("name", OF_PROBS)
def test_contract_batch_split_does_not_change_scores(name: str) -> None:
    """A worker scoring half a batch gives each image the same score as one scoring all of it."""
    rng = np.random.default_rng(8)
    probs = rng.dirichlet(np.ones(4), size=100)  # [100, 4]
    image_ids = np.arange(1000, 1100, dtype=np.int64)
    criterion = get_criterion(name, seed=11)
    whole = criterion(probs, image_ids)
    parts = np.concatenate([criterion(probs[:37], image_ids[:37]), criterion(probs[37:], image_ids[37:])])
    np.testing.assert_array_equal(parts, whole)


_BAD_SHAPES = {"1-d": (4,), "one-class": (4, 1), "3-d": (2, 3, 4)}
@pytest.mark.parametrize(
    ("name", "shape"),
    [
        pytest.param(name, shape, id=f"{name}-{label}", )
        for name in OF_PROBS
        for label, shape in _BAD_SHAPES.items()
    ],
)
def test_bad_probs_shape_raises_value_error(name: str, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"shape \[n, c\]"):
        get_criterion(name)(np.full(shape, 0.25), _ids(shape[0]))


@pytest.mark.parametrize("name", ["nope", "margin", "", "Entropy"])
def test_get_criterion_unknown_name_lists_the_choices(name: str) -> None:
    with pytest.raises(ValueError, match="unknown criterion") as excinfo:
        get_criterion(name)
    message = str(excinfo.value)
    assert repr(name) in message
    for choice in CRITERIA:
        assert choice in message


# --- the random baseline -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 42, 2**63 - 1])
def test_random_matches_reference_splitmix64(seed: int) -> None:
    image_ids = np.array([0, 1, 2, 12345, 2**40 + 3, 2**63 - 1, -1, -(2**63)], dtype=np.int64)
    expected = [_reference_random_score(seed, int(i)) for i in image_ids]
    np.testing.assert_array_equal(get_criterion("random", seed)(np.zeros((8, 2)), image_ids), expected)


def test_random_same_seed_is_deterministic_across_instances() -> None:
    image_ids = np.arange(500, dtype=np.int64) * 7919
    first = get_criterion("random", seed=5)(np.zeros((500, 3)), image_ids)
    second = RandomBaseline(seed=5)(np.ones((500, 3)) / 3, image_ids)  # probs are ignored
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize(("seed", "other_seed"), [(0, 1), (1, 2), (5, 6), (0, 2**62)])
def test_random_other_seed_gives_other_scores(seed: int, other_seed: int) -> None:
    image_ids = np.arange(1000, dtype=np.int64)
    probs = np.zeros((1000, 2))
    scores = get_criterion("random", seed)(probs, image_ids)
    other = get_criterion("random", other_seed)(probs, image_ids)
    assert np.count_nonzero(scores == other) == 0


def test_registry_random_is_seed_zero() -> None:
    assert CRITERIA["random"] == RandomBaseline(seed=0)
    assert get_criterion("random") == RandomBaseline(seed=0)
    assert get_criterion("random", seed=9) == RandomBaseline(seed=9)


@pytest.mark.parametrize("seed", [0, 3, 2024])
def test_random_is_roughly_uniform_on_unit_interval(seed: int) -> None:
    n = 100_000
    scores = get_criterion("random", seed)(np.zeros((n, 2)), np.arange(n, dtype=np.int64))
    assert scores.min() >= 0.0
    assert scores.max() < 1.0
    assert abs(scores.mean() - 0.5) < 0.01
    counts, _ = np.histogram(scores, bins=10, range=(0.0, 1.0))
    np.testing.assert_allclose(counts / n, 0.1, atol=0.005)
    assert len(np.unique(scores)) == n


# --- bald: the mutual information of T sampled predictions -------------------------------------


def _reference_bald(samples: np.ndarray) -> np.ndarray:
    """Houlsby et al. (2011) as baal computes it, written out per image in baal's layout
    ([n, c, T]): H[mean_t p_t] - mean_t H[p_t], natural log, 0 log 0 = 0."""
    probs = np.moveaxis(np.asarray(samples, np.float64), 0, -1)  # [n, c, T]
    out = []
    for image in probs:  # [c, T]
        mean = image.mean(axis=1)  # [c]
        entropy_of_mean = -sum(p * math.log(p) for p in mean if p > 0)
        mean_entropy = sum(-sum(p * math.log(p) for p in image[:, t] if p > 0) for t in range(image.shape[1]))
        out.append(entropy_of_mean - mean_entropy / image.shape[1])
    return np.array(out)


@pytest.mark.parametrize(("t", "n", "c"), [(2, 1, 2), (20, 50, 3), (7, 30, 10)])
def test_bald_is_the_mutual_information_of_its_samples(t: int, n: int, c: int) -> None:
    rng = np.random.default_rng(t * 1000 + n + c)
    samples = rng.dirichlet(np.full(c, 0.3), size=(t, n)).astype(np.float32)  # [T, n, c]
    scores = bald(samples, _ids(n))
    np.testing.assert_allclose(scores, _reference_bald(samples), rtol=0, atol=1e-6)
    assert scores.shape == (n,) and scores.dtype == np.float64 and (scores >= 0).all()
    assert scores.min() > 1e-3 and (n == 1 or np.ptp(scores) > 0.05)  # the samples differ, and so do the scores


def test_bald_known_answers_all_equal_and_one_hot_samples() -> None:
    uniform = np.full((5, 1, 4), 0.25)  # every pass unsure, and all agree: nothing to learn about the weights
    agreeing = np.tile(np.eye(3)[1], (6, 1, 1))  # every pass sure of class 1
    split = np.stack([np.eye(2)[t % 2][None] for t in range(4)])  # passes sure, but half say 0, half 1
    spread = np.stack([np.eye(5)[t][None] for t in range(5)])  # each pass sure of another of 5 classes
    mixed = np.array([[[0.9, 0.1]], [[0.5, 0.5]]])  # T = 2
    assert bald(uniform, _ids(1))[0] == pytest.approx(0.0, abs=1e-12)
    assert bald(agreeing, _ids(1))[0] == pytest.approx(0.0, abs=1e-12)
    assert bald(split, _ids(1))[0] == pytest.approx(math.log(2), abs=1e-12)
    assert bald(spread, _ids(1))[0] == pytest.approx(math.log(5), abs=1e-12)
    h = lambda *p: -sum(x * math.log(x) for x in p)  # noqa: E731
    assert bald(mixed, _ids(1))[0] == pytest.approx(h(0.7, 0.3) - (h(0.9, 0.1) + h(0.5, 0.5)) / 2, abs=1e-12)
    for samples in (uniform, agreeing, split, spread, mixed):
        np.testing.assert_allclose(bald(samples, _ids(1)), _reference_bald(samples), atol=1e-6)


def test_bald_contract_order_batch_split_empty_and_shapes() -> None:
    rng = np.random.default_rng(9)
    samples = rng.dirichlet(np.ones(4), size=(10, 100))  # [10, 100, 4]
    ids = np.arange(1000, 1100, dtype=np.int64)
    whole = get_criterion("bald")(samples, ids)
    perm = rng.permutation(100)
    np.testing.assert_array_equal(bald(samples[:, perm], ids[perm]), whole[perm])
    np.testing.assert_array_equal(np.concatenate([bald(samples[:, :37], ids[:37]), bald(samples[:, 37:], ids[37:])]),
                                  whole)
    assert bald(np.zeros((10, 0, 4)), np.zeros(0, np.int64)).shape == (0,)
    with pytest.raises(ValueError, match=r"samples of shape \[T, n, c\]"):
        bald(samples[0], ids)  # probabilities [n, c], not samples
    with pytest.raises(ValueError, match="image_ids must have shape"):
        bald(samples, ids[:5])
