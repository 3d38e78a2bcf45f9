"""TypiClust's pieces (``raysal.selection.typical``): pure numpy, checked against their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from raysal.selection import typical


def blobs(n: int = 600, k: int = 5, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (k, d))
    labels = np.repeat(np.arange(k), n // k)
    return (centres[labels] + rng.normal(0, 1, (len(labels), d))).astype(np.float32), labels


def test_one_typical_image_per_blob_and_the_most_typical_of_it() -> None:
    x, labels = blobs()
    rows = typical.typical_indices(x, 5, seed=0)
    assert sorted(labels[rows].tolist()) == [0, 1, 2, 3, 4]
    for row in rows:  # within its blob, no image has closer neighbours
        members = np.flatnonzero(labels == labels[row])
        density = typical.typicality(x[members])
        assert density[members.tolist().index(row)] == density.max()


def test_typicality_is_the_inverse_mean_distance_to_the_nearest_neighbours() -> None:
    x = np.array([[0.0], [1.0], [3.0], [7.0]])
    # K = min(20, n - 1) = 3: every other row. Row 0: (1 + 3 + 7) / 3.
    assert typical.typicality(x) == pytest.approx(1 / np.array([11 / 3, 9 / 3, 9 / 3, 17 / 3]))
    assert typical.typicality(x, neighbours=1) == pytest.approx([1.0, 1.0, 1 / 2, 1 / 4])
    assert typical.typicality(x[:1]).tolist() == [np.inf]


def test_seeded_in_any_row_order_and_never_a_row_twice() -> None:
    x, _ = blobs(n=400, k=8)
    ids = np.arange(1000, 1400)
    rows = typical.typical_indices(x, 40, seed=3, image_ids=ids)
    assert len(set(rows.tolist())) == 40
    shuffle = np.random.default_rng(1).permutation(len(x))
    again = typical.typical_indices(x[shuffle], 40, seed=3, image_ids=ids[shuffle])
    assert ids[shuffle][again].tolist() == ids[rows].tolist()
    assert ids[typical.typical_indices(x, 40, seed=4, image_ids=ids)].tolist() != ids[rows].tolist()


def test_budget_beyond_the_rows_non_finite_rows_and_duplicates() -> None:
    x, _ = blobs(n=20, k=2)
    x[3] = np.nan
    assert sorted(typical.typical_indices(x, 50, seed=0).tolist()) == [i for i in range(20) if i != 3]
    assert 3 not in typical.typical_indices(x, 10, seed=0)
    assert typical.typical_indices(x, 0, seed=0).tolist() == []
    same = np.zeros((30, 4), np.float32)  # one distinct row: one cluster, the rest filled by key
    assert len(set(typical.typical_indices(same, 5, seed=0).tolist())) == 5


def test_pixel_features_average_each_cell() -> None:
    image = np.zeros((1, 4, 4, 1), np.uint8)
    image[0, :2, :2, 0] = 255  # the top-left quarter white
    assert typical.pixel_features(image, side=2).tolist() == [[1.0, 0.0, 0.0, 0.0]]
    odd = np.full((2, 9, 9, 3), 51, np.uint8)  # 9 / 8: cells of 1 and 2 pixels, the same mean
    assert typical.pixel_features(odd).shape == (2, 192) and np.allclose(typical.pixel_features(odd), 0.2)


def test_pca_from_summed_moments_is_the_covariance_eigenbasis() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    halves = [typical.moments(x[:200]), typical.moments(x[200:])]
    pca = typical.Pca.fit(sum(h[0] for h in halves), sum(h[1] for h in halves), sum(h[2] for h in halves), dims=3)
    values, vectors = np.linalg.eigh(np.cov(x.T, bias=True))
    top = vectors[:, ::-1][:, :3].T
    assert np.allclose(np.abs(pca.components @ top.T), np.eye(3), atol=1e-6)  # the same axes, up to sign
    projected = pca.project(x)
    assert np.allclose(projected.mean(axis=0), 0, atol=1e-4)
    assert np.allclose(projected.var(axis=0), values[::-1][:3], rtol=1e-4)

