"""raysal.data.imbalance: the long-tailed subsample of ``raysal simulate --imbalance``, exact answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raysal.data.imbalance import long_tail_counts, long_tail_rows
from raysal.errors import EXIT_CONFIG, ConfigError


def test_the_counts_fall_off_exponentially_in_a_seeded_class_order():
    counts = long_tail_counts(np.array([120, 100, 130]), 4.0, seed=7)
    order = np.random.default_rng(7).permutation(3)  # order[k]: the class of rank k
    # n_max is the smallest class's 100; ranks 0, 1, 2 keep 100, 100 / 2, 100 / 4.
    assert counts[order].tolist() == [100, 50, 25]
    assert long_tail_counts(np.array([120, 100, 130]), 4.0, seed=7).tolist() == counts.tolist()  # deterministic
    assert long_tail_counts(np.array([120, 100, 130]), 1.0, seed=7).tolist() == [100, 100, 100]
    assert long_tail_counts(np.array([9]), 3.0, seed=0).tolist() == [9]  # one class: no tail


def test_the_classes_change_places_with_the_seed():
    orders = {tuple(long_tail_counts(np.full(10, 50), 10.0, seed).tolist()) for seed in range(5)}
    assert len(orders) > 1 and all(sorted(o) == sorted(next(iter(orders))) for o in orders)


@pytest.mark.parametrize("ratio", [0.5, 0.999, -3.0, math.nan, math.inf])
def test_a_bad_ratio_is_refused_naming_the_option(ratio):
    with pytest.raises(ConfigError, match="--imbalance") as caught:
        long_tail_counts(np.array([10, 10]), ratio, seed=0)
    assert caught.value.exit_code == EXIT_CONFIG


def test_a_class_too_small_for_the_ratio_is_refused():
    with pytest.raises(ConfigError, match=r"--imbalance 20 needs at least 20 images of every class, and the "
                                          r"smallest class has 12"):
        long_tail_counts(np.array([50, 12, 40]), 20.0, seed=0)


def test_the_rows_hold_the_counts_of_each_class():
    labels = np.repeat(np.arange(4), [40, 60, 50, 45])  # [195]
    rows = long_tail_rows(labels, 4, 8.0, seed=3)
    counts = long_tail_counts(np.array([40, 60, 50, 45]), 8.0, seed=3)
    assert np.bincount(labels[rows], minlength=4).tolist() == counts.tolist()
    assert sorted(counts.tolist()) == [5, 10, 20, 40]  # 40 * 8 ** (-k / 3)
    assert (np.diff(rows) > 0).all()  # sorted, no row twice
    assert long_tail_rows(labels, 4, 8.0, seed=3).tolist() == rows.tolist()
    assert long_tail_rows(labels, 4, 8.0, seed=4).tolist() != rows.tolist()


@settings(max_examples=200, deadline=None)
@given(available=st.lists(st.integers(1, 500), min_size=1, max_size=12), ratio=st.floats(1, 50),
       seed=st.integers(0, 99))
def test_the_largest_class_keeps_ratio_times_the_smallest(available, ratio, seed):
    n_max = min(available)
    if n_max < ratio:
        with pytest.raises(ConfigError, match="--imbalance"):
            long_tail_counts(np.array(available), ratio, seed)
        return
    counts = long_tail_counts(np.array(available), ratio, seed)
    assert (counts >= 1).all() and (counts <= np.array(available)).all()
    assert counts.max() == n_max
    if len(available) > 1:
        assert counts.min() == max(1, np.rint(n_max * ratio ** -1.0))  # the smallest share, rounded
