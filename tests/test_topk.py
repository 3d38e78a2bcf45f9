"""Tests for raysal.topk: exact agreement with a full lexsort, the tie rule, and the merge."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from raysal.topk import merge_top_k, top_k_indices


def reference_top_k(
    scores: NDArray[np.float64], image_ids: NDArray[np.int64], k: int, exclude_ids: NDArray[np.int64] | None = None
) -> NDArray[np.intp]:
    """The stated rule done the slow, obvious way: drop NaN and excluded, full sort, take k."""
    eligible = ~np.isnan(scores)
    if exclude_ids is not None:
        eligible &= ~np.isin(image_ids, exclude_ids)
    rows = np.flatnonzero(eligible)
    order = np.lexsort((image_ids[rows], -scores[rows]))  # score desc, then id asc
    return rows[order][:k]


# --- a million rows with heavy ties, NaN and exclusions -------------------------------------------

N_BIG = 1_200_000


@pytest.fixture(scope="module")
def big_pool() -> dict[str, NDArray]:
    rng = np.random.default_rng(20240601)
    scores = np.round(rng.random(N_BIG), 3)  # ~1000 distinct values: ~1200 rows share each
    scores[rng.random(N_BIG) < 0.01] = np.nan
    image_ids = rng.permutation(3 * N_BIG)[:N_BIG].astype(np.int64)  # unique, unordered, gappy
    exclude_ids = rng.choice(image_ids, size=20_000, replace=False)
    full_order = reference_top_k(scores, image_ids, N_BIG, exclude_ids)
    return {"scores": scores, "image_ids": image_ids, "exclude_ids": exclude_ids, "full_order": full_order}


@pytest.mark.parametrize("k", [1, 2, 999, 1_000, 12_345, 500_000])
def test_matches_full_lexsort_on_a_million_rows(big_pool: dict[str, NDArray], k: int) -> None:
    scores, image_ids, full_order = big_pool["scores"], big_pool["image_ids"], big_pool["full_order"]
    # the cut at k falls inside a group of equal scores, so the id tie-break decides membership
    assert scores[full_order[k - 1]] == scores[full_order[k]]
    selected = top_k_indices(scores, image_ids, k, big_pool["exclude_ids"])
    np.testing.assert_array_equal(selected, full_order[:k])


def test_million_rows_never_select_nan_or_excluded(big_pool: dict[str, NDArray]) -> None:
    scores, image_ids = big_pool["scores"], big_pool["image_ids"]
    selected = top_k_indices(scores, image_ids, N_BIG, big_pool["exclude_ids"])
    expected_count = N_BIG - np.count_nonzero(np.isnan(scores) | np.isin(image_ids, big_pool["exclude_ids"]))
    assert selected.size == expected_count
    assert not np.isnan(scores[selected]).any()
    assert not np.isin(image_ids[selected], big_pool["exclude_ids"]).any()
    np.testing.assert_array_equal(selected, big_pool["full_order"])


def test_million_rows_shuffled_input_selects_the_same_ids_in_the_same_order(big_pool: dict[str, NDArray]) -> None:
    scores, image_ids = big_pool["scores"], big_pool["image_ids"]
    perm = np.random.default_rng(99).permutation(N_BIG)
    k = 5_000
    selected = top_k_indices(scores, image_ids, k, big_pool["exclude_ids"])
    shuffled = top_k_indices(scores[perm], image_ids[perm], k, big_pool["exclude_ids"])
    np.testing.assert_array_equal(image_ids[perm][shuffled], image_ids[selected])


# --- small exact cases ----------------------------------------------------------------------------

SCORES = np.array([0.5, 0.9, 0.5, np.nan, 0.9, 0.1, 0.5])
IDS = np.array([30, 20, 10, 5, 40, 1, 70], dtype=np.int64)
# by (score desc, id asc): 0.9/20, 0.9/40, 0.5/10, 0.5/30, 0.5/70, 0.1/1; id 5 is NaN


@pytest.mark.parametrize(
    ("k", "exclude_ids", "expected_ids"),
    [
        pytest.param(0, None, [], id="k=0"),
        pytest.param(1, None, [20], id="k=1-tie-goes-to-smaller-id"),
        pytest.param(2, None, [20, 40], id="k=2"),
        pytest.param(3, None, [20, 40, 10], id="k=3-cut-inside-a-tie"),
        pytest.param(4, None, [20, 40, 10, 30], id="k=4"),
        pytest.param(6, None, [20, 40, 10, 30, 70, 1], id="k=all-eligible"),
        pytest.param(7, None, [20, 40, 10, 30, 70, 1], id="k>eligible-nan-not-selected"),
        pytest.param(100, None, [20, 40, 10, 30, 70, 1], id="k>>rows"),
        pytest.param(2, [20], [40, 10], id="exclude-the-best"),
        pytest.param(3, [10, 40], [20, 30, 70], id="exclude-two"),
        pytest.param(10, [1, 5, 10, 20, 30, 40, 70], [], id="exclude-everything"),
        pytest.param(2, [999, 1000], [20, 40], id="exclude-unknown-ids"),
        pytest.param(2, [], [20, 40], id="exclude-empty-list"),
        pytest.param(1, [5], [20], id="exclude-the-nan"),
    ],
)
def test_small_known_answers(k: int, exclude_ids: list[int] | None, expected_ids: list[int]) -> None:
    exclude = None if exclude_ids is None else np.array(exclude_ids, dtype=np.int64)
    selected = top_k_indices(SCORES, IDS, k, exclude)
    assert selected.dtype == np.intp
    assert IDS[selected].tolist() == expected_ids
    np.testing.assert_array_equal(selected, reference_top_k(SCORES, IDS, k, exclude))


@pytest.mark.parametrize(
    ("scores", "k", "expected_ids"),
    [
        pytest.param([np.nan, np.nan, np.nan], 2, [], id="all-nan"),
        pytest.param([], 3, [], id="no-rows"),
        pytest.param([np.nan, -np.inf, 0.0], 3, [2, 1], id="minus-inf-is-eligible-and-last"),
        pytest.param([1.0, np.inf, np.nan], 1, [1], id="plus-inf-first"),
        pytest.param([-0.0, 0.0, -0.0], 3, [0, 1, 2], id="signed-zeros-tie-by-id"),
        pytest.param([2.0, 2.0, 2.0, 2.0], 2, [0, 1], id="all-tied"),
    ],
)
def test_edge_scores(scores: list[float], k: int, expected_ids: list[int]) -> None:
    image_ids = np.arange(len(scores), dtype=np.int64)
    selected = top_k_indices(np.array(scores, dtype=np.float64), image_ids, k)
    assert image_ids[selected].tolist() == expected_ids


def test_float32_scores_and_list_inputs_are_accepted() -> None:
    selected = top_k_indices(np.array([0.25, 0.75, 0.5], dtype=np.float32), [7, 8, 9], 2, exclude_ids=[8])
    assert selected.tolist() == [2, 0]


@pytest.mark.parametrize("n", [1, 10, 1000])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_row_order_does_not_change_the_selection(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random(n), 1)  # heavy ties
    image_ids = rng.permutation(5 * n)[:n].astype(np.int64)
    perm = rng.permutation(n)
    k = max(1, n // 3)
    selected_ids = image_ids[top_k_indices(scores, image_ids, k)]
    shuffled_ids = image_ids[perm][top_k_indices(scores[perm], image_ids[perm], k)]
    np.testing.assert_array_equal(shuffled_ids, selected_ids)


@pytest.mark.parametrize(
    ("scores", "image_ids", "k", "match"),
    [
        pytest.param([0.1, 0.2], [1, 2], -1, "k must be >= 0", id="negative-k"),
        pytest.param([0.1, 0.2], [1, 2, 3], 1, "must be equal 1-d shapes", id="length-mismatch"),
        pytest.param([[0.1, 0.2]], [[1, 2]], 1, "must be equal 1-d shapes", id="2-d"),
    ],
)
def test_bad_input_raises_value_error(scores: list, image_ids: list, k: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        top_k_indices(np.array(scores), np.array(image_ids), k)


# --- merge_top_k ----------------------------------------------------------------------------------


def _random_part(rng: np.random.Generator, image_ids: NDArray[np.int64]) -> dict[str, NDArray]:
    n = len(image_ids)
    scores = np.round(rng.random(n), 2)  # ties across parts
    scores[rng.random(n) < 0.05] = np.nan
    # every other column is a function of the id, so misalignment after the merge shows
    return {
        "image_id": image_ids,
        "score": scores,
        "uri": np.array([f"img/{i}.jpg" for i in image_ids]),
        "predicted": image_ids % 7,
        "top_probs": np.stack([image_ids * 0.5, image_ids * 0.25], axis=1),  # [n, 2]
    }


def _check_aligned(merged: dict[str, NDArray]) -> None:
    ids = merged["image_id"]
    assert merged["uri"].tolist() == [f"img/{i}.jpg" for i in ids]
    np.testing.assert_array_equal(merged["predicted"], ids % 7)
    np.testing.assert_array_equal(merged["top_probs"], np.stack([ids * 0.5, ids * 0.25], axis=1))


@pytest.mark.parametrize("part_sizes", [(500,), (100, 0, 250, 1, 400), (3, 3, 3, 3, 3, 3, 3), (0, 600)])
@pytest.mark.parametrize("k", [1, 10, 150, 5_000])
def test_merge_equals_top_k_of_the_concatenation(part_sizes: tuple[int, ...], k: int) -> None:
    rng = np.random.default_rng(sum(part_sizes) + k)
    all_ids = rng.permutation(10 * sum(part_sizes)).astype(np.int64)
    bounds = np.cumsum((0, *part_sizes))
    parts = [_random_part(rng, all_ids[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]
    concatenated = {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
    expected = reference_top_k(concatenated["score"], concatenated["image_id"], k)

    merged = merge_top_k(parts, k)

    assert set(merged) == {"image_id", "score", "uri", "predicted", "top_probs"}
    np.testing.assert_array_equal(merged["image_id"], concatenated["image_id"][expected])
    np.testing.assert_array_equal(merged["score"], concatenated["score"][expected])
    _check_aligned(merged)


@pytest.mark.parametrize("n_blocks", [1, 4, 13])
def test_block_survivors_then_merge_equals_global_top_k(n_blocks: int) -> None:
    """The distributed path: each block keeps its own top k, a running merge combines them."""
    rng = np.random.default_rng(n_blocks)
    pool = _random_part(rng, rng.permutation(50_000)[:20_000].astype(np.int64))
    k = 300
    blocks = np.array_split(rng.permutation(20_000), n_blocks)
    best: dict[str, NDArray] = {}
    for block in blocks:  # the driver's running merge, as in pipeline.select_top_k
        part = {c: v[block] for c, v in pool.items()}
        keep = top_k_indices(part["score"], part["image_id"], k)
        survivors = {c: v[keep] for c, v in part.items()}
        best = merge_top_k([best, survivors] if best else [survivors], k)

    expected = reference_top_k(pool["score"], pool["image_id"], k)
    np.testing.assert_array_equal(best["image_id"], pool["image_id"][expected])
    _check_aligned(best)


def test_merge_respects_custom_column_names() -> None:
    parts = [
        {"id": np.array([3, 1]), "s": np.array([0.5, 0.5]), "tag": np.array(["c", "a"])},
        {"id": np.array([2]), "s": np.array([0.7]), "tag": np.array(["b"])},
    ]
    merged = merge_top_k(parts, 2, score_column="s", id_column="id")
    assert merged["id"].tolist() == [2, 1]
    assert merged["tag"].tolist() == ["b", "a"]


def test_merge_k_zero_keeps_the_columns_with_no_rows() -> None:
    merged = merge_top_k([{"image_id": np.array([1, 2]), "score": np.array([0.1, 0.2])}], 0)
    assert {c: v.tolist() for c, v in merged.items()} == {"image_id": [], "score": []}


@pytest.mark.parametrize("parts", [[], [{"image_id": np.array([], dtype=np.int64), "score": np.array([])}]])
def test_merge_of_nothing_is_empty(parts: list[dict[str, NDArray]]) -> None:
    assert merge_top_k(parts, 5) == {}
