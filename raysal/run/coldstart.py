"""A cold start: round 0 of a run that has a pool and no labels.

A run whose ``data.labelled``, ``data.val`` and ``data.test`` are of kind ``seed``
(``raysal prepare --pool FOLDER --classes a,b,c``) has no model to score with. Its round 0 is
a round of its own, in ``rounds/0000``, whose stages commit as every round's do:

- **score**: every pool image's features (``raysal.model.features``): the embedding of a
  pretrained backbone, else its pixels downsampled, for a model trained from scratch;
- **select**: ``select.seed_budget`` images by ``select.seed_strategy``: ``typical``, the most
  typical image of each of seed_budget clusters of the features after PCA (TypiClust, Hacohen
  et al. 2022; ``raysal.run.seeding``, on Ray), or ``random``, a seeded sample;
- **label**: as any round's (``stages.label``): from the pool's labels (oracle), or from a file
  people made, for which the round waits (exit 5);
- **train**: no model yet: the labels are split by class into the seed set, val and test
  (``split_seed``), written as ``seed_split.parquet``; then ``round.json``.

From then on the ``seed`` splits are those images, read from the pool (``seed_source``), and
round 1 trains the round-0 model on the seed set as any run's does. Every image round 0 labels,
val and test ones too, is out of the pool for good (``RunState.excluded_ids``).
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import ray.data
from numpy.typing import NDArray

from raysal import faults
from raysal.config import Config
from raysal.data import sources
from raysal.data.decode import decode
from raysal.data.splits import SPLIT_NAMES, assign_splits, split_counts
from raysal.errors import LabelFileError, StateError
from raysal.labelling import labels as labels_lib
from raysal.model import features, keras_env
from raysal.model.embeddings import EMBEDDING
from raysal.report import progress
from raysal.run import resources, scoring
from raysal.run.context import DONE, WAITING, Round, timed_stage
from raysal.run.stages.label import stage_label, write_tasks
from raysal.run.state import RunState

log = logging.getLogger(__name__)

ROUND = 0
SEED_SHARES = {"test": 0.2, "val": 0.1}  # as raysal prepare's defaults; the seed set takes the rest
SEED_SPLITS = ("labelled", "val", "test")


def pending(state: RunState, cfg: Config) -> bool:
    """Whether the run is a cold start whose round 0 is not done."""
    return cfg.data.cold_start and state.round_record(ROUND) is None


# --- the stages --------------------------------------------------------------------------------

def stage_features(r: Round, label_file: str | None) -> str:
    """Round 0's score stage: every pool image's features, as the ``embedding`` column of its
    score files (``features.FEATURE_COLUMNS``)."""
    cfg = r.cfg
    scores_key = r.files.scores
    r.state.delete_dir(scores_key)  # a partial write by a crashed run
    pool, size = r.sized_source(cfg.data.pool)
    decoded = decode(pool, cfg)
    kind = "the backbone's embeddings" if cfg.model.pretrained else \
        f"pixels downsampled to {features.PIXEL_SIDE}x{features.PIXEL_SIDE} (model.kind {cfg.model.kind} is trained " \
        "from scratch: no features before it is trained)"
    log.info("round 0 (cold start): the features of %d pool images: %s", size, kind)
    with progress.watch(r.board, "cold start: features", size) as board:
        if cfg.model.pretrained:
            s = cfg.score
            resources.wait_for("score", resources.stage_asks(cfg, "score"), s.resource_timeout_s,
                               "score.resource_timeout_s")
            rows = decoded.map_batches(
                features.BackboneFeatures,
                fn_constructor_kwargs={"model": cfg.to_dict()["model"], "num_classes": len(cfg.data.classes),
                                       "batch_size": s.batch_size, "board": board},
                batch_size=s.batch_size, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(min_size=s.min_actors, max_size=s.max_actors),
                num_cpus=s.cpus_per_actor, num_gpus=s.gpus_per_actor or None,
                runtime_env={"env_vars": keras_env.worker_env()})
        else:
            rows = decoded.map_batches(features.pixel_rows, fn_kwargs={"board": board}, batch_format="numpy")
        scoring.write_scores(rows, r.state.uri(scores_key), size)
    r.state.commit_stage(ROUND, "score", {"model": None, "excluded": 0,
                                         "features": "backbone" if cfg.model.pretrained else "pixels"})
    return DONE


def stage_seed_select(r: Round, label_file: str | None) -> str:
    """Round 0's select stage: ``select.seed_budget`` of the pool images that have features."""
    from raysal.run import seeding

    s = r.cfg.select
    table = r.state.read_table(r.files.scores, columns=["image_id", "uri", "error"])
    if table is None:
        raise StateError(f"round 0: {r.state.uri(r.files.scores)} is missing though its score stage is committed")
    ok = pc.equal(table["error"].fill_null(""), "")
    usable, skipped = table.filter(ok), table.filter(pc.invert(ok))
    budget = min(s.seed_budget, usable.num_rows)
    if budget < s.seed_budget:
        log.warning("select.seed_budget %d exceeds the %d pool images that could be read: selected all of them",
                    s.seed_budget, usable.num_rows)
    if s.seed_strategy == "random":
        ids = np.sort(usable["image_id"].to_numpy())
        chosen = np.random.default_rng(r.cfg.seed).choice(ids, budget, replace=False) if budget else ids[:0]
    else:
        rows = seeding.usable_features(ray.data.read_parquet(r.state.uri(r.files.scores)).select_columns(
            ["image_id", "error", EMBEDDING]))  # pushed down into the read
        pca = seeding.pca_fit(rows)
        log.info("round 0 (cold start): features reduced by PCA from %d to %d dimensions", len(pca.mean),
                 len(pca.components))
        chosen = seeding.typical_ids(seeding.project(rows, pca), budget, r.cfg.seed)
    chosen = np.asarray(chosen, np.int64)
    uris = dict(zip(usable["image_id"].to_pylist(), usable["uri"].to_pylist(), strict=True))
    selection = pa.table({"image_id": pa.array(chosen, pa.int64()),
                          "uri": pa.array([uris[int(i)] for i in chosen], pa.string()),
                          "score": pa.array(np.full(len(chosen), np.nan), pa.float64()),  # no model scored them
                          "predicted": pa.nulls(len(chosen), pa.int64()),
                          "rank": pa.array(np.arange(1, len(chosen) + 1), pa.int64())})
    r.state.write_table(r.files.selection, selection)
    faults.point("select:selection-written")
    r.state.write_table(r.files.skipped, pa.table({
        "image_id": skipped["image_id"], "uri": skipped["uri"], "reason": skipped["error"]}))
    if skipped.num_rows:
        log.warning("%d pool images could not be read and were skipped (e.g. %s: %s); the list with reasons is %s",
                    skipped.num_rows, skipped["uri"][0], skipped["error"][0], r.state.uri(r.files.skipped))
    if r.cfg.label.mode != "oracle":
        write_tasks(r, selection)
    r.state.commit_stage(ROUND, "select", {
        "pool_size": int(table.num_rows), "skipped": int(skipped.num_rows), "selected": int(len(chosen)),
        "score_min": None, "score_max": None, "seed_strategy": s.seed_strategy})
    return DONE


def split_seed(labels: NDArray[np.int64], classes: tuple[str, ...], seed: int) -> tuple[NDArray[np.object_], list[str]]:
    """The split of each labelled image (``labels`` ``[n]`` class indices, in image_id order) and
    what to tell the user.

    A class with at least 3 images is in each of the seed set, val and test, in proportion
    (``SEED_SHARES``, at least one of each class: ``splits.split_counts``); one with 1 or 2 is in
    the seed set alone (the model learns it; val and test cannot measure it yet); one with none
    is named. Seeded, per class, as ``raysal prepare`` splits.

    Raises:
        LabelFileError: fewer than 2 classes labelled: no model can be trained on them.
    """
    counts = np.bincount(labels, minlength=len(classes))  # [k]
    if int((counts > 0).sum()) < 2:
        named = [classes[c] for c in np.flatnonzero(counts)]
        raise LabelFileError(f"round 0's labels name {len(named)} class{'' if len(named) == 1 else 'es'} "
                             f"({', '.join(named) or 'none'}) of {len(classes)}: a model needs at least 2 to tell "
                             "apart. Label the selected images with their classes and import the file again")
    split = np.full(len(labels), "labelled", dtype=object)
    full = np.flatnonzero(counts >= len(SEED_SPLITS))  # [k'] the classes in every split
    notes = []
    if len(full):
        n = int(counts[full].sum())
        sizes = {name: max(math.floor(share * n + 0.5), len(full)) for name, share in SEED_SHARES.items()}
        per_class = split_counts(counts[full], [classes[c] for c in full], sizes, rest="labelled")
        among = np.isin(labels, full)  # [n] images of those classes
        split[among] = assign_splits(np.searchsorted(full, labels[among]), per_class, np.random.default_rng(seed))
    few = [f"{classes[c]} ({counts[c]})" for c in np.flatnonzero((counts > 0) & (counts < len(SEED_SPLITS)))]
    if few:
        notes.append(f"classes with fewer than 3 labelled images are in the seed set alone, not in val or test "
                     f"(their accuracy is not measured): {', '.join(few)}")
    missing = [classes[c] for c in np.flatnonzero(counts == 0)]
    if missing:
        notes.append(f"no image of {', '.join(missing)} was labelled: the model cannot predict "
                     f"{'it' if len(missing) == 1 else 'them'} until a round selects some")
    return split, notes


def check_seed_labels(r: Round, label_file: str) -> None:
    """Refuse (``LabelFileError``, exit 2) a label file for round 0 that the label stage would
    refuse, or whose labels could not train a model (``split_seed``), before anything is written."""
    selected = r.state.read_table(r.files.selection, columns=["image_id"])["image_id"].to_numpy()
    pool_ids = r.state.read_table(r.files.scores, columns=["image_id"])["image_id"].to_numpy()
    taken = labels_lib.validate_labels(labels_lib.read_label_file(label_file), selected, pool_ids,
                                       r.cfg.data.classes, ROUND, r.cfg.label.min_labelled, r.cfg.label.multiple)
    split_seed(taken.table["label"].to_numpy().astype(np.int64), r.cfg.data.classes, r.cfg.seed)


def stage_split(r: Round, label_file: str | None) -> str:
    """Round 0's train stage: no model to train yet; its labels split into the seed set, val and test."""
    labels = r.state.read_table(r.files.labels)
    if labels is None:
        raise StateError(f"round 0: {r.state.uri(r.files.labels)} is missing though its label stage is committed")
    labels = labels.sort_by("image_id")
    split, notes = split_seed(labels["label"].to_numpy().astype(np.int64), r.cfg.data.classes, r.cfg.seed)
    r.state.write_table(r.files.seed_split, labels.select(["image_id", "label"]).append_column(
        "split", pa.array(split.tolist(), pa.string())))
    counts = {name: int((split == name).sum()) for name in SEED_SPLITS}
    for note in notes:
        log.warning("round 0: %s", note)
    r.state.commit_stage(ROUND, "train", {"split": counts, "notes": notes})
    return DONE


STAGES = {"score": stage_features, "select": stage_seed_select, "label": stage_label, "train": stage_split}
NAMES = {"score": "features", "select": "select", "label": "label", "train": "split"}  # what the log calls them


def run_round_zero(r: Round, label_file: str | None) -> str:
    """Round 0 of a cold start, from its first stage not committed; DONE once its labels are
    split (``round.json`` written), or WAITING for people's labels."""
    for stage, function in STAGES.items():
        if r.state.stage_done(ROUND, stage):
            continue
        if stage == "label" and label_file is not None:
            check_seed_labels(r, label_file)  # refused before the labels are committed: nothing is lost
        with timed_stage(NAMES[stage], r.seconds):
            status = function(r, label_file)
        faults.point(f"{stage}:ended")
        if status == WAITING:
            return WAITING
    r.state.write_json(r.files.record, record(r))
    return DONE


def record(r: Round) -> dict[str, Any]:
    """Round 0's ``round.json``: what it selected and how its labels were split."""
    st = r.state
    select, label, split = (st.stage_done(ROUND, s) or {} for s in ("select", "label", "train"))
    return {"round": ROUND, "cold_start": True, "seed_strategy": select.get("seed_strategy"),
            "features": (st.stage_done(ROUND, "score") or {}).get("features"),
            "selected": select.get("selected"), "pool_size": select.get("pool_size"),
            "skipped": select.get("skipped"), "labelled": label.get("labelled"),
            "unlabelled": label.get("unlabelled", 0), "split": split.get("split"), "notes": split.get("notes", []),
            "selection": st.uri(r.files.selection), "seed_split": st.uri(r.files.seed_split),
            "stage_seconds": dict(r.seconds),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def summary(rec: dict[str, Any]) -> str:
    """What the console says once round 0 is done."""
    split = rec.get("split") or {}
    lines = [f"round 0 (cold start): selected {rec['selected']} of {rec['pool_size']} pool images "
             f"({rec['seed_strategy']}, over {rec['features']}), {rec['labelled']} labelled: "
             + ", ".join(f"{split.get(name, 0)} in {SPLIT_NAMES[name]}" for name in SEED_SPLITS)]
    lines += [f"  note: {note}" for note in rec.get("notes") or []]
    return "\n".join(lines)


# --- the seed splits, as sources ---------------------------------------------------------------

def _take(batch: dict[str, NDArray], ids: NDArray[np.int64], labels: NDArray[np.int64]) -> dict[str, NDArray]:
    """The batch's rows whose ids are in ``ids`` (sorted), labelled with ``labels``."""
    at = np.minimum(np.searchsorted(ids, batch["image_id"]), max(len(ids) - 1, 0))
    keep = (ids[at] == batch["image_id"]) if len(ids) else np.zeros(len(batch["image_id"]), bool)
    out = {name: column[keep] for name, column in batch.items()}
    out["label"] = labels[at[keep]]
    return out


def seed_source(state: RunState, cfg: Config, split: str, root: str, block_rows: int) -> tuple[ray.data.Dataset, int]:
    """A cold start's seed split (``labelled``, ``val`` or ``test``): its images read from the
    pool with the labels round 0 imported, and how many they are."""
    table = state.read_table(state.files(ROUND).seed_split)
    if table is None:
        raise StateError(f"data.{split} is of kind 'seed', but round 0 of this cold start has not split its labels "
                         f"yet ({state.uri(state.files(ROUND).seed_split)} is missing): run the round again")
    rows = table.filter(pc.equal(table["split"], split)).sort_by("image_id")
    ids, labels = rows["image_id"].to_numpy().astype(np.int64), rows["label"].to_numpy().astype(np.int64)
    pool = sources.read_source_with_size(cfg.data.pool, cfg.data.classes, root, block_rows=block_rows)[0]
    return pool.map_batches(_take, fn_kwargs={"ids": ids, "labels": labels}, batch_format="numpy"), len(ids)
