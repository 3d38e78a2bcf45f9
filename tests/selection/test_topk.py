"""Tests for raysal.selection.topk (exact agreement with a full lexsort, the tie rule, the streaming
candidates and the merge) and for the distributed selection built on it, ``distributed.select_top_k``,
on a real local Ray: in-memory blocks, a lazy dataset and a folder of Parquet files."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from raysal.model import scorer
from raysal.run import topk as distributed
from raysal.selection.topk import candidate_rows, is_in_sorted, top_k_indices, top_k_unordered

from _scores import score_source as _source
from _scores import scores_table as _scores_table


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


# --- top_k_unordered, is_in_sorted, candidate_rows --------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 999, 1_000, 12_345, N_BIG])
def test_unordered_top_k_is_the_same_set_as_top_k(big_pool: dict[str, NDArray], k: int) -> None:
    scores, image_ids = big_pool["scores"], big_pool["image_ids"]
    got = top_k_unordered(scores, image_ids, k)
    assert got.dtype == np.intp and len(np.unique(got)) == len(got)
    np.testing.assert_array_equal(np.sort(got), np.sort(top_k_indices(scores, image_ids, k)))


@pytest.mark.parametrize(
    ("scores", "image_ids", "k", "expected_ids"),
    [
        pytest.param([0.5, 0.5, 0.5, 0.5], [7, 3, 9, 1], 2, [1, 3], id="cut-inside-a-tie-smallest-ids"),
        pytest.param([np.nan, 0.1, np.nan], [1, 2, 3], 5, [2], id="nan-never"),
        pytest.param([0.2, 0.9, 0.2, 0.2], [8, 5, 2, 4], 3, [2, 4, 5], id="best-then-smallest-tied-ids"),
        pytest.param([], [], 3, [], id="no-rows"),
    ],
)
def test_unordered_top_k_known_answers(scores: list[float], image_ids: list[int], k: int,
                                       expected_ids: list[int]) -> None:
    ids = np.array(image_ids, dtype=np.int64)
    got = top_k_unordered(np.array(scores, dtype=np.float64), ids, k)
    assert sorted(ids[got].tolist()) == expected_ids


@pytest.mark.parametrize("size", [0, 1, 5_000])
def test_is_in_sorted_equals_isin(size: int) -> None:
    rng = np.random.default_rng(size)
    sorted_set = np.unique(rng.integers(0, 10_000, size))
    values = rng.integers(-5, 10_010, 3_000)
    np.testing.assert_array_equal(is_in_sorted(values, sorted_set), np.isin(values, sorted_set))


@pytest.mark.parametrize(
    ("k", "threshold", "exclude", "expected_ids"),
    [
        pytest.param(10, -np.inf, None, [1, 10, 20, 30, 40, 70], id="no-threshold-every-scored-row"),
        pytest.param(10, 0.5, None, [10, 20, 30, 40, 70], id="ties-at-the-threshold-stay"),
        pytest.param(10, 0.6, None, [20, 40], id="below-the-threshold-out"),
        pytest.param(3, -np.inf, None, [10, 20, 40], id="at-most-k"),
        pytest.param(10, 0.5, [20, 30], [10, 40, 70], id="excluded-out"),
        pytest.param(0, -np.inf, None, [], id="k=0"),
    ],
)
def test_candidate_rows_known_answers(k: int, threshold: float, exclude: list[int] | None,
                                      expected_ids: list[int]) -> None:
    exclude_sorted = None if exclude is None else np.sort(np.array(exclude, dtype=np.int64))
    got = candidate_rows(SCORES, IDS, k, threshold, exclude_sorted)
    assert sorted(IDS[got].tolist()) == expected_ids


# --- a scan: candidates of each part, merged -------------------------------------------------


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


def _merge(parts: list[dict[str, NDArray]], k: int) -> dict[str, NDArray]:
    """What ``scan.best_rows`` does with tables: the top k of the parts together, all columns."""
    merged = {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
    keep = top_k_indices(merged["score"], merged["image_id"], k)
    return {c: v[keep] for c, v in merged.items()}


@pytest.mark.parametrize("n_blocks", [1, 4, 13, 200])
@pytest.mark.parametrize("k", [1, 300, 20_000])
def test_streamed_candidates_then_merge_equal_global_top_k(n_blocks: int, k: int) -> None:
    """The scan of ``scan.scan``: each block offers ``candidate_rows`` against the running
    threshold, the kept rows merge when they pass 2k."""
    rng = np.random.default_rng(n_blocks + k)
    pool = _random_part(rng, rng.permutation(50_000)[:20_000].astype(np.int64))
    exclude = np.sort(rng.choice(pool["image_id"], 500, replace=False))
    best: dict[str, NDArray] = {}
    threshold = -np.inf
    for block in np.array_split(rng.permutation(20_000), n_blocks):
        part = {c: v[block] for c, v in pool.items()}
        keep = candidate_rows(part["score"], part["image_id"], k, threshold, exclude)
        assert keep.size <= k and not np.isnan(part["score"][keep]).any()
        assert not np.isin(part["image_id"][keep], exclude).any()
        best = _merge([best, {c: v[keep] for c, v in part.items()}] if best else
                      [{c: v[keep] for c, v in part.items()}], k)
        if len(best.get("score", [])) == k:
            threshold = best["score"].min()

    expected = reference_top_k(pool["score"], pool["image_id"], k, exclude)
    np.testing.assert_array_equal(best["image_id"], pool["image_id"][expected])
    _check_aligned(best)


# --- distributed.select_top_k: the distributed selection on a real local Ray ---------------------------

SOURCES = ["blocks", "lazy", "parquet"]


# by (score desc, id asc): 0.9/1, 0.9/5, 0.5/2, 0.5/3, 0.5/4, 0.5/7, 0.1/8, -inf/6; 9 is skipped, 0 is NaN
KNOWN = dict(image_ids=[5, 2, 9, 7, 3, 1, 8, 4, 6, 0],
             scores=[0.9, 0.5, np.nan, 0.5, 0.5, 0.9, 0.1, 0.5, -np.inf, np.nan],
             errors=["", "", "undecodable: truncated", "", "", "", "", "", "", ""])


@pytest.mark.parametrize("kind", SOURCES)
@pytest.mark.parametrize("tasks", [1, 2, 5])
@pytest.mark.parametrize(
    ("k", "exclude", "expected_ids"),
    [
        pytest.param(1, None, [1], id="k=1-tie-across-blocks-to-smaller-id"),
        pytest.param(3, None, [1, 5, 2], id="cut-inside-a-tie-spread-over-blocks"),
        pytest.param(4, [2, 99], [1, 5, 3, 4], id="excluded-never"),
        pytest.param(100, None, [1, 5, 2, 3, 4, 7, 8, 6], id="k-above-the-pool-nan-and-skipped-never"),
        pytest.param(5, [1, 2, 3, 4, 5, 6, 7, 8], [], id="everything-excluded"),
        pytest.param(0, None, [], id="k=0"),
    ],
)
def test_select_top_k_known_answers(ray_session, tmp_path, kind: str, tasks: int, k: int,
                                    exclude: list[int] | None, expected_ids: list[int]) -> None:
    source = _source(kind, _scores_table(**KNOWN), 3, tmp_path / "scores")
    selection = distributed.select_top_k(source, k, None if exclude is None else np.array(exclude), tasks=tasks)
    ids = selection.rows["image_id"].tolist()
    assert ids == expected_ids
    assert selection.rows["uri"].tolist() == [f"img/{i}.jpg" for i in ids]  # the other columns stay aligned
    assert selection.rows["predicted"].tolist() == [i % 3 for i in ids]
    assert selection.skipped["image_id"].tolist() == [9]
    assert selection.skipped["uri"].tolist() == ["img/9.jpg"]
    assert selection.skipped["reason"].tolist() == ["undecodable: truncated"]
    assert selection.score_min == -np.inf  # over every scored row, excluded ones too; NaN is not a score
    assert selection.score_max == 0.9  # over every scored row too, excluded ones and all: k = 0 included
    assert selection.rows_read == 10


def test_select_top_k_reads_each_parquet_file_with_its_own_types(ray_session, tmp_path) -> None:
    """A file whose ``error`` column is all null (null-typed) beside one of strings: one task reads
    both, each with its own schema, not the first file's."""
    import pyarrow as pa
    import pyarrow.parquet as pq



    (tmp_path / "scores").mkdir()
    clean = _scores_table([1, 2, 3], [0.2, 0.9, 0.5], ["", "", ""]).set_column(4, "error", pa.nulls(3))
    pq.write_table(clean, tmp_path / "scores" / "part-0.parquet")
    pq.write_table(_scores_table([4, 5], [0.7, np.nan], ["", "undecodable: truncated"]),
                   tmp_path / "scores" / "part-1.parquet")
    selection = distributed.select_top_k(str(tmp_path / "scores"), 3, tasks=1)
    assert selection.rows["image_id"].tolist() == [2, 4, 3] and selection.rows_read == 5
    assert selection.skipped["image_id"].tolist() == [5]


@pytest.mark.parametrize("kind", SOURCES)
@pytest.mark.parametrize(("k", "tasks"), [(1, None), (777, 2), (20_000, 40)])  # 40 tasks: merged in tasks first
def test_select_top_k_equals_numpy_with_ties_nan_skipped_and_exclusions(ray_session, tmp_path, kind: str, k: int,
                                                                         tasks: int | None) -> None:


    rng = np.random.default_rng(k)
    n = 300_000
    image_ids = rng.permutation(3 * n)[:n].astype(np.int64)
    scores = np.round(rng.random(n), 3)  # ~300 rows share each score: ties across blocks and files
    failed = rng.random(n) < 0.01
    scores[failed] = np.nan
    errors = np.where(failed, "unreadable: gone", "")
    errors[failed & (rng.random(n) < 0.3)] = scorer.NON_FINITE
    exclude = image_ids[np.argsort(-np.nan_to_num(scores, nan=-1))[: 3 * k : 3]]  # some of the best are labelled
    table = _scores_table(image_ids.tolist(), scores.tolist(), errors.tolist())

    selection = distributed.select_top_k(_source(kind, table, 48, tmp_path / "scores"), k, exclude, tasks=tasks)

    want = top_k_indices(scores, image_ids, k, exclude)
    np.testing.assert_array_equal(selection.rows["image_id"], image_ids[want])
    np.testing.assert_array_equal(selection.rows["score"], scores[want])
    assert selection.rows["uri"].tolist() == [f"img/{i}.jpg" for i in image_ids[want]]
    assert sorted(selection.skipped["image_id"].tolist()) == sorted(image_ids[failed].tolist())
    by_id = dict(zip(image_ids.tolist(), errors.tolist(), strict=True))
    assert [by_id[i] for i in selection.skipped["image_id"].tolist()] == selection.skipped["reason"].tolist()
    assert selection.score_min == np.nanmin(scores) and selection.score_max == np.nanmax(scores)
    assert selection.rows_read == n


@pytest.mark.parametrize("kind", ["blocks", "parquet", "no-files"])
def test_select_top_k_of_nothing(ray_session, tmp_path, kind: str) -> None:


    if kind == "no-files":
        (tmp_path / "scores").mkdir()
        source = str(tmp_path / "scores")
    else:
        source = _source(kind, _scores_table([], [], []), 1, tmp_path / "scores")
    selection = distributed.select_top_k(source, 5, np.array([1, 2]))
    assert len(selection.rows["image_id"]) == 0 and len(selection.skipped["image_id"]) == 0
    assert selection.score_min is None and selection.score_max is None and selection.rows_read == 0


def test_select_top_k_refuses_a_negative_k(ray_session) -> None:
    import ray.data



    with pytest.raises(ValueError, match="k must be >= 0"):
        distributed.select_top_k(ray.data.from_arrow(_scores_table(**KNOWN)), -1)
