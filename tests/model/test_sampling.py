"""MC dropout over the head (raysal.model.sampling): each pass is the head with one dropout mask
on its input, the masks depend on (seed, round) alone, and T passes are one matrix product."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from raysal.model.embeddings import DenseHead
from raysal.model.sampling import DropoutSampler, bald_sampler, dropout_masks


def _head(d: int = 64, c: int = 5, seed: int = 0) -> DenseHead:
    rng = np.random.default_rng(seed)
    return DenseHead(rng.normal(0, 0.3, (d, c)).astype(np.float32), rng.normal(0, 0.1, c).astype(np.float32))


def test_masks_drop_at_the_rate_and_scale_what_they_keep_as_keras_does():
    masks = dropout_masks(512, 40, 0.25, seed=3, round_number=2)  # [T, d]
    assert masks.shape == (40, 512) and masks.dtype == np.float32
    assert set(np.unique(masks)) == {0.0, np.float32(1 / 0.75)}
    assert (masks == 0).mean() == pytest.approx(0.25, abs=0.02)
    np.testing.assert_array_equal(masks, dropout_masks(512, 40, 0.25, seed=3, round_number=2))
    assert (masks != dropout_masks(512, 40, 0.25, seed=3, round_number=3)).any()  # another round, other masks
    assert (masks != dropout_masks(512, 40, 0.25, seed=4, round_number=2)).any()
    for rate in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="dropout rate in"):
            dropout_masks(8, 2, rate, 0, 0)


def test_each_pass_is_the_head_on_its_masked_input():
    head = _head()
    x = np.random.default_rng(1).normal(size=(30, 64)).astype(np.float32)  # [n, d]
    sampler = DropoutSampler(head, 0.3, passes=12, seed=5, round_number=1)
    samples = sampler(x)  # [T, n, c]
    masks = dropout_masks(64, 12, 0.3, 5, 1)
    expected = np.stack([softmax((x * mask) @ head.kernel + head.bias, axis=1) for mask in masks])
    assert samples.shape == (12, 30, 5) and samples.dtype == np.float32
    np.testing.assert_allclose(samples, expected, rtol=1e-5, atol=1e-6)
    assert np.ptp(samples, axis=0).max() > 0.05  # the passes differ: dropout is on


def test_samples_do_not_depend_on_the_batch_an_image_is_in():
    sampler = DropoutSampler(_head(), 0.2, passes=20, seed=0, round_number=4)
    x = np.random.default_rng(2).normal(size=(50, 64)).astype(np.float16)  # float16, as stored
    whole = sampler(x)
    # the same masks whatever the batch: equal up to how BLAS rounds float32 products of another shape
    np.testing.assert_allclose(np.concatenate([sampler(x[:17]), sampler(x[17:])], axis=1), whole, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(sampler(x[::-1])[:, ::-1], whole, rtol=1e-6, atol=1e-7)
    assert sampler(np.zeros((0, 64), np.float16)).shape == (20, 0, 5)


# --- a head of K members (model.heads): bald samples the members, not dropout ------------------


def _ensemble(k: int = 4, d: int = 64, c: int = 5) -> DenseHead:
    members = [_head(d, c, seed) for seed in range(k)]
    return DenseHead(np.stack([m.kernel for m in members]), np.stack([m.bias for m in members]))  # [K, d, c], [K, c]


def test_an_ensembles_members_are_each_heads_probabilities_and_it_outputs_their_mean():
    ensemble = _ensemble()
    x = np.random.default_rng(3).normal(size=(30, 64)).astype(np.float16)  # [n, d], as stored
    members = ensemble.members(x)  # [K, n, c]
    assert members.shape == (4, 30, 5) and members.dtype == np.float32
    for k in range(4):
        np.testing.assert_allclose(members[k], _head(seed=k).probs(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ensemble.probs(x), members.mean(axis=0), rtol=1e-6)
    assert (ensemble.num_members, ensemble.num_classes) == (4, 5)
    one = _head()
    assert (one.num_members, one.num_classes) == (1, 5)
    np.testing.assert_allclose(one.members(x), one.probs(x)[None], rtol=1e-6)  # [1, n, c]
    again = DenseHead.from_bytes(ensemble.to_bytes())
    np.testing.assert_array_equal(again.kernel, ensemble.kernel)
    np.testing.assert_array_equal(again.bias, ensemble.bias)
    with pytest.raises(ValueError, match="do not fit"):
        DenseHead(ensemble.kernel, ensemble.bias[0])


def test_bald_samples_an_ensembles_members_and_a_single_head_with_dropout():
    x = np.random.default_rng(4).normal(size=(10, 64)).astype(np.float32)
    ensemble = _ensemble()
    sampler = bald_sampler(ensemble, 0.0, passes=20, seed=0, round_number=1)  # no dropout needed
    np.testing.assert_array_equal(sampler(x), ensemble.members(x))
    np.testing.assert_array_equal(bald_sampler(_head(), 0.2, 20, 0, 1)(x), DropoutSampler(_head(), 0.2, 20, 0, 1)(x))
    with pytest.raises(ValueError, match="MC dropout samples a head of one member, not 4"):
        DropoutSampler(ensemble, 0.2, 20)
