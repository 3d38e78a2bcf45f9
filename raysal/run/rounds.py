"""One active-learning round as a sequence of committed stages: score, select, label, train, evaluate.

``run_round`` takes the state's lease, bootstraps the round-0 model if there is none, then runs
the current round from its first stage not yet committed: a round interrupted by a crash is
resumed, not restarted, and ends in the state an uninterrupted round would have reached. It
assumes Ray is initialised (``raysal.run.cluster.init_ray``).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import ray.data
from numpy.typing import NDArray

from raysal.selection import criteria
from raysal.model import embeddings
from raysal import faults
from raysal.labelling import labels as labels_lib
from raysal.run import lease as lease_lib
from raysal.labelling import labelstudio
from raysal.run import pipeline, preflight
from raysal.report import progress
from raysal.data import sources
from raysal.config import Config, SourceConfig, config_from_dict
from raysal.selection.diversity import k_center_greedy
from raysal.report.metrics import TEST_METRICS_FILE, accuracy_report, cohen_kappa
from raysal.report.plots import learning_curve_png
from raysal.run.state import STAGES, RunState, StateError
from raysal.errors import Incompatible, NothingToLabel  # noqa: F401  (raised here; importable from here too)

log = logging.getLogger(__name__)

DONE, WAITING = "done", "waiting for labels"
BATCHES_PER_BLOCK = 4  # scoring batches per block of a source read on the driver


@dataclass
class RoundOutcome:
    round: int
    status: str  # DONE or WAITING
    record: dict[str, Any] = field(default_factory=dict)  # round.json once done
    stage_seconds: dict[str, float] = field(default_factory=dict)
    message: str = ""


@contextmanager
def _stage(name: str, seconds: dict[str, float]) -> Iterator[None]:
    log.info("stage %s: started", name)
    start = time.perf_counter()
    yield
    seconds[name] = round(time.perf_counter() - start, 3)
    log.info("stage %s: done in %.1f s", name, seconds[name])


def _keep_labelled(batch: dict[str, NDArray], labels_ref: ray.ObjectRef) -> dict[str, NDArray]:
    """Rows whose id has a label, with that label (pool rows labelled in earlier rounds)."""
    ids, values = ray.get(labels_ref)  # sorted ids, their labels
    pos = np.clip(np.searchsorted(ids, batch["image_id"]), 0, max(len(ids) - 1, 0))
    keep = (ids[pos] == batch["image_id"]) if len(ids) else np.zeros(len(batch["image_id"]), bool)
    out = {name: column[keep] for name, column in batch.items()}
    out["label"] = values[pos[keep]]
    return out


@dataclass
class _Round:
    """What every stage of one round needs."""

    state: RunState
    cfg: Config
    number: int
    seconds: dict[str, float]
    board: Any = None  # a progress.Board that workers report to; None = no progress lines

    @property
    def key(self) -> str:
        return self.state.round_key(self.number)

    @property
    def data_root(self) -> str:
        return preflight.data_root(self.cfg, self.state.root)

    def source(self, source: SourceConfig) -> ray.data.Dataset:
        return self.sized_source(source)[0]

    def sized_source(self, source: SourceConfig) -> tuple[ray.data.Dataset, int]:
        """The source and its size. Blocks of a few model batches: the pool streams through
        decoding and scoring in pieces."""
        return sources.read_source_with_size(source, self.cfg.data.classes, self.data_root,
                                             block_rows=BATCHES_PER_BLOCK * self.cfg.score.batch_size)

    def model_uri(self, number: int) -> str:
        return self.state.uri(self.state.model_key(number))


# --- round 0 ---------------------------------------------------------------------------------

def _train(r: _Round, train_ds: ray.data.Dataset, max_rows: int, init_model: int | None,
           output_model: int) -> tuple[dict[str, Any], int]:
    """Train, publish the model; return the last epoch's metrics and the number of training images.

    ``max_rows`` bounds the images in ``train_ds`` (the rows of its sources): it decides whether the
    decoded set waits between epochs in Ray's object store or in a cache in the state (``trainset``).
    """
    from raysal.model import train, trainset  # TensorFlow and Ray Train load only when a model is trained

    val_ds = pipeline.decode(r.source(r.cfg.data.val), r.cfg).map_batches(pipeline.labelled_images,
                                                                            batch_format="numpy")
    test, test_size = r.sized_source(r.cfg.data.test)
    test_ds = None
    if test_size * r.cfg.model.input_size ** 2 * 3 <= r.cfg.train.in_memory_mb * 2**20:
        test_ds = pipeline.decode(test, r.cfg).map_batches(pipeline.labelled_images, batch_format="numpy")
        # Read by rank 0 as training ends: its progress bars would reach the driver after the round.
        test_ds.context.enable_progress_bars = False
        test_ds = test_ds.materialize()  # decoded now, beside the training set, not by rank 0 alone
        test_ds.context.enable_progress_bars = False
    cache_uri = r.state.uri(f"train/decoded-{output_model:04d}")  # beside Ray Train's own folders
    with trainset.prepare_train_set(train_ds, max_rows, r.cfg, cache_uri, guard=r.state.guard) as decoded, \
            tempfile.TemporaryDirectory(prefix="raysal-model-") as tmp, \
            progress.watch(r.board, "training") as board:
        train_size = decoded.count  # decoded once, not once per epoch, and counted as it was kept
        result = train.train_model(
            r.cfg, decoded.dataset, val_ds.materialize(),
            output_dir=os.path.join(tmp, "model"), storage_path=r.state.uri("train"),
            run_name=f"model-{output_model:04d}",
            init_uri=None if init_model is None else r.model_uri(init_model), board=board,
            label="bootstrap" if output_model == 0 else "train", train_size=train_size, test_ds=test_ds)
        r.state.publish_dir(result.model_dir, r.state.model_key(output_model))
        if result.test_metrics is not None:  # what test_accuracy would compute, computed by training
            r.state.write_json(f"{r.state.model_key(output_model)}/{TEST_METRICS_FILE}", result.test_metrics)
    return result.metrics, train_size


def _seed_images(r: _Round) -> tuple[ray.data.Dataset, int]:
    """The decoded, labelled seed set, and the rows of its source (a bound on its size)."""
    seed, size = r.sized_source(r.cfg.data.labelled)
    return pipeline.decode(seed, r.cfg).map_batches(pipeline.labelled_images, batch_format="numpy"), size


def bootstrap(r: _Round) -> None:
    """Round 0: train the first model on the labelled seed set, unless it exists."""
    if r.state.latest_model() is not None:
        return
    with _stage("bootstrap", r.seconds):  # its last epoch line gives the round-0 model's val accuracy
        seed, seed_size = _seed_images(r)
        _train(r, seed, seed_size, init_model=None, output_model=0)


# --- the stages ------------------------------------------------------------------------------

def stage_score(r: _Round, label_file: str | None) -> str:
    """Score the pool with the last round's model; or, when its backbone made the embeddings
    in an earlier round's score files (``embeddings.lookup``) and the pool still has the images it
    had then, rescore those with its head alone."""
    excluded = r.state.excluded_ids(before=r.number)
    scores_key = f"{r.key}/scores"
    r.state.delete_dir(scores_key)  # a partial write by a crashed run
    pool, pool_size = r.sized_source(r.cfg.data.pool)
    total = pool_size - len(excluded)  # every excluded id is a pool image
    model_key = r.state.model_key(r.number - 1)
    digest = embeddings.read_checkpoint_digest(r.state, model_key)
    done = {"model": r.number - 1, "excluded": int(len(excluded))}
    cached = _cached_embeddings(r, digest, total, len(excluded))
    if cached is not None:
        log.info("stage score: the backbone of model %d made the embeddings in %s: rescoring them with its head "
                 "alone (no image decoded)", r.number - 1, r.state.uri(cached["scores"]))
        with progress.watch(r.board, "rescoring from embeddings", total) as board:
            written = pipeline.rescore(r.state.uri(cached["scores"]), r.state.uri(scores_key),
                                       r.state.uri(model_key, embeddings.HEAD_FILE), excluded, r.cfg,
                                       pipeline.writes_embeddings(r.cfg, reusable=False), board)
        if written != total:  # the cached files lost rows since: never select from a partial pool
            raise StateError(f"round {r.number}: rescoring {r.state.uri(cached['scores'])} gave {written} rows, not "
                             f"the pool's {total}; remove {r.state.uri(embeddings.cache_key(digest))} and run again "
                             "to score the images in full")
        r.state.commit_stage(r.number, "score", {**done, "rescored_from": cached["scores"]})
        return DONE
    if len(excluded):
        pool = pool.map_batches(pipeline.drop_ids, fn_kwargs={"ids_ref": ray.put(excluded)}, batch_format="numpy")
    keep = pipeline.writes_embeddings(r.cfg, reusable=digest is not None)
    with progress.watch(r.board, "scoring", total) as board:
        pipeline.write_scores(pipeline.score(pipeline.decode(pool, r.cfg), r.model_uri(r.number - 1), r.cfg,
                                             board=board, embeddings=keep), r.state.uri(scores_key), total)
    if keep and digest is not None:
        embeddings.record(r.state, digest, scores_key, r.number, r.number - 1, total, len(excluded))
    r.state.commit_stage(r.number, "score", done)
    return DONE


def _cached_embeddings(r: _Round, digest: str | None, total: int, excluded: int) -> dict[str, Any] | None:
    """The cache entry to rescore from: for this backbone, from an earlier round, whose files
    have embeddings and whose pool had as many images as the pool has now (a pool that gained
    or lost images is scored in full)."""
    entry = embeddings.lookup(r.state, digest, r.number) if r.cfg.score.reuse_embeddings else None
    if entry is None or entry["rows"] - (excluded - entry["excluded"]) != total:
        return None
    return entry if embeddings.EMBEDDING in pipeline.score_columns(r.state.uri(entry["scores"])) else None


def stage_select(r: _Round, label_file: str | None) -> str:
    # The scores folder itself, read by plain tasks: no Ray Data job to start for it.
    s = r.cfg.select
    keys = criteria.SelectionKeys(s.strategy, s.beta, r.cfg.seed, r.number)
    per_class = len(r.cfg.data.classes) if s.strategy == "class_balanced" else 0
    diverse = s.strategy == "diversity"
    columns = ("image_id", "uri", "score", "predicted", *([embeddings.EMBEDDING] if diverse else []))
    result = pipeline.select_top_k(r.state.uri(f"{r.key}/scores"), s.budget * (s.candidates if diverse else 1),
                                   r.state.excluded_ids(before=r.number), columns=columns, sample=pipeline.STOP_SET,
                                   keys=keys if keys.perturbs else None, per_class=per_class)
    best, skipped, pool_size = result.rows, result.skipped, result.rows_read
    if diverse:  # the budget among the candidates, spread over their embeddings
        picks = k_center_greedy(best[embeddings.EMBEDDING], s.budget)
        best = {c: values[picks] for c, values in best.items()}
    left = pool_size - len(skipped["image_id"])
    if s.budget > left:
        log.warning("budget %d exceeds the %d images left to select: selected all of them", r.cfg.select.budget, left)
    if len(skipped["image_id"]):
        log.warning("%d pool images could not be scored and were skipped (e.g. %s: %s); the list with reasons is "
                    "%s", len(skipped["image_id"]), skipped["uri"][0], skipped["reason"][0],
                    r.state.uri(r.key, "skipped.parquet"))
    r.state.write_table(f"{r.key}/selection.parquet", pa.table({
        "image_id": pa.array(best["image_id"], pa.int64()), "uri": pa.array(best["uri"], pa.string()),
        "score": pa.array(best["score"], pa.float64()), "predicted": pa.array(best["predicted"], pa.int64()),
        "rank": pa.array(np.arange(1, len(best["image_id"]) + 1), pa.int64())}))
    faults.point("select:selection-written")
    r.state.write_table(f"{r.key}/skipped.parquet", pa.table({
        "image_id": pa.array(skipped["image_id"], pa.int64()), "uri": pa.array(skipped["uri"], pa.string()),
        "reason": pa.array(skipped["reason"], pa.string())}))
    stop_set = result.stop_set
    r.state.write_table(f"{r.key}/stop_set.parquet", pa.table({
        "image_id": pa.array(stop_set["image_id"], pa.int64()),
        "predicted": pa.array(stop_set["predicted"], pa.int64())}))
    r.state.commit_stage(r.number, "select", {
        "pool_size": int(pool_size), "skipped": int(len(skipped["image_id"])), "selected": int(len(best["image_id"])),
        "score_min": result.score_min, "score_max": result.score_max, **_agreement(r, stop_set)})
    return DONE


STOP_WINDOW = 3  # rounds whose kappas are averaged for the stop signal, as Bloodgood & Vijay-Shanker do
AGREEMENT_FIELDS = ("kappa", "kappa_images", "kappa_mean", "stop_kappa", "stop_labelling")  # _agreement's
MIN_KAPPA_IMAGES = 100  # fewer stop-set images in common give no kappa: too few to say anything


def _agreement(r: _Round, stop_set: dict[str, NDArray[np.int64]]) -> dict[str, Any]:
    """How much the model's predictions changed: Cohen's kappa between this round's scoring
    model and the previous round's, on the stop-set images both predicted (none in round 1,
    whose model is the first to score the pool), and whether to stop: the mean kappa of the
    last ``STOP_WINDOW`` rounds reaches ``select.stop_kappa``."""
    before = r.state.read_table(f"{r.state.round_key(r.number - 1)}/stop_set.parquet") if r.number > 1 else None
    kappa, common = None, 0
    if before is not None:
        _, now, then = np.intersect1d(stop_set["image_id"], before["image_id"].to_numpy(), assume_unique=True,
                                      return_indices=True)
        common = len(now)
        if common >= MIN_KAPPA_IMAGES:
            kappa = cohen_kappa(stop_set["predicted"][now], before["predicted"].to_numpy()[then])
    window = [(r.state.stage_done(n, "select") or {}).get("kappa") for n in range(r.number - STOP_WINDOW + 1, r.number)]
    window = [*window, kappa] if r.number >= STOP_WINDOW else [None]
    mean = float(np.mean(window)) if all(k is not None for k in window) else None
    threshold = r.cfg.select.stop_kappa
    return {"kappa": None if kappa is None else round(kappa, 6), "kappa_images": int(common),
            "kappa_mean": None if mean is None else round(mean, 6), "stop_kappa": threshold,
            "stop_labelling": bool(threshold and mean is not None and mean >= threshold)}


def agreement_lines(record: dict[str, Any]) -> list[str]:
    """What a round's summary (or its waiting message) says of the stopping signal."""
    if record.get("kappa") is None:
        return []
    n = record["round"]  # round n scored with model n - 1; round n - 1 with model n - 2
    lines = [f"  predictions on the pool: models {n - 2} and {n - 1} agree with kappa {record['kappa']:.4f} on "
             f"{record['kappa_images']:,} stop-set images"
             + (f" (mean of the last {STOP_WINDOW} rounds {record['kappa_mean']:.4f})"
                if record.get("kappa_mean") is not None else "")]
    if record.get("stop_labelling"):
        lines.append(f"  stop labelling: the mean kappa of the last {STOP_WINDOW} rounds, {record['kappa_mean']:.4f}, "
                     f"is >= select.stop_kappa {record['stop_kappa']:g}: the model's predictions have stabilised")
    return lines


def _selection(r: _Round) -> pa.Table:
    table = r.state.read_table(f"{r.key}/selection.parquet")
    if table is None:
        raise StateError(f"round {r.number}: selection.parquet is missing though the select stage is committed")
    return table


def stage_label(r: _Round, label_file: str | None) -> str:
    selection = _selection(r)
    selected = selection["image_id"].to_numpy()
    if r.cfg.label.mode == "oracle":
        # Read here, not in Ray tasks: two columns stream by and only the selected rows are kept
        # (a Ray Data job costs seconds to start for a hundred labels).
        found = r.state.read_table(f"{r.key}/scores", columns=["image_id", "label"],
                                   filters=pc.field("image_id").isin(pa.array(selected, pa.int64())))
        by_id = dict(zip(found["image_id"].to_pylist(), found["label"].to_pylist()))
        missing = [int(i) for i in selected if by_id.get(int(i)) is None or np.isnan(float(by_id[int(i)]))]
        if missing:
            raise StateError(f"round {r.number}: oracle labelling needs labels in the pool source, but "
                             f"{len(missing)} selected images have none (e.g. {missing[:5]}); "
                             "set label.mode = 'human' and import a label file")
        table = pa.table({"image_id": pa.array(selected, pa.int64()),
                          "label": pa.array([int(by_id[int(i)]) for i in selected], pa.int64())})
        source = "oracle"
    elif label_file is None:
        if not r.state.exists(f"{r.key}/to_label.csv"):
            _write_tasks(r, selection)
        return WAITING
    else:
        pool_ids = r.state.read_table(f"{r.key}/scores", columns=["image_id"])["image_id"].to_numpy()
        taken = labels_lib.validate_labels(labels_lib.read_label_file(label_file), selected, pool_ids,
                                           r.cfg.data.classes, r.number, r.cfg.label.min_labelled,
                                           r.cfg.label.multiple)
        table, source = taken.table, label_file
        if len(taken.unlabelled):
            log.info("round %d: %d of %d selected images labelled; %d without a label (skipped, missing or "
                     "tied%s) go back to the pool, e.g. %s", r.number, len(table), len(selected), len(taken.unlabelled),
                     f", {len(taken.ties)} with tied annotations" if len(taken.ties) else "",
                     taken.unlabelled[:5].tolist())
    r.state.write_table(f"{r.key}/labels.parquet", table)
    faults.point("label:labels-written")
    r.state.commit_stage(r.number, "label", {"labelled": int(len(table)), "source": source,
                                             "unlabelled": int(len(selected) - len(table))})
    return DONE


def _write_tasks(r: _Round, selection: pa.Table) -> None:
    """A waiting round's tasks: Label Studio's (``labelstudio.TASKS_FILE``, its labeling config),
    then ``to_label.csv``, written last: it marks the round as waiting."""
    found = r.state.read_table(f"{r.key}/scores", columns=["image_id", "top_probs"],
                               filters=pc.field("image_id").isin(selection["image_id"]))
    top = dict(zip(found["image_id"].to_pylist(), embeddings.column_matrix(found["top_probs"])[:, 0].tolist())
               ) if found.num_rows else {}
    selection = selection.append_column("probability", pa.array([top.get(i) for i in selection["image_id"].to_pylist()],
                                                                pa.float64()))
    label = r.cfg.label
    try:
        tasks = labelstudio.tasks(selection, r.cfg.data.classes, f"raysal {r.state.model_key(r.number - 1)}",
                                  label.files_root, label.presign_expiry_s)
    except ValueError as exc:  # an image Label Studio cannot show: the CSV still serves
        log.warning("round %d: no Label Studio tasks written: %s", r.number, exc)
    else:
        r.state.write_bytes(f"{r.key}/{labelstudio.TASKS_FILE}", json.dumps(tasks, indent=1).encode())
        r.state.write_bytes(f"{r.key}/{labelstudio.CONFIG_FILE}",
                            labelstudio.labeling_config(r.cfg.data.classes).encode())
    csv = "image_id,uri\n" + "".join(f"{i},{u}\n" for i, u in zip(selection["image_id"].to_pylist(),
                                                                   selection["uri"].to_pylist()))
    r.state.write_bytes(f"{r.key}/to_label.csv", csv.encode())


def stage_train(r: _Round, label_file: str | None) -> str:
    labelled = r.state.labels(up_to=r.number)
    order = np.argsort(labelled["image_id"].to_numpy())
    ids_and_labels = (labelled["image_id"].to_numpy()[order], labelled["label"].to_numpy()[order])
    pool_labelled = r.source(r.cfg.data.pool).map_batches(
        _keep_labelled, fn_kwargs={"labels_ref": ray.put(ids_and_labels)}, batch_format="numpy")
    seed, seed_size = _seed_images(r)
    train_ds = seed.union(pipeline.decode(pool_labelled, r.cfg).map_batches(
        pipeline.labelled_images, batch_format="numpy"))
    metrics, train_size = _train(r, train_ds, seed_size + len(order), init_model=r.number - 1,
                                 output_model=r.number)
    r.state.commit_stage(r.number, "train", {"model": r.number, "train_size": int(train_size),
                                             "metrics": metrics})
    return DONE


def test_accuracy(r: _Round, model: int) -> dict[str, Any]:
    """Accuracy of model ``model`` on the test split; computed once and kept with the model.

    Training computes it for the model it trains when the decoded test split fits in
    ``train.in_memory_mb``: rank 0 holds the model already, and the evaluate stage then has no
    actor pool to start. A larger test split is scored here by the actor pool.
    """
    key = f"{r.state.model_key(model)}/{TEST_METRICS_FILE}"
    cached = r.state.read_json(key)
    if cached is not None:
        return cached
    test, size = r.sized_source(r.cfg.data.test)
    with progress.watch(r.board, f"testing model {model}", size) as board:
        rows = pipeline.score(pipeline.decode(test, r.cfg), r.model_uri(model), r.cfg, board=board) \
            .select_columns(["predicted", "label", "error"]).to_pandas()
    rows = rows[(rows["error"] == "") & rows["label"].notna()]
    report = accuracy_report(rows["predicted"].to_numpy(), rows["label"].to_numpy(), r.cfg.data.classes)
    r.state.write_json(key, report)
    return report


def stage_evaluate(r: _Round, label_file: str | None) -> str:
    selection = _selection(r).to_pandas()
    labelled = r.state.read_table(f"{r.key}/labels.parquet").to_pandas()
    joined = selection.merge(labelled, on="image_id")
    on_selection = accuracy_report(joined["predicted"].to_numpy(), joined["label"].to_numpy(), r.cfg.data.classes)
    before = test_accuracy(r, r.number - 1)
    faults.point("evaluate:first-model-evaluated")
    after = test_accuracy(r, r.number)
    metrics = {"test_before": before, "test_after": after, "selection_before": on_selection}
    r.state.write_json(f"{r.key}/metrics.json", metrics)
    r.state.commit_stage(r.number, "evaluate", {"test_accuracy_before": before["accuracy"],
                                                "test_accuracy_after": after["accuracy"],
                                                "test_per_class_after": after["per_class"],
                                                "selection_accuracy_before": on_selection["accuracy"]})
    return DONE


STAGE_FUNCTIONS = {"score": stage_score, "select": stage_select, "label": stage_label, "train": stage_train,
                   "evaluate": stage_evaluate}
assert tuple(STAGE_FUNCTIONS) == STAGES


# --- the round -------------------------------------------------------------------------------

RUN_IDENTITY = ("classes", "pool", "model")


def _identity(cfg: Config) -> dict[str, Any]:
    """What must stay the same for every round of a run."""
    data = cfg.to_dict()
    return {"classes": data["data"]["classes"], "pool": data["data"]["pool"],
            "model": {"kind": cfg.model.kind, "input_size": cfg.model.input_size,
                      # a classifier's head is its own last layer: the model's shape changes with `use`
                      **({"use": cfg.model.use} if cfg.model.use != "backbone" else {})}}


def check_compatible(state: RunState, cfg: Config) -> bool:
    """Refuse a config whose pool, classes or model shape differ from the run's; reads only.

    Returns whether the run is new (no ``run.json`` yet).
    """
    stored = state.read_json("run.json")
    if stored is None:
        return True
    mine = _identity(cfg)
    changed = [k for k in RUN_IDENTITY if stored.get(k) != mine[k]]
    if changed:
        details = "; ".join(f"{k}: run has {stored.get(k)}, config has {mine[k]}" for k in changed)
        raise Incompatible(f"config changes what a run cannot change ({details}). Keep the run's config, "
                           f"or start a new run with another --state")
    return False


def check_label_import(state: RunState, number: int) -> None:
    """Refuse ``--import-labels`` unless round ``number`` has a selection that waits for labels."""
    if state.stage_done(number, "select") is None or state.stage_done(number, "label") is not None:
        raise NothingToLabel(f"--import-labels: round {number} has no selection waiting for labels, so there is "
                             "nothing to import into; run the round without --import-labels first, and import "
                             "once it says it is waiting for labels")


def current_round(state: RunState) -> int:
    """The round to work on: an unfinished one, else the next."""
    rounds = state.rounds()
    unfinished = [n for n in rounds if state.round_record(n) is None and state.exists(f"{state.round_key(n)}/config.json")]
    if unfinished:
        return unfinished[0]
    return (rounds[-1] + 1) if rounds else 1


def history(state: RunState) -> list[dict[str, Any]]:
    out = []
    for number in state.rounds():
        record = state.round_record(number)
        if record:
            out.append({k: record[k] for k in ("round", "selected", "labelled_total", "test_accuracy_before",
                                               "test_accuracy_after", "selection_accuracy_before")})
    return out


def _redraw(state: RunState, cfg: Config) -> None:
    rows = history(state)
    state.write_json("history.json", rows)
    if rows:
        xs = [rows[0]["labelled_total"] - rows[0]["selected"]] + [h["labelled_total"] for h in rows]
        ys = [rows[0]["test_accuracy_before"]] + [h["test_accuracy_after"] for h in rows]
        state.write_bytes("learning_curve.png", learning_curve_png(xs, ys, f"raysal: {cfg.name}"))


def check_startable(cfg: Config, state_root: str, label_file: str | None = None, break_lock: bool = False) -> None:
    """What refuses a round before anything runs, read-only: an incompatible config
    (``Incompatible``), a label file that is malformed or for a round that waits for none
    (``LabelFileError``, ``NothingToLabel``), a live lease of another round (``Locked``)."""
    state = RunState(state_root)
    check_compatible(state, cfg)
    if label_file is not None:
        labels_lib.read_label_file(label_file)
        check_label_import(state, current_round(state))
    if not break_lock:
        lease_lib.Lease(state).observe()  # raises Locked while another round's lease is live


def run_round(cfg: Config, state_root: str, label_file: str | None = None, break_lock: bool = False,
              lease_ttl: float = lease_lib.DEFAULT_TTL_S, show_progress: bool = True) -> RoundOutcome:
    """Run (or resume) one round to the end, or until it waits for human labels.

    Everything that can refuse the round (an incompatible config, labels for a round that waits
    for none, a live lease) is decided before the state is changed. The lease is renewed while
    the round runs, and every change first checks that it is still held. Needs Ray
    (``raysal.run.cluster.init_ray``).

    Args:
        label_file: human labels for the round that waits for them (CSV or Parquet, or a Label
            Studio export: ``labels.read_label_file``).
        break_lock: take the run's lease over now, even from a live round.
        lease_ttl: seconds the lease lasts unless renewed; a dead driver's round is taken
            over after this.
        show_progress: log scoring progress and training epochs (logger ``raysal``).
    """
    check_startable(cfg, state_root, label_file, break_lock)
    state = RunState(state_root)
    seconds: dict[str, float] = {}
    with lease_lib.hold(state, ttl=lease_ttl, break_lease=break_lock) as lease:
        state.guard = lease.check
        board = progress.new_board() if show_progress else None
        try:
            return _run_held(state, cfg, label_file, seconds, board)
        finally:
            state.guard = None
            if board is not None:
                ray.kill(board)


def _run_held(state: RunState, cfg: Config, label_file: str | None, seconds: dict[str, float],
              board: Any) -> RoundOutcome:
    if check_compatible(state, cfg):  # again, now that no other round can write run.json
        state.write_json("run.json", _identity(cfg))
    number = current_round(state)
    if label_file is not None:
        check_label_import(state, number)
    stored = state.read_json(f"{state.round_key(number)}/config.json")
    if stored is None:
        state.write_json(f"{state.round_key(number)}/config.json", cfg.to_dict())
    else:
        cfg = config_from_dict(stored)  # a resumed round finishes with the config it started with
        log.info("round %d: resuming at stage %s", number, state.next_stage(number))
    r = _Round(state, cfg, number, seconds, board)
    if state.latest_model() is None or (state.stage_done(number, "train") is None and (
            cfg.label.mode == "oracle" or label_file is not None or state.stage_done(number, "label"))):
        _import_in_background("raysal.model.train")
    bootstrap(_Round(state, cfg, 0, seconds, board))
    while (stage := state.next_stage(number)) is not None:
        with _stage(stage, seconds):
            status = STAGE_FUNCTIONS[stage](r, label_file)
        faults.point(f"{stage}:ended")
        if status == WAITING:
            return RoundOutcome(number, WAITING, stage_seconds=seconds, message=(
                f"round {number} is waiting for labels: label the images in {state.uri(r.key, 'to_label.csv')}"
                + (f", or in Label Studio: raysal labelstudio push --state {state.root} --url URL (or import "
                   f"{state.uri(r.key, labelstudio.TASKS_FILE)} into a project made with the labeling_config.xml "
                   "beside it)" if state.exists(f"{r.key}/{labelstudio.TASKS_FILE}") else "")
                + "; then run again with --import-labels FILE (CSV or Parquet with image_id,label, or Label "
                "Studio's JSON, JSON-MIN or CSV export)"
                + "".join(f"\n{line}" for line in agreement_lines({**state.stage_done(number, "select"),
                                                                  "round": number}))))
    record = _finish(r)
    _redraw(state, cfg)
    return RoundOutcome(number, DONE, record=record, stage_seconds=seconds)


def _import_in_background(module: str) -> None:
    """Start importing ``module`` now, in a thread, for a stage that will need it.

    Training needs TensorFlow and Ray Train on the driver, an import of 5-8 s on 2 cores; while
    the stages before it run, the driver mostly waits for Ray, so the import costs the round
    nothing. The stage's own import waits for this one to finish (Python's import lock).
    """
    threading.Thread(target=importlib.import_module, args=(module,), name=f"raysal-import-{module}",
                     daemon=True).start()


def _finish(r: _Round) -> dict[str, Any]:
    st = r.state
    select, evaluate = st.stage_done(r.number, "select"), st.stage_done(r.number, "evaluate")
    record = {
        "round": r.number, "criterion": r.cfg.select.criterion, "budget": r.cfg.select.budget,
        "strategy": r.cfg.select.strategy, "beta": r.cfg.select.beta, "candidates": r.cfg.select.candidates,
        "rescored_from": (st.stage_done(r.number, "score") or {}).get("rescored_from"),
        "unlabelled": (st.stage_done(r.number, "label") or {}).get("unlabelled", 0),
        "selected": select["selected"], "pool_size": select["pool_size"], "skipped": select["skipped"],
        "score_min": select["score_min"], "score_max": select["score_max"],
        "labelled_total": st.stage_done(r.number, "train")["train_size"],  # seed set + every label so far
        "model_before": st.model_key(r.number - 1), "model_after": st.model_key(r.number),
        **{k: evaluate[k] for k in ("test_accuracy_before", "test_accuracy_after", "selection_accuracy_before")},
        "test_per_class_after": evaluate.get("test_per_class_after"),
        # the scoring models of this round and the last, on the stop set: r - 2 and r - 1
        **{k: select.get(k) for k in AGREEMENT_FIELDS},
        "selection": st.uri(r.key, "selection.parquet"), "skipped_report": st.uri(r.key, "skipped.parquet"),
        "metrics": st.uri(r.key, "metrics.json"), "learning_curve": st.uri("learning_curve.png"),
        "stage_seconds": dict(r.seconds),  # this run's stages only, when the round was resumed
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    st.write_json(f"{r.key}/round.json", record)
    return record


def round_state(state: RunState, number: int) -> str:
    """``done``, ``waiting for labels``, ``incomplete: next stage X`` or ``not started``."""
    if state.round_record(number):
        return DONE
    if not state.exists(f"{state.round_key(number)}/config.json"):
        return "not started"
    next_stage = state.next_stage(number)
    if next_stage == "label" and state.exists(f"{state.round_key(number)}/to_label.csv"):
        return WAITING
    return f"incomplete: next stage {next_stage}"


def status(state_root: str) -> dict[str, Any]:
    """The state as plain data, for ``--status --json``."""
    state = RunState(state_root)
    rounds = []
    for number in state.rounds():
        record = state.round_record(number)
        if record:
            rounds.append({**record, "state": DONE})
            continue
        select = state.stage_done(number, "select") or {}
        rounds.append({"round": number, "selected": select.get("selected"),
                       "selection": state.uri(state.round_key(number), "selection.parquet") if select else None,
                       "state": round_state(state, number),
                       **{k: select.get(k) for k in AGREEMENT_FIELDS}})
    latest = state.latest_model()
    return {"state": state.root, "rounds": rounds, "leased_by": lease_lib.current(state),
            "latest_model": None if latest is None else state.uri(state.model_key(latest)),
            "history": state.uri("history.json"), "learning_curve": state.uri("learning_curve.png")}


def _strategy(record: dict[str, Any]) -> str:
    strategy = record.get("strategy", "top_k")
    if strategy == "class_balanced":
        return " (class-balanced: a quota per predicted class)"
    if strategy == "diversity":
        return f" (diversity: k-center greedy over the {record['candidates']} x budget most uncertain)"
    return "" if strategy == "top_k" else f" ({strategy} sampling, beta {record['beta']:g})"


def format_outcome(outcome: RoundOutcome, log_path: str | None = None) -> str:
    """The human summary printed at the end of a round."""
    if outcome.status == WAITING:
        return outcome.message + (f"\n  log: {log_path}" if log_path else "")
    rec = outcome.record
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    stages = ", ".join(f"{name} {sec:.0f} s" for name, sec in outcome.stage_seconds.items())
    per_class = rec.get("test_per_class_after") or {}
    lines = [
        f"round {rec['round']}: selected {rec['selected']} of {rec['pool_size']} pool images "
        f"({rec['skipped']} skipped) by {rec['criterion']}{_strategy(rec)}, {rec['labelled_total']} labelled in all",
        f"  test accuracy: {fmt(rec['test_accuracy_before'])} before retraining, "
        f"{fmt(rec['test_accuracy_after'])} after; on the selected images before retraining "
        f"{fmt(rec['selection_accuracy_before'])}",
    ]
    if per_class:
        lines.append("  test accuracy per class: " + ", ".join(
            f"{name} {'n/a' if acc is None else f'{acc:.2f}'}" for name, acc in per_class.items()))
    if rec.get("unlabelled"):
        lines.append(f"  {rec['unlabelled']} selected images got no label (skipped, missing or tied): back to the "
                     "pool for later rounds")
    if rec.get("rescored_from"):
        lines.append(f"  scored by model {rec['round'] - 1}'s head alone, from the embeddings in "
                     f"{rec['rescored_from']} (its backbone made them: no image decoded)")
    lines += agreement_lines(rec)
    if not stages:
        lines.append("  (resumed after its last stage had committed: only its record was written now)")
    lines += [f"  selection:      {rec['selection']}",
              f"  metrics:        {rec.get('metrics', 'n/a')}",
              f"  learning curve: {rec.get('learning_curve', 'n/a')}"]
    if log_path:
        lines.append(f"  log:            {log_path}")
    return "\n".join(lines)
