"""Monte Carlo dropout over a model's head: T stochastic passes of ``softmax(dropout(x) @ W + b)``
for the ``bald`` criterion (Gal, Islam & Ghahramani, "Deep Bayesian Active Learning with Image
Data", ICML 2017; Houlsby et al. 2011).

raysal's models end in Dropout + Dense softmax on the backbone's embedding, so a pass with
dropout on is the head applied to the embedding with a dropout mask. Each pass t draws one mask
``[d]`` (one sample of the weights) and applies it to every image: the T passes are T sampled
sub-networks, and each image's samples are T draws of its predictive distribution, as in Gal's
estimator. The masks depend on (seed, round) alone, never on batch order or on which worker
scored an image, so that scoring from images and rescoring from cached embeddings give the same
samples (up to how float32 products round in batches of other sizes, ~1e-7). The T masked
kernels are stacked into one ``[d, T * c]`` matrix: the T passes cost one
matrix product, not T.

A head of K members (``model.heads``) needs no dropout: its samples are the members' own
probabilities ``[K, n, c]`` (``bald_sampler``), the disagreement of an ensemble trained from
different initial weights (Lakshminarayanan et al., "Simple and Scalable Predictive Uncertainty
Estimation using Deep Ensembles", NeurIPS 2017; Beluch et al., CVPR 2018, for active learning).

Numpy only: the scoring actors and the rescoring tasks import this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from numpy.typing import NDArray
from scipy.special import softmax

from raysal.hashing import stream
from raysal.model.embeddings import DenseHead

MASK_STREAM = 0xBA1D  # the masks' own random stream beside the seed and round


def dropout_masks(dim: int, passes: int, rate: float, seed: int, round_number: int) -> NDArray[np.float32]:
    """``[passes, dim]`` inverted-dropout masks: 0 with probability ``rate``, else 1 / (1 - rate),
    as Keras' Dropout scales what it keeps."""
    if not 0.0 < rate < 1.0:
        raise ValueError(f"MC dropout needs a dropout rate in (0, 1), got {rate}")
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    rng = np.random.default_rng(int(stream(seed, round_number, MASK_STREAM)))
    keep = rng.random((passes, dim)) >= rate  # [T, d]
    return keep.astype(np.float32) / np.float32(1.0 - rate)


@dataclass(frozen=True)
class DropoutSampler:
    """T passes of ``head`` with dropout ``rate`` on its input, the masks drawn from (seed, round)."""

    head: DenseHead
    rate: float
    passes: int
    seed: int = 0
    round_number: int = 0

    def __post_init__(self) -> None:
        if self.head.num_members != 1:
            raise ValueError(f"MC dropout samples a head of one member, not {self.head.num_members}: an "
                             "ensemble's samples are its members (bald_sampler)")
        d, c = self.head.kernel.shape  # [d, c]
        masks = dropout_masks(d, self.passes, self.rate, self.seed, self.round_number)  # [T, d]
        stacked = (masks[:, :, None] * self.head.kernel[None]).transpose(1, 0, 2).reshape(d, self.passes * c)
        object.__setattr__(self, "_kernel", np.ascontiguousarray(stacked, np.float32))  # [d, T * c]

    def __call__(self, embeddings: NDArray[np.floating]) -> NDArray[np.float32]:
        """Class probabilities ``[T, n, c]`` of the T passes, for embeddings ``[n, d]``."""
        n, c = len(embeddings), len(self.head.bias)
        logits = np.asarray(embeddings, np.float32) @ self._kernel  # [n, T * c]
        logits = logits.reshape(n, self.passes, c) + self.head.bias  # [n, T, c]
        return softmax(logits, axis=2).astype(np.float32).transpose(1, 0, 2)  # [T, n, c]


def bald_sampler(head: DenseHead, rate: float, passes: int, seed: int,
                 round_number: int) -> Callable[[NDArray[np.floating]], NDArray[np.float32]]:
    """What ``bald`` scores for embeddings ``[n, d]``: an ensemble head's members ``[K, n, c]``,
    else ``passes`` MC dropout passes of the head ``[T, n, c]`` (``rate`` > 0 needed then)."""
    if head.num_members > 1:
        return head.members
    return DropoutSampler(head, rate, passes, seed, round_number)
