"""raysal from Python (a notebook, a script): the functions ``import raysal`` exposes.

    import raysal
    cfg = raysal.load_config("demo", {"select.budget": 50})
    outcome = raysal.run_round(cfg, "runs/demo")          # starts a local Ray if none is up
    print(raysal.status("runs/demo")["rounds"])
    scores = raysal.score(cfg, "runs/demo/models/0001", state="runs/demo")   # a pandas DataFrame
    chosen = raysal.select(scores, budget=20)

Each starts (or joins, under ``ray job submit``) Ray when it needs it and none is running.
TensorFlow may have been imported before raysal: raysal's models use ``tf_keras`` by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from raysal.config import Config, SelectConfig, load_config  # noqa: F401  (Config, load_config: re-exported)

if TYPE_CHECKING:
    import pandas as pd

    from raysal.run.rounds import RoundOutcome


def _ray() -> None:
    from raysal.run.cluster import init_ray

    init_ray()


def run_round(cfg: Config, state: str, label_file: str | None = None, break_lock: bool = False) -> "RoundOutcome":
    """Run (or resume) one round of the run kept in ``state`` (a folder or a URI).

    The same checks as ``raysal round`` run first; they raise ``raysal.errors.Unavailable``,
    ``Refused``, ``Locked`` and the like (each with its exit code), naming the problem. Returns the outcome:
    ``status`` is ``"done"`` or ``"waiting for labels"``; ``record`` is the round's record.
    """
    import logging

    from raysal import config as config_lib
    from raysal import storage
    from raysal.report import console
    from raysal.run import preflight, rounds

    if not logging.getLogger(console.LOGGER).handlers:  # a notebook: stages, progress and epochs on stderr
        console.use_console(None)
    cfg = config_lib.absolute_paths(cfg)
    state = storage.absolute(state)
    preflight.check(cfg, state)
    rounds.check_startable(cfg, state, label_file, break_lock)
    _ray()
    preflight.check_cluster(cfg, state)
    return rounds.run_round(cfg, state, label_file=label_file, break_lock=break_lock)


def status(state: str) -> dict[str, Any]:
    """The run's rounds, lease and latest model, as plain data (what ``raysal status --json`` prints)."""
    from raysal import storage
    from raysal.run import rounds

    return rounds.status(storage.absolute(state))


def score(cfg: Config, model: str, source: str = "pool", state: str | None = None,
          embeddings: bool = False) -> "pd.DataFrame":
    """Score one of the config's sources with a model checkpoint; one row per image.

    Args:
        model: a checkpoint folder or URI (``<state>/models/0001``).
        source: ``pool``, ``labelled``, ``val`` or ``test``.
        state: the run's state, where relative source paths point when ``data.root`` is unset.
        embeddings: also return each image's embedding (see Returns).

    Returns:
        columns image_id, uri, label, score (the config's criterion: higher = more
        informative), predicted, top_classes, top_probs, error ("" = scored); with ``embeddings``,
        also embedding (float16, the penultimate layer; for ``select(strategy="diversity")``).
    """
    from raysal import config as config_lib
    from raysal import storage
    from raysal.data import sources
    from raysal.data.decode import decode
    from raysal.run import preflight, scoring

    if source not in ("pool", "labelled", "val", "test"):
        raise ValueError(f"source: {source!r} is not one of pool, labelled, val, test")
    cfg = config_lib.absolute_paths(cfg)
    root = preflight.data_root(cfg, storage.absolute(state or "."))
    _ray()
    ds = sources.read_source(getattr(cfg.data, source), cfg.data.classes, root)
    return scoring.score(decode(ds, cfg), storage.absolute(model), cfg, embeddings=embeddings).to_pandas()


def select(scores: "pd.DataFrame", budget: int, exclude_ids: Sequence[int] = (), strategy: str = "top_k",
           beta: float = 1.0, seed: int = 0, round_number: int = 0, n_classes: int = 0,
           candidates: int = SelectConfig.candidates) -> "pd.DataFrame":
    """The ``budget`` rows with the highest score, exactly (ties: lower image_id first); or, with
    ``strategy`` ``power`` / ``softmax``, a sample of them as a round with that
    ``select.strategy``, ``beta``, ``seed`` and round number picks it; or, with
    ``class_balanced``, a quota per ``predicted`` class of ``n_classes``; or, with ``diversity``,
    k-center greedy on the ``embedding`` column over the ``candidates x budget`` best
    (``raysal.selection.diversity``; score with ``score.embeddings = true``).

    Rows not scored (NaN score) and ``exclude_ids`` are never chosen. The result is in selection
    order, with a ``rank`` column from 1.
    """
    from raysal.model.embeddings import EMBEDDING
    from raysal.selection.strategies import get_strategy, select_indices

    spread = get_strategy(strategy).spread
    if spread and EMBEDDING not in scores.columns:
        raise ValueError(f"strategy {strategy!r} needs an embedding column: raysal.score(..., embeddings=True)")
    embeddings = None
    if spread:
        embeddings = np.stack(scores[EMBEDDING].to_numpy()) if len(scores) else np.zeros((0, 0), np.float16)
    predicted = scores["predicted"].to_numpy(np.int64) if "predicted" in scores.columns else None
    chosen = select_indices(scores["score"].to_numpy(np.float64), scores["image_id"].to_numpy(np.int64), budget,
                            strategy, beta, seed, round_number, predicted=predicted, n_classes=n_classes,
                            embeddings=embeddings, candidates=candidates, exclude_ids=np.asarray(exclude_ids, np.int64))
    out = scores.iloc[chosen].reset_index(drop=True)
    out["rank"] = np.arange(1, len(out) + 1)
    return out
