"""The selection strategies: how a round chooses its budget from the scores, in one registry.

A strategy says what the exact top-k must find (how many rows, ranked by which keys, with or
without a quota per predicted class, with or without the embeddings) and how the budget is
then picked from those rows. A round (``raysal.run.stages.select``), the Python API
(``raysal.select``) and the simulation all select through ``STRATEGIES``, so each strategy is
written once. Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from raysal.config import STRATEGY_NAMES
from raysal.selection.criteria import SelectionKeys
from raysal.selection.diversity import k_center_greedy
from raysal.selection.topk import class_balanced_indices, top_k_indices


@dataclass(frozen=True)
class Strategy:
    """One ``select.strategy``: what the exact top-k finds, and how the budget is picked from it."""

    name: str
    summary: str  # how a round's summary describes it; {beta} and {candidates} are filled in
    per_class: bool = False  # quotas per predicted class: ``topk.class_balanced_indices`` (Emam et al. 2021)
    spread: bool = False  # k-center greedy on the embeddings of the candidates x budget best

    def keys(self, beta: float, seed: int, round_number: int) -> SelectionKeys:
        """What the rows are ranked by: the scores, or for a sample, scores perturbed by noise
        drawn from (seed, round, image_id) alone."""
        return SelectionKeys(self.name, beta, seed, round_number)

    def rows_to_find(self, budget: int, candidates: int) -> int:
        """How many rows the exact top-k must find for a selection of ``budget``."""
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        return budget * candidates if self.spread else budget

    def pick(self, embeddings: NDArray[np.floating] | None, budget: int) -> NDArray[np.intp] | None:
        """Positions of the budget among the rows found, in selection order; None: all of them
        as they are (every strategy but diversity)."""
        if not self.spread:
            return None
        if embeddings is None:
            raise ValueError(f"strategy {self.name!r} needs the embeddings of its candidates")
        return k_center_greedy(embeddings, budget) if len(embeddings) else np.zeros(0, np.intp)

    def describe(self, beta: float, candidates: int) -> str:
        """The summary's words for this strategy ("" for plain top-k)."""
        return self.summary.format(beta=beta, candidates=candidates)


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("top_k", ""),
    Strategy("power", " (power sampling, beta {beta:g})"),
    Strategy("softmax", " (softmax sampling, beta {beta:g})"),
    Strategy("class_balanced", " (class-balanced: a quota per predicted class)", per_class=True),
    Strategy("diversity", " (diversity: k-center greedy over the {candidates} x budget most uncertain)",
             spread=True),
)}
assert tuple(STRATEGIES) == STRATEGY_NAMES  # the config validates against the same names


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {tuple(STRATEGIES)}")
    return STRATEGIES[name]


def select_indices(scores: NDArray[np.floating], image_ids: NDArray[np.int64], budget: int, strategy: str = "top_k",
                   beta: float = 1.0, seed: int = 0, round_number: int = 0, predicted: NDArray[np.int64] | None = None,
                   n_classes: int = 0, embeddings: NDArray[np.floating] | None = None, candidates: int = 4,
                   exclude_ids: NDArray[np.int64] | None = None) -> NDArray[np.intp]:
    """The rows a round with this strategy selects from scores in memory, in selection order:
    what the distributed path (``raysal.run.topk``) gives for the same rows.

    Args:
        scores: ``[n]``, higher = more informative; NaN is never selected.
        predicted: ``[n]`` predicted classes (class_balanced).
        n_classes: the number of classes (class_balanced).
        embeddings: ``[n, d]`` (diversity).
        exclude_ids: ids never selected.
    """
    spec = get_strategy(strategy)
    ids = np.asarray(image_ids, np.int64)  # [n]
    keys = spec.keys(beta, seed, round_number)(np.asarray(scores, np.float64), ids)  # [n]
    exclude = np.asarray(exclude_ids if exclude_ids is not None else [], np.int64)
    if spec.per_class:
        if n_classes < 1 or predicted is None:
            raise ValueError(f"strategy {strategy!r} needs the predicted classes and n_classes, the number of classes")
        return class_balanced_indices(keys, ids, np.asarray(predicted, np.int64), budget, n_classes, exclude)
    chosen = top_k_indices(keys, ids, spec.rows_to_find(budget, candidates), exclude)
    if spec.spread and embeddings is None:
        raise ValueError(f"strategy {strategy!r} needs an embedding column: raysal.score(..., embeddings=True)")
    picks = spec.pick(None if embeddings is None else np.asarray(embeddings)[chosen], budget)
    return chosen if picks is None else chosen[picks]
