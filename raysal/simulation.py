"""Simulated learning curves: how many labels active learning saves on a labelled pool.

Every strategy runs the same loop on the same data, with the pool's own labels as the oracle:
per seed, a seed set of labelled images is drawn from the pool; each round trains a model on
what is labelled, measures its test accuracy and balanced accuracy, scores the rest of the pool
with a criterion (``raysal.selection.criteria``) and selects the next budget with
``raysal.select``, the function a round's selection is checked against, with the seed and the
round number a real round would use.

The fast path (said so in every result): per seed, the round-0 model is trained in-process on
the seed set; its backbone is then frozen, the pool's and the test split's embeddings are
computed once (float16), and each round retrains only the head (Dropout + Dense softmax, as
raysal's) in-process on the cached embeddings, from the same initial weights every round
(``raysal.model.heads``). The ``ensemble`` strategy trains K heads from K initial weights
(``ENSEMBLE_HEADS``; every strategy trains ``model.heads`` when it is > 1), and ``bald`` scores
their disagreement. Within a seed, every strategy starts from the same labelled set, backbone and
head weights (the first member's, for an ensemble), so the round-0 accuracies of those that train
as many heads are equal and their curves differ by what they selected alone.

With ``imbalance`` R > 1 the pool is first subsampled long-tailed (``raysal.data.imbalance``): the
largest class keeps R times the images of the smallest, the seed sets are drawn from what is
kept, and the test split stays as it is, so its balanced accuracy says how the rare classes do.

The summary maths (``area_under_curve``, ``labels_to_reach``, ``summarise``) is plain numpy;
Ray and TensorFlow are imported where the simulation runs, inside its tasks.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from raysal.config import SEED_STRATEGIES
from raysal.data.imbalance import long_tail_rows
from raysal.errors import ConfigError, Refused
from raysal.report.metrics import balanced_accuracy

if TYPE_CHECKING:
    from raysal.config import Config

FAST_PATH = ("round-0 model trained in-process on the seed set; backbone frozen; head retrained in-process each "
             "round on cached float16 embeddings")


ENSEMBLE_HEADS = 5  # the ensemble strategy's members, when model.heads is 1


@dataclass(frozen=True)
class Strategy:
    """What a simulated round selects with: a criterion and a ``select.strategy``."""

    criterion: str  # raysal.selection.criteria name
    strategy: str = "top_k"  # select.strategy; its beta and candidates are the config's (select.*)
    ensemble: bool = False  # train ENSEMBLE_HEADS heads (model.heads when > 1); bald scores their disagreement

    def heads(self, cfg: "Config") -> int:
        """The head members it trains each round: ``model.heads``, or its own ensemble's."""
        return cfg.model.heads if cfg.model.heads > 1 or not self.ensemble else ENSEMBLE_HEADS


STRATEGIES: dict[str, Strategy] = {
    "random": Strategy("random"),
    "margin": Strategy("smallest_margin"),
    "entropy": Strategy("entropy"),
    "least_confidence": Strategy("least_confidence"),
    "power": Strategy("smallest_margin", "power"),
    "softmax": Strategy("smallest_margin", "softmax"),
    "class_balanced": Strategy("smallest_margin", "class_balanced"),
    "diversity": Strategy("smallest_margin", "diversity"),
    "bald": Strategy("bald"),  # select.mc_samples MC dropout passes of the head (model.dropout)
    "ensemble": Strategy("bald", ensemble=True),  # the members' disagreement (Beluch et al., CVPR 2018)
}


@dataclass(frozen=True)
class Settings:
    """A simulation's sizes and training settings; defaults fit the demo on a 2-core laptop. The
    rest is the config's: the model and its dropout, ``train.batch_size`` and
    ``train.finetune_learning_rate`` for the round-0 model, ``select.beta`` and
    ``select.candidates``, and ``seed`` (the first seed; seed i is ``seed + i``)."""

    strategies: tuple[str, ...] = ("random", "margin", "power", "diversity")  # the baseline first
    seeds: int = 5  # repeats with another seed set, round-0 model and head init: the spread
    rounds: int = 8  # selections after round 0; a curve has rounds + 1 points
    seed_size: int = 50  # labelled images before the first selection, drawn at random from the pool
    budget: int = 25  # images labelled per round
    target: float | None = None  # accuracy to reach; None: random's final mean accuracy
    round0_epochs: int = 30  # the round-0 model, whole model trained on the seed set
    head_steps: int = 300  # full-batch Adam steps, from the same initial head weights every round
    head_learning_rate: float = 3e-3  # Adam
    imbalance: float = 1.0  # largest over smallest class of the pool, subsampled long-tailed; 1: the pool as it is
    seed_strategy: str = "random"  # the seed set: random, or typical (TypiClust, as a cold start's round 0 picks)

    def __post_init__(self) -> None:
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown or not self.strategies:
            raise ConfigError(f"strategies: {unknown or 'none given'} not among {sorted(STRATEGIES)}")
        if len(set(self.strategies)) != len(self.strategies):
            raise ConfigError(f"strategies: {list(self.strategies)} names one twice")
        for name in ("seeds", "seed_size", "budget", "round0_epochs", "head_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.rounds < 0:
            raise ConfigError(f"rounds: must be >= 0, got {self.rounds}")
        if self.seed_strategy not in SEED_STRATEGIES:
            raise ConfigError(f"seed_strategy: {self.seed_strategy!r} is not one of {', '.join(SEED_STRATEGIES)}")
        if not math.isfinite(self.imbalance) or self.imbalance < 1:
            raise ConfigError(f"imbalance: --imbalance {self.imbalance} must be a finite number >= 1 "
                              "(1: the pool as it is)")
        if not 0 < self.head_learning_rate < 1:
            raise ConfigError(f"head_learning_rate: {self.head_learning_rate} is outside (0, 1)")
        if self.target is not None and not 0 < self.target <= 1:
            raise ConfigError(f"target: {self.target} is outside (0, 1]")
        if self.target is None and "random" not in self.strategies:
            raise ConfigError("target: no accuracy to reach: give one, or run the 'random' baseline")


# --- the summary: plain numpy -----------------------------------------------------------------


def area_under_curve(labelled: Sequence[float], accuracy: Sequence[float]) -> float:
    """Mean accuracy over the labelled range: the trapezoid area divided by the range's width
    (one point: its accuracy)."""
    x, y = np.asarray(labelled, np.float64), np.asarray(accuracy, np.float64)  # [r], [r]
    if len(x) == 1:
        return float(y[0])
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / (x[-1] - x[0]))


def labels_to_reach(labelled: Sequence[float], accuracy: Sequence[float], target: float) -> float | None:
    """Labelled images where the curve first reaches ``target``, interpolated linearly between
    the two rounds around the crossing; None if it never does."""
    x, y = np.asarray(labelled, np.float64), np.asarray(accuracy, np.float64)  # [r], [r]
    reached = np.flatnonzero(y >= target)
    if not reached.size:
        return None
    i = int(reached[0])
    if i == 0:
        return float(x[0])
    return float(x[i - 1] + (target - y[i - 1]) * (x[i] - x[i - 1]) / (y[i] - y[i - 1]))


def _spread(values: NDArray[np.float64]) -> dict[str, float]:
    return {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
            "max": float(values.max())}


def summarise(labelled: Sequence[int], accuracy: Mapping[str, Sequence[Sequence[float]]],
              target: float | None = None, baseline: str = "random") -> dict[str, Any]:
    """Per strategy: the curve's mean and spread over seeds, its AUC, the labels it needs to reach
    the target and the labels it saves against the baseline there.

    Args:
        labelled: [r] labelled images at each round, the same for every strategy.
        accuracy: strategy -> [seeds][r] test accuracy.
        target: the accuracy to reach; None: the baseline's final mean accuracy.
        baseline: the strategy the others are compared with (``random``); where it did not run,
            nothing is saved against it and the target must be given.

    Returns:
        ``{"target": ..., "baseline": ..., "strategies": {name: {...}}}``; std is the population std.
    """
    if target is None:
        if baseline not in accuracy:
            raise ValueError(f"no target accuracy: give one, or run the {baseline!r} baseline")
        target = float(np.asarray(accuracy[baseline], np.float64).mean(axis=0)[-1])
    out: dict[str, Any] = {}
    for name, curves in accuracy.items():
        acc = np.asarray(curves, np.float64)  # [seeds, r]
        if acc.ndim != 2 or acc.shape[1] != len(labelled):
            raise ValueError(f"{name}: accuracy has shape {acc.shape}, not [seeds, {len(labelled)}]")
        mean = acc.mean(axis=0)  # [r]
        aucs = np.array([area_under_curve(labelled, row) for row in acc])  # [seeds]
        out[name] = {
            "accuracy": acc.tolist(),
            "mean": mean.tolist(), "std": acc.std(axis=0).tolist(),
            "min": acc.min(axis=0).tolist(), "max": acc.max(axis=0).tolist(),
            "final_accuracy": _spread(acc[:, -1]),
            "auc": {**_spread(aucs), "per_seed": aucs.tolist()},
            "labels_to_target": labels_to_reach(labelled, mean, target),
        }
    base = out.get(baseline, {}).get("labels_to_target")
    for entry in out.values():
        own = entry["labels_to_target"]
        saved = None if base is None or own is None else base - own
        entry["labels_saved"] = saved
        entry["labels_saved_fraction"] = None if saved is None else saved / base
    return {"target": target, "baseline": baseline, "strategies": out}


# --- the simulation: Ray tasks that train with TensorFlow --------------------------------------


@dataclass(frozen=True)
class Split:
    """A source decoded to numpy, sorted by image_id."""

    image_ids: NDArray[np.int64]  # [n]
    images: NDArray[np.uint8]  # [n, s, s, 3]
    labels: NDArray[np.int64]  # [n]


def load_split(cfg: "Config", source: str, root: str) -> Split:
    """Read and decode one of the config's sources (``pool``, ``test``) with raysal's sources and
    ``raysal.data.decode.decode`` (Ray Data), once, into memory. Undecodable images are left out; an image
    without a label is refused: the simulation's oracle is the source's labels."""
    from raysal.data import sources
    from raysal.data.decode import decode

    source_cfg = getattr(cfg.data, source)
    ds = decode(sources.read_source(source_cfg, cfg.data.classes, root), cfg)
    batches = [b for b in ds.iter_batches(batch_format="numpy", batch_size=None) if len(b["image_id"])]
    if not batches:
        raise ValueError(f"data.{source}: no images")
    ids = np.concatenate([b["image_id"] for b in batches]).astype(np.int64)
    images = np.concatenate([b["image"] for b in batches])
    labels = np.concatenate([np.asarray(b["label"], dtype=np.float64) for b in batches])  # null -> NaN
    ok = np.concatenate([b["error"] for b in batches]) == ""
    unlabelled = int(np.isnan(labels[ok]).sum())
    if unlabelled:
        raise ValueError(f"data.{source}: {unlabelled} images have no label; a simulation needs every pool and test "
                         "image's label (the oracle)")
    order = np.argsort(ids[ok], kind="stable")
    return Split(ids[ok][order], images[ok][order], labels[ok][order].astype(np.int64))


def seed_set(n: int, size: int, seed: int) -> NDArray[np.intp]:
    """Indices of the seed set: ``size`` of ``n`` pool rows drawn with numpy's rng(seed), sorted."""
    if not 0 < size < n:
        raise ValueError(f"seed_size: {size} must be between 1 and the pool's {n - 1} images")
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def typical_seed_set(cfg: "Config", pool: Split, size: int, seed: int) -> NDArray[np.intp]:
    """Indices of a typical seed set, sorted: what a cold start's round 0 selects
    (``raysal.run.coldstart``): TypiClust over the pool's features after PCA, the features being
    the untrained model's backbone embeddings when it is pretrained, else the pixels downsampled."""
    from raysal.model import models
    from raysal.model.features import PIXEL_SIDE
    from raysal.selection import typical

    if cfg.model.pretrained:
        embed = models.embedding_model(models.build_model(cfg.model, len(cfg.data.classes)))
        features = embed.predict(pool.images, batch_size=256, verbose=0)
    else:
        features = typical.pixel_features(pool.images, PIXEL_SIDE)
    pca = typical.Pca.fit(*typical.moments(features))
    return np.sort(typical.typical_indices(pca.project(features), size, seed, image_ids=pool.image_ids))


def round_zero(cfg: "Config", settings: Settings, pool: Split, test: Split,
               seed: int) -> tuple[dict[str, Any], float]:
    """One seed's start: the seed set, the round-0 model trained on it (the config's
    ``train.batch_size`` and ``train.finetune_learning_rate``), the pool's and test split's
    embeddings from its frozen backbone (float16, as scoring stores them), and the head's initial
    weights, as many as the settings' strategies train members (``Strategy.heads``); and the
    round-0 model's test accuracy."""
    from raysal.model import heads, models
    from raysal.model.embeddings import to_float16

    _, keras = heads.tensorflow()
    n_classes = len(cfg.data.classes)
    seed_rows = typical_seed_set(cfg, pool, settings.seed_size, seed) if settings.seed_strategy == "typical" \
        else seed_set(len(pool.image_ids), settings.seed_size, seed)
    keras.utils.set_random_seed(seed)  # the round-0 model's init: the same whichever seed set
    model = models.build_model(cfg.model, n_classes)
    models.set_backbone_trainable(model, True)
    fit_model, loss, accuracy = models.training_view(model)  # model.heads > 1: each member its own loss
    fit_model.compile(optimizer=keras.optimizers.Adam(cfg.train.finetune_learning_rate), loss=loss,
                      metrics=[accuracy])
    fit_model.fit(pool.images[seed_rows], pool.labels[seed_rows], batch_size=cfg.train.batch_size,
                  epochs=settings.round0_epochs, shuffle=True, verbose=0)
    model_accuracy = float(fit_model.evaluate(test.images, test.labels, batch_size=256, verbose=0)[1])
    embed = models.embedding_model(model)
    pool_embeddings = to_float16(embed.predict(pool.images, batch_size=256, verbose=0))  # [n, d]
    test_embeddings = to_float16(embed.predict(test.images, batch_size=256, verbose=0))  # [m, d]
    members = max(STRATEGIES[name].heads(cfg) for name in settings.strategies)
    return {"seed_rows": seed_rows, "pool_embeddings": pool_embeddings, "test_embeddings": test_embeddings,
            "head_weights": heads.initial_weights(pool_embeddings.shape[1], n_classes, cfg.model.dropout, members,
                                                  seed)}, model_accuracy


def run_strategy(cfg: "Config", settings: Settings, pool: Split, test: Split, start: dict[str, Any], seed: int,
                 name: str) -> dict[str, Any]:
    """One (seed, strategy): every round trains the head, tests it, scores the unlabelled pool and
    selects the next budget with ``raysal.select``; returns the accuracy and balanced accuracy
    per round."""
    import pandas as pd

    from raysal.api import select
    from raysal.model.embeddings import EMBEDDING
    from raysal.model.heads import train_heads
    from raysal.model.sampling import bald_sampler
    from raysal.selection.criteria import SAMPLED, get_criterion

    started = time.perf_counter()
    spec = STRATEGIES[name]
    initial = start["head_weights"][:spec.heads(cfg)]  # the first: one head's, whatever the others train
    criterion = get_criterion(spec.criterion, seed)
    n_classes = len(cfg.data.classes)
    pool_embeddings = start["pool_embeddings"].astype(np.float32)  # [n, d], once: every round reads it
    test_embeddings = start["test_embeddings"].astype(np.float32)  # [m, d]
    labelled = np.zeros(len(pool.image_ids), bool)  # [n]
    labelled[start["seed_rows"]] = True
    accuracy, balanced, counts = [], [], []
    for round_number in range(settings.rounds + 1):
        head = train_heads(pool_embeddings[labelled], pool.labels[labelled], initial, settings.head_steps,
                           settings.head_learning_rate, cfg.model.dropout, seed)
        predicted = head.probs(test_embeddings).argmax(axis=1)  # [m]
        accuracy.append(float((predicted == test.labels).mean()))
        balanced.append(balanced_accuracy(predicted, test.labels))
        counts.append(int(labelled.sum()))
        if round_number == settings.rounds:
            break
        rows = np.flatnonzero(~labelled)  # the unlabelled pool, scored as a round rescores it
        probs = head.probs(pool_embeddings[rows])  # [u, c]
        scored = probs if spec.criterion not in SAMPLED else bald_sampler(  # bald: [T or K, u, c], as a round's
            head, cfg.model.dropout, cfg.select.mc_samples, seed, round_number + 1)(pool_embeddings[rows])
        scores = pd.DataFrame({"image_id": pool.image_ids[rows], "score": criterion(scored, pool.image_ids[rows]),
                               "predicted": probs.argmax(axis=1), "row": rows})
        if spec.strategy == "diversity":
            scores[EMBEDDING] = list(start["pool_embeddings"][rows])  # float16, as the score files hold them
        chosen = select(scores, settings.budget, strategy=spec.strategy, beta=cfg.select.beta, seed=seed,
                        round_number=round_number + 1, n_classes=n_classes, candidates=cfg.select.candidates)
        labelled[chosen["row"].to_numpy()] = True  # the oracle: the pool's own labels
    return {"seed": seed, "strategy": name, "labelled": counts, "accuracy": accuracy, "balanced_accuracy": balanced,
            "seconds": time.perf_counter() - started}


def long_tailed(cfg: "Config", settings: Settings, pool: Split) -> Split:
    """The pool subsampled long-tailed for ``settings.imbalance`` (``raysal.data.imbalance``, the
    classes ordered by the config's ``seed``), or as it is for 1; refused (``Refused``) when what
    is kept is too small for the seed set and the rounds' budgets."""
    if settings.imbalance == 1:
        return pool
    rows = long_tail_rows(pool.labels, len(cfg.data.classes), settings.imbalance, cfg.seed)
    wanted = settings.seed_size + settings.rounds * settings.budget
    if wanted > len(rows):
        raise Refused(f"--imbalance {settings.imbalance:g} keeps {len(rows)} of the pool's {len(pool.labels)} images, "
                      f"fewer than --seed-size + --rounds x --budget = {wanted} to label")
    return Split(pool.image_ids[rows], pool.images[rows], pool.labels[rows])


def check_pool_size(cfg: "Config", root: str, settings: Settings) -> None:
    """Refuse (``Refused``) settings that label more images than the pool has, before anything is
    decoded. Needs Ray (the pool's size comes from its source's metadata)."""
    from raysal.data import sources

    _, size = sources.read_source_with_size(cfg.data.pool, cfg.data.classes, root)
    wanted = settings.seed_size + settings.rounds * settings.budget
    if wanted > size:
        raise Refused(f"--seed-size + --rounds x --budget = {wanted} images to label, more than the pool's {size}")


def simulate(cfg: "Config", root: str, settings: Settings,
             progress: Callable[[dict[str, Any], int, int, float], None] | None = None) -> dict[str, Any]:
    """The whole simulation in the Ray session that is up: one task per seed makes the round-0
    model and the embeddings, then one task per (seed, strategy) runs all its rounds.

    Args:
        root: where the config's relative source paths point (``preflight.data_root``).
        progress: called as each (seed, strategy) finishes, with its result, how many have
            finished, how many there are, and the seconds since the start.

    Returns:
        the settings, the summary (``summarise``) and timings, as plain data for JSON.
    """
    import ray

    from raysal.model import keras_env
    from raysal.selection.criteria import SAMPLED

    sampled = [name for name in settings.strategies
               if STRATEGIES[name].criterion in SAMPLED and STRATEGIES[name].heads(cfg) == 1]
    if sampled and not cfg.model.dropout > 0:
        raise ConfigError(f"strategies: {sampled} sample the head's dropout, and model.dropout is "
                          f"{cfg.model.dropout}: set it > 0 (0.2 is the default)")
    started = time.perf_counter()
    pool, test = load_split(cfg, "pool", root), load_split(cfg, "test", root)
    available = len(pool.image_ids)
    pool = long_tailed(cfg, settings, pool)
    loaded = time.perf_counter() - started
    options = {"num_cpus": 1, "runtime_env": {"env_vars": keras_env.worker_env()}}
    pool_ref, test_ref = ray.put(pool), ray.put(test)
    seeds = [cfg.seed + i for i in range(settings.seeds)]
    starts = {seed: ray.remote(round_zero).options(num_returns=2, **options).remote(cfg, settings, pool_ref,
                                                                                  test_ref, seed) for seed in seeds}
    # Seed-major order: a seed's strategies start as soon as its round-0 task is done.
    pending = {ray.remote(run_strategy).options(**options).remote(cfg, settings, pool_ref, test_ref,
                                                                   starts[seed][0], seed, name): (seed, name)
               for seed in seeds for name in settings.strategies}
    results: dict[tuple[int, str], dict[str, Any]] = {}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        result = ray.get(done[0])
        results[pending.pop(done[0])] = result
        if progress is not None:
            progress(result, len(results), len(results) + len(pending), time.perf_counter() - started)
    model_accuracy = ray.get([starts[seed][1] for seed in seeds])
    labelled = results[seeds[0], settings.strategies[0]]["labelled"]  # what the rounds really labelled
    uneven = sorted({key for key, result in results.items() if result["labelled"] != labelled})
    if uneven:
        raise RuntimeError(f"the runs labelled different numbers of images: {uneven} against {labelled}")
    curves = {figure: {name: [results[seed, name][figure] for seed in seeds] for name in settings.strategies}
              for figure in ("accuracy", "balanced_accuracy")}  # figure -> strategy -> [seeds][r]
    summary = summarise(labelled, curves["accuracy"], settings.target, baseline="random")
    balanced = summarise(labelled, curves["balanced_accuracy"], settings.target, baseline="random")
    for name in settings.strategies:  # balanced_accuracy: the accuracy's fields, of the balanced accuracy
        summary["strategies"][name].update(criterion=STRATEGIES[name].criterion, strategy=STRATEGIES[name].strategy,
                                           balanced_accuracy=balanced["strategies"][name])
    return {
        "config": cfg.name, "fast_path": FAST_PATH, "settings": asdict(settings), "seeds": seeds,
        "select": {"beta": cfg.select.beta, "candidates": cfg.select.candidates},
        "pool_images": int(len(pool.image_ids)), "pool_images_available": available,
        "pool_per_class": dict(zip(cfg.data.classes, np.bincount(pool.labels, minlength=len(cfg.data.classes)).tolist(),
                                   strict=True)),
        "test_images": int(len(test.image_ids)), "labelled": labelled, "round0_model_accuracy": model_accuracy,
        **summary, "balanced_accuracy_target": balanced["target"],
        "seconds": {"total": round(time.perf_counter() - started, 1), "load": round(loaded, 1),
                    "task_seconds": round(math.fsum(r["seconds"] for r in results.values()), 1)},
    }

