"""The Ray Data pipeline of a round: decode, score with an actor pool, select exactly.

Lazy dataset in, lazy dataset out; the caller decides when to write or materialise. Decoding
runs in CPU tasks, scoring in an actor pool that loads the model once per actor, and selection
keeps each block's best k before a bounded merge on the driver: no global sort.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
import ray.data
import ray.experimental
from numpy.typing import NDArray
from ray.data.dataset import MaterializedDataset
from ray.data.extensions import ArrowTensorArray

from raysal.model import keras_env
from raysal import storage
from raysal.config import Config
from raysal.model.embeddings import EMBEDDING, DenseHead, column_matrix, to_float16
from raysal.hashing import id_keys
from raysal.data.images import UndecodableImage, decode_image
from raysal.selection.topk import candidate_rows, class_balanced_indices, is_in_sorted, top_k_indices, top_k_unordered

log = logging.getLogger(__name__)

NON_FINITE = "model output is not finite (NaN or inf)"
SCORE_COLUMNS = ("image_id", "uri", "label", "score", "predicted", "top_classes", "top_probs", "error")


def _decode_one(data: bytes | None, uri: str, size: int) -> tuple[NDArray[np.uint8] | None, str]:
    try:
        return decode_image(data if data is not None else storage.read_bytes(uri), size), ""
    except UndecodableImage as exc:
        return None, str(exc)
    except (OSError, ValueError, NotImplementedError) as exc:  # missing file, permission, network, a uri no
        return None, f"unreadable: {exc}"  # filesystem takes (ArrowInvalid): the image is unreadable, not the job


def decode_batch(batch: dict[str, NDArray], size: int, threads: int = 1) -> dict[str, NDArray]:
    """Read and decode each image; a failure becomes a non-empty ``error`` and a blank image.

    Rows are never dropped here, so every image ends up either scored or in the skipped report.
    libjpeg-turbo and OpenCV release the GIL, so ``threads`` > 1 decodes large images on more
    cores; thread t takes rows t, t + threads, ...
    """
    n = len(batch["image_id"])
    images = np.zeros((n, size, size, 3), dtype=np.uint8)  # [n, s, s, 3]
    errors = np.full(n, "", dtype=object)
    inline, uris = batch.get("image_bytes"), batch["uri"]

    def decode_rows(rows: range) -> None:
        for i in rows:
            image, errors[i] = _decode_one(inline[i] if inline is not None else None, uris[i], size)
            if image is not None:
                images[i] = image

    shares = [range(start, n, threads) for start in range(min(threads, n))]
    if len(shares) <= 1:
        decode_rows(range(n))
    else:
        with ThreadPoolExecutor(max_workers=len(shares)) as pool:
            list(pool.map(decode_rows, shares))  # list(): re-raise any error from a thread
    return {"image_id": batch["image_id"], "uri": batch["uri"], "label": batch["label"],
            "image": images, "error": errors}


def decode(ds: ray.data.Dataset, cfg: Config) -> ray.data.Dataset:
    return ds.map_batches(decode_batch, fn_kwargs={"size": cfg.model.input_size, "threads": cfg.score.decode_threads},
                          batch_size=cfg.score.batch_size,
                          batch_format="numpy", num_cpus=cfg.score.decode_cpus,
                          runtime_env={"env_vars": keras_env.worker_env()})


def score_rows(probs: NDArray[np.float32], rows: NDArray[np.intp], ids: NDArray[np.int64], errors: NDArray,
               criterion: Callable[[NDArray[np.floating], NDArray[np.int64]], NDArray[np.float64]],
               top: int) -> dict[str, NDArray]:
    """A batch's score columns from the class probabilities ``[m, c]`` of its ``rows`` (the rest
    could not be decoded): NaN scores for those, and a non-finite output is skipped and reported
    (``NON_FINITE`` in ``error``, a copy). What the scorer and the rescoring from embeddings write."""
    n = len(ids)
    errors = errors.copy()
    scores = np.full(n, np.nan)  # [n], NaN = skipped, never selected
    predicted = np.full(n, -1, dtype=np.int64)
    top_classes = np.full((n, top), -1, dtype=np.int64)  # [n, k]
    top_probs = np.zeros((n, top), dtype=np.float32)  # [n, k]
    finite = np.isfinite(probs).all(axis=1)  # [m]
    errors[rows[~finite]] = NON_FINITE
    ok, probs = rows[finite], probs[finite]
    if ok.size:
        scores[ok] = criterion(probs, ids[ok].astype(np.int64))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :top]  # [m, k]
        predicted[ok] = order[:, 0]
        top_classes[ok] = order
        top_probs[ok] = np.take_along_axis(probs, order, axis=1)
    return {"score": scores, "predicted": predicted, "top_classes": top_classes, "top_probs": top_probs,
            "error": errors}


class Scorer:
    """Holds one model per actor; ``__call__`` scores one batch of decoded images."""

    def __init__(self, model_dir: str, criterion: str, seed: int, batch_size: int, top_probs: int,
                 xla: bool = False, mixed_precision: bool = False, board: Any = None,
                 embeddings: bool = False) -> None:
        keras_env.use_legacy_keras()
        import tensorflow as tf
        import tf_keras as keras

        from raysal.selection import criteria
        from raysal.model import models

        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)  # share the GPU, don't grab it all
        if mixed_precision:  # this actor's process only; float32 weights, float16 compute
            keras.mixed_precision.set_global_policy("mixed_float16")
        with storage.local_copy(model_dir) as local:  # a download is removed once the weights are loaded
            self.model, model_cfg, self.classes = models.load_checkpoint(local)
        self.criterion = criteria.get_criterion(criterion, seed)
        self.board = board  # a progress.Board that counts scored images, or None
        self.batch_size = batch_size
        self.top = min(top_probs, len(self.classes))
        size = model_cfg.input_size
        spec = tf.TensorSpec([batch_size, size, size, 3], tf.uint8)  # fixed: traced once, XLA-friendly
        # With embeddings, one call gives both outputs: the backbone runs once per image.
        net = keras.Model(self.model.inputs, [self.model.output, models.embedding_model(self.model).output]) \
            if embeddings else self.model
        self.embeddings = embeddings
        self._predict = tf.function(lambda images: tf.nest.map_structure(
            lambda out: tf.cast(out, tf.float32), net(images, training=False)), input_signature=[spec], jit_compile=xla)
        out = self._predict(tf.zeros(spec.shape, tf.uint8))  # trace (and compile) now, as part of the actor's start
        self.dims = int(out[1].shape[-1]) if embeddings else 0  # known once run: a hub model may leave it open

    def outputs(self, images: NDArray[np.uint8]) -> tuple[NDArray[np.float32], NDArray[np.float16] | None]:
        """Class probabilities ``[n, c]``, and with embeddings on, the embeddings ``[n, d]``."""
        n = len(images)
        probs, embeddings = [], []
        for start in range(0, n, self.batch_size):
            chunk = images[start:start + self.batch_size]
            pad = self.batch_size - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.uint8)])
            out = self._predict(chunk)
            if self.embeddings:
                probs.append(out[0].numpy()[: self.batch_size - pad])
                embeddings.append(to_float16(out[1].numpy()[: self.batch_size - pad]))
            else:
                probs.append(out.numpy()[: self.batch_size - pad])
        empty = np.zeros((0, len(self.classes)), np.float32)
        return (np.concatenate(probs) if probs else empty,
                (np.concatenate(embeddings) if embeddings else np.zeros((0, self.dims), np.float16))
                if self.embeddings else None)

    def __call__(self, batch: dict[str, NDArray]) -> dict[str, NDArray]:
        n = len(batch["image_id"])
        decoded = np.flatnonzero(batch["error"] == "")
        probs, embeddings = self.outputs(batch["image"][decoded]) if decoded.size else (
            np.zeros((0, len(self.classes)), np.float32), np.zeros((0, self.dims), np.float16))
        out = {"image_id": batch["image_id"], "uri": batch["uri"], "label": batch["label"],
               **score_rows(probs, decoded, batch["image_id"], batch["error"], self.criterion, self.top)}
        if self.embeddings:  # NaN for an image that was not decoded
            out[EMBEDDING] = np.full((n, self.dims), np.nan, np.float16)  # [n, d]
            out[EMBEDDING][decoded] = embeddings
        if self.board is not None:
            self.board.add.remote(n)  # not awaited: progress never slows scoring
        return out


def writes_embeddings(cfg: Config, reusable: bool) -> bool:
    """Whether scoring writes embeddings: asked for, needed by the diversity strategy, or worth
    keeping because training leaves the backbone frozen and the model's head can be applied
    to them alone (``reusable``: its checkpoint has a digest and a head), so later rounds
    rescore from them."""
    return cfg.score.embeddings or cfg.select.strategy == "diversity" or (cfg.train.finetune_epochs == 0 and reusable)


def score(decoded: ray.data.Dataset, model_dir: str, cfg: Config, board: Any = None,
          embeddings: bool = False) -> ray.data.Dataset:
    """Score decoded images with an actor pool; columns ``SCORE_COLUMNS``, and ``embedding``
    (float16 ``[d]``, NaN where not scored) with ``embeddings``.

    ``board``: a ``progress.Board`` that the actors tell how many images they scored.
    """
    s = cfg.score
    return decoded.map_batches(
        Scorer,
        fn_constructor_kwargs={"model_dir": model_dir, "criterion": cfg.select.criterion, "seed": cfg.seed,
                               "batch_size": s.batch_size, "top_probs": s.top_probs, "xla": s.xla,
                               "mixed_precision": s.mixed_precision, "board": board,
                               "embeddings": embeddings},
        batch_size=s.batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=s.min_actors, max_size=s.max_actors,
                                           max_concurrent_calls_per_actor=s.calls_per_actor,
                                           enable_true_multi_threading=s.calls_per_actor > 1),
        num_cpus=s.cpus_per_actor, num_gpus=s.gpus_per_actor or None,
        runtime_env={"env_vars": keras_env.worker_env()},
    )


SCORE_FILE_ROWS = 4096  # a score file collects this many rows (and up to one block more) before it is written
SCORE_FILES = 8  # a pool under 8 x 4,096 images is written in up to 8 files, as scoring goes, not in one


def score_file_rows(total: int) -> int:
    """The rows a score file collects before it is written, for a pass over ``total`` images.

    Written block by block, every block of a pass is a write task of its own (~40 ms of driver
    and worker CPU, for a file pyarrow writes in under 1 ms). A file takes at least this many
    rows (and up to one block more); a small pool still gets several files, written as scoring
    goes, not one at the end.
    """
    return max(1, min(SCORE_FILE_ROWS, -(-total // SCORE_FILES)))


def write_scores(scored: ray.data.Dataset, uri: str, total: int) -> None:
    """Run the scoring pass, writing its rows as Parquet files under ``uri``."""
    scored.write_parquet(uri, min_rows_per_file=score_file_rows(total))


@ray.remote
def _rescore_files(fs: pafs.FileSystem, paths: list[str], out_folder: str, first: int,
                   exclude_sorted: NDArray[np.int64], head: DenseHead, criterion: str, seed: int, top: int,
                   keep_embeddings: bool, board: Any) -> int:
    """Score files rescored from their embeddings by ``head``: file i of ``paths`` becomes
    ``out_folder/part-{first + i}.parquet``, without the ``exclude_sorted`` ids. Returns the rows written."""
    from raysal.selection.criteria import get_criterion

    score_fn = get_criterion(criterion, seed)
    written = 0
    for i, path in enumerate(paths):
        table = pq.read_table(path, filesystem=fs, columns=["image_id", "uri", "label", "error", EMBEDDING])
        ids = _numpy(table["image_id"]).astype(np.int64)  # [n]
        table = table.filter(pa.array(~is_in_sorted(ids, exclude_sorted)))
        ids = _numpy(table["image_id"]).astype(np.int64)
        errors = np.asarray(table["error"].fill_null("").to_pylist(), dtype=object)  # [n]
        errors[errors == NON_FINITE] = ""  # the earlier model's output, not the image: the new head may do
        rows = np.flatnonzero(errors == "")
        embeddings = column_matrix(table[EMBEDDING])  # [n, d]
        probs = head.probs(embeddings[rows]) if rows.size else np.zeros((0, len(head.bias)), np.float32)
        out = score_rows(probs, rows, ids, errors, score_fn, min(top, len(head.bias)))
        columns = {"image_id": table["image_id"], "uri": table["uri"], "label": table["label"],
                   "score": pa.array(out["score"]), "predicted": pa.array(out["predicted"]),
                   "top_classes": ArrowTensorArray.from_numpy(out["top_classes"]),
                   "top_probs": ArrowTensorArray.from_numpy(out["top_probs"]),
                   "error": pa.array(out["error"].tolist(), pa.string())}
        if keep_embeddings:
            columns[EMBEDDING] = table[EMBEDDING]
        pq.write_table(pa.table(columns), f"{out_folder}/part-{first + i:05d}.parquet", filesystem=fs)
        written += len(ids)
        if board is not None:
            board.add.remote(len(ids))
    return written


def rescore(embedded: str, out: str, head_uri: str, exclude_ids: NDArray[np.int64], cfg: Config,
            keep_embeddings: bool = False, board: Any = None, tasks: int | None = None) -> int:
    """Rescore from embeddings: the score files under ``embedded`` (a folder or URI whose files
    have an ``embedding`` column) rescored by the head at ``head_uri`` (``embeddings.HEAD_FILE``)
    into ``out``, as the scorer would score them with the model whose backbone made the
    embeddings. No image is decoded and no backbone runs: plain numpy in one task per CPU.
    ``exclude_ids`` are left out; ``keep_embeddings`` copies the column. Returns the rows written.
    """
    head = DenseHead.from_bytes(storage.read_bytes(head_uri))
    fs, path = storage.resolve(embedded)
    files = sorted(pads.dataset(path, filesystem=fs, format="parquet").files)
    out_fs, out_path = storage.resolve(out)
    out_fs.create_dir(out_path, recursive=True)
    exclude = ray.put(np.unique(np.asarray(exclude_ids, dtype=np.int64)))
    head_ref = ray.put(head)
    runs = np.array_split(np.arange(len(files)), min(len(files), max(1, tasks or _cluster_cpus()))) if files else []
    return sum(ray.get([_rescore_files.remote(fs, [files[i] for i in run], out_path, int(run[0]), exclude, head_ref,
                                              cfg.select.criterion, cfg.seed, cfg.score.top_probs, keep_embeddings,
                                              board) for run in runs if len(run)]))


MERGE_FAN_IN = 16  # best-k tables merged per step: the driver never holds more than 16k of them
RANK = "_rank"  # the column a scan ranks by when a strategy's keys are not the scores
Keys = Callable[[NDArray[np.floating], NDArray[np.int64]], NDArray[np.floating]]


def _numpy(column: pa.ChunkedArray) -> NDArray:
    """A column as numpy: zero-copy for one chunk without nulls; null scores become NaN."""
    array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return array.to_numpy(zero_copy_only=False)


def _rank_of(table: pa.Table) -> NDArray[np.floating]:
    """What the rows are ranked by: a strategy's keys where a scan added them, else the scores."""
    return _numpy(table[RANK if RANK in table.column_names else "score"])


def _best_rows(tables: list[pa.Table | None], k: int, ordered: bool, quota: int = 0) -> pa.Table | None:
    """The top k rows of the tables together; in selection order when ``ordered``. With a
    ``quota``, also the top ``quota`` of each predicted class, each row once (in no set order):
    every row that ``topk.class_balanced_indices`` can choose."""
    tables = [t for t in tables if t is not None]
    if not tables:
        return None
    merged = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    scores, ids = _rank_of(merged), _numpy(merged["image_id"])
    if quota:
        _, first = np.unique(ids, return_index=True)  # a row kept both among all and in its class: once
        if len(first) < merged.num_rows:
            merged, scores, ids = merged.take(first), scores[first], ids[first]
        chosen = [top_k_unordered(scores, ids, n) if rows is None else rows[top_k_unordered(scores[rows], ids[rows], n)]
                  for _, rows, n in _groups(merged, k, quota)]
        return merged.take(np.unique(np.concatenate(chosen)))
    return merged.take(top_k_indices(scores, ids, k) if ordered else top_k_unordered(scores, ids, k))


@dataclass(frozen=True)
class _Scanned:
    """What a scan reports besides its best rows."""

    skipped: pa.Table | None  # image_id, uri, reason of the rows with a non-empty ``error``
    lowest: float  # the lowest score; inf when every score was NaN
    highest: float  # the highest score; -inf when every score was NaN
    rows: int
    sample: pa.Table | None = None  # image_id, predicted of the scanned stop-set candidates


STOP_SET = 10_000  # pool images whose predictions a round keeps, to compare with the next model's


def _smallest_keys(table: pa.Table, n: int) -> pa.Table:
    """The ``n`` rows of ``table`` whose image ids have the smallest ``id_keys``, in no set order.

    The stop set is the pool's images with the smallest keys: a uniform sample, the same images
    from round to round but for those selected since, found by a scan that needs no pool size.
    Keys are a bijection of ids (no ties), so the n smallest of parts' n smallest are exact.
    """
    if table.num_rows <= n:
        return table
    keys = id_keys(_numpy(table["image_id"]))
    return table.take(np.argpartition(keys, n - 1)[:n])


def _scan(parts: Iterable[pa.Table], k: int, exclude_sorted: NDArray[np.int64], columns: list[str],
          sample: int = 0, keys: Keys | None = None, quota: int = 0) -> tuple[pa.Table | None, _Scanned]:
    """The best k rows of a stream of parts (in no set order), and what else the round reports.

    Only candidates leave a part (``candidate_rows``: at most k, none below the best k's lowest
    score seen so far), and they merge when they pass 2k, so a scan holds ~3k rows plus one part.
    ``sample``: also keep the id and predicted class of the ``sample`` scored, not excluded
    images with the smallest ``hashing.id_keys`` (the stop set), held the same way. ``keys``: rank by
    ``keys(scores, ids)`` instead of the scores (a strategy's), carried in a ``RANK`` column.
    ``quota``: also the best ``quota`` of each predicted class, each kept the same way (about
    3 x quota rows more per class).
    """
    kept: dict[str, list[pa.Table]] = {}  # by group: "all", and each class with a quota
    n_kept: dict[str, int] = {}
    threshold: dict[str, float] = {}
    skipped: list[pa.Table] = []
    sampled: list[pa.Table] = []
    lowest, highest, rows = np.inf, -np.inf, 0
    for part in parts:
        scores, ids = _numpy(part["score"]), _numpy(part["image_id"])  # [n], [n]
        rank = keys(scores, ids) if keys is not None else scores  # [n]
        rows += len(scores)
        if sample:
            scored = np.flatnonzero(~np.isnan(scores) & ~is_in_sorted(ids, exclude_sorted))
            sampled.append(_smallest_keys(part.select(["image_id", "predicted"]).take(scored), sample))
            if sum(t.num_rows for t in sampled) > 2 * sample:
                sampled = [_smallest_keys(pa.concat_tables(sampled, promote_options="permissive"), sample)]
        low = np.fmin.reduce(scores) if len(scores) else np.nan  # fmin skips NaN
        high = np.fmax.reduce(scores) if len(scores) else np.nan
        if low < lowest:
            lowest = float(low)
        if high > highest:
            highest = float(high)
        if "error" in part.column_names and not pa.types.is_null(part.schema.field("error").type):
            bad = np.flatnonzero(_numpy(pc.binary_length(part["error"]).fill_null(0)))  # null: no error
            if bad.size:
                rows_bad = part.take(bad)
                skipped.append(pa.table({"image_id": rows_bad["image_id"], "uri": rows_bad["uri"],
                                         "reason": rows_bad["error"]}))
        for group, members, n in _groups(part, k, quota):
            if members is None:  # the whole part: no copy
                keep = candidate_rows(rank, ids, n, threshold.get(group, -np.inf), exclude_sorted)
            else:
                keep = members[candidate_rows(rank[members], ids[members], n, threshold.get(group, -np.inf),
                                              exclude_sorted)]
            if not keep.size:
                continue
            if keep.size == n:  # n rows of this part rank at least their lowest: nothing below it can win
                threshold[group] = max(threshold.get(group, -np.inf), float(rank[keep].min()))
            chosen = part.select(columns).take(keep)
            kept.setdefault(group, []).append(chosen.append_column(RANK, pa.array(rank[keep]))
                                              if keys is not None else chosen)
            n_kept[group] = n_kept.get(group, 0) + keep.size
            if n_kept[group] > 2 * n:
                best = _best_rows(kept[group], n, ordered=False)
                kept[group], n_kept[group] = [best], best.num_rows
                threshold[group] = max(threshold.get(group, -np.inf), float(_rank_of(best).min()))  # n rows
    skipped_table = pa.concat_tables(skipped, promote_options="permissive") if skipped else None
    sample_table = _smallest_keys(pa.concat_tables(sampled, promote_options="permissive"), sample) if sampled else None
    best = _best_rows([t for tables in kept.values() for t in tables], k, ordered=False, quota=quota)
    return best, _Scanned(skipped_table, lowest, highest, rows, sample_table)


def _groups(part: pa.Table, k: int, quota: int) -> list[tuple[str, NDArray[np.intp] | None, int]]:
    """The groups a scan keeps the best of: (name, rows (None: all), how many). All rows, k of
    them; with a quota, also each predicted class (a null class counts as -1), ``quota`` of each."""
    groups: list[tuple[str, NDArray[np.intp] | None, int]] = [("all", None, k)]
    if quota:
        classes = _numpy(pc.fill_null(part["predicted"], -1)).astype(np.int64)  # [n]
        order = np.argsort(classes, kind="stable")
        runs = np.split(order, np.flatnonzero(np.diff(classes[order])) + 1)
        groups += [(f"class {classes[rows[0]]}", rows, quota) for rows in runs if rows.size]
    return groups


@ray.remote(num_returns=2)
def _scan_blocks(k: int, exclude_sorted: NDArray[np.int64], columns: list[str], sample: int, keys: Keys | None,
                 quota: int, *blocks: pa.Table) -> tuple[pa.Table | None, _Scanned]:
    return _scan(blocks, k, exclude_sorted, columns, sample, keys, quota)


@ray.remote(num_returns=2)
def _scan_files(fs: pafs.FileSystem, paths: list[str], read: list[str], k: int, exclude_sorted: NDArray[np.int64],
                columns: list[str], sample: int, keys: Keys | None,
                quota: int) -> tuple[pa.Table | None, _Scanned]:
    def parts() -> Iterable[pa.Table]:  # file by file: each keeps its own column types
        for path in paths:
            for batch in pq.ParquetFile(path, filesystem=fs).iter_batches(columns=read):
                yield pa.Table.from_batches([batch])

    return _scan(parts(), k, exclude_sorted, columns, sample, keys, quota)


@ray.remote
def _merge_best(k: int, quota: int, *tables: pa.Table | None) -> pa.Table | None:
    return _best_rows(list(tables), k, ordered=False, quota=quota)


def _cluster_cpus() -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _block_groups(blocks: list[ray.ObjectRef], groups: int) -> list[list[ray.ObjectRef]]:
    """Blocks cut into about ``groups`` runs of equal bytes, each run held by one node, so that
    a task over a run starts where its blocks are (Ray places a task by its arguments' bytes)."""
    where = ray.experimental.get_object_locations(blocks)
    by_node: dict[str, list[tuple[ray.ObjectRef, int]]] = {}
    for ref in blocks:
        place = where.get(ref, {})
        node = (place.get("node_ids") or [""])[0]  # "": small enough to travel inline
        by_node.setdefault(node, []).append((ref, place.get("object_size") or 1))
    target = sum(size for refs in by_node.values() for _, size in refs) / groups
    runs: list[list[ray.ObjectRef]] = []
    for refs in by_node.values():
        run, run_bytes = [], 0
        for ref, size in refs:
            run.append(ref)
            run_bytes += size
            if run_bytes >= target:
                runs.append(run)
                run, run_bytes = [], 0
        if run:
            runs.append(run)
    return runs


def _scan_dataset(scored: ray.data.Dataset, k: int, exclude_ref: ray.ObjectRef, columns: list[str],
                  tasks: int, sample: int, keys: Keys | None,
                  quota: int) -> list[tuple[ray.ObjectRef, ray.ObjectRef]]:
    wanted = list(dict.fromkeys([*columns, *(["uri", "error"] if "error" in scored.columns() else [])]))
    if not isinstance(scored, MaterializedDataset):
        scored = scored.select_columns(wanted)  # pushed into the read; a materialised one is read as it is
    blocks = scored.to_arrow_refs()
    runs = _block_groups(blocks, tasks) if blocks else []
    return [_scan_blocks.remote(k, exclude_ref, columns, sample, keys, quota, *run) for run in runs]


def _scan_parquet(folder: str, k: int, exclude_ref: ray.ObjectRef, columns: list[str],
                  tasks: int, sample: int, keys: Keys | None,
                  quota: int) -> list[tuple[ray.ObjectRef, ray.ObjectRef]]:
    fs, path = storage.resolve(folder)
    found = pads.dataset(path, filesystem=fs, format="parquet")  # pyarrow's discovery: skips _* and .* files
    if not found.files:
        return []
    read = list(dict.fromkeys([*columns, *(["uri", "error"] if "error" in found.schema.names else [])]))
    runs = np.array_split(np.array(found.files, dtype=object), min(len(found.files), tasks))
    return [_scan_files.remote(fs, list(paths), read, k, exclude_ref, columns, sample, keys, quota)
            for paths in runs]


def score_columns(folder: str) -> list[str]:
    """The columns of the score files under ``folder`` (a path or URI)."""
    fs, path = storage.resolve(folder)
    return pads.dataset(path, filesystem=fs, format="parquet").schema.names


@dataclass(frozen=True)
class Selection:
    """The result of one pass over a round's scores."""

    rows: dict[str, NDArray]  # the top k rows, in selection order
    skipped: dict[str, NDArray]  # image_id, uri, reason of every image that could not be scored
    score_min: float | None  # over every scored image
    score_max: float | None
    rows_read: int  # every row of the scores: selectable, skipped and excluded
    stop_set: dict[str, NDArray] | None = None  # image_id (ascending), predicted: see ``select_top_k``'s sample


def select_top_k(scored: ray.data.Dataset | str, k: int, exclude_ids: NDArray[np.int64] | None = None,
                 columns: tuple[str, ...] = ("image_id", "uri", "score", "predicted"),
                 tasks: int | None = None, sample: int = 0, keys: Keys | None = None,
                 per_class: int = 0) -> Selection:
    """Exact top-k rows of ``scored`` by (score desc, image_id asc), never an excluded id.

    ``scored`` is a dataset, or the folder (path or URI) of the Parquet files scoring wrote: plain
    tasks read those files, only the columns needed. (Ray Data's ``read_parquet`` starts actors to
    read the footers on every read, ~7 s on 2 cores: more than the whole selection.) One task per
    CPU scans its blocks or files (``_scan``); plain tasks, as Ray Data's per-task cost (~25 ms on
    2 cores) is more than a block's top-k. Their best k merge on the driver (first in tasks, 16 at
    a time, when there are many), so the driver holds ~16k rows plus the skipped ones (and, with
    ``sample``, that many rows per task; with ``per_class``, up to twice the rows).

    Args:
        tasks: how many scan tasks (about; blocks are grouped by node); default one per CPU.
        sample: also return the stop set, the id and predicted class of ``sample`` scored, not
            excluded images, a fixed pseudo-random choice by id (``hashing.id_keys``): rounds that
            keep theirs can tell how much the model's predictions changed. Needs ``predicted``.
        keys: rank by ``keys(scores, image_ids)`` (higher first, NaN never) instead of the
            scores, e.g. ``criteria.SelectionKeys``: a strategy's exact top k of its keys.
        per_class: the number of classes, for a selection with a quota of ``k // per_class``
            per predicted class (``topk.class_balanced_indices``): the scans keep each class's
            best quota besides the best k, about twice the rows. 0: none.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if per_class < 0:
        raise ValueError(f"per_class must be >= 0, got {per_class}")
    columns = list(dict.fromkeys(["image_id", "score", *columns, *(["predicted"] if sample or per_class else [])]))
    exclude = np.unique(np.asarray(exclude_ids if exclude_ids is not None else [], dtype=np.int64))
    exclude_ref = ray.put(exclude)  # stored once; tasks fetch it instead of each carrying a copy
    scan = _scan_parquet if isinstance(scored, str) else _scan_dataset
    quota = k // per_class if per_class > 0 else 0  # 0: the plain top k (also a budget below the classes)
    scans = scan(scored, k, exclude_ref, columns, max(1, tasks or _cluster_cpus()), sample, keys, quota)
    best_refs = [best for best, _ in scans]
    while len(best_refs) > MERGE_FAN_IN:
        best_refs = [_merge_best.remote(k, quota, *best_refs[i:i + MERGE_FAN_IN])
                     for i in range(0, len(best_refs), MERGE_FAN_IN)]
    if quota:
        candidates = _best_rows(ray.get(best_refs), k, ordered=False, quota=quota)
        best = None if candidates is None else candidates.take(class_balanced_indices(
            _rank_of(candidates), _numpy(candidates["image_id"]),
            _numpy(pc.fill_null(candidates["predicted"], -1)), k, per_class))
    else:
        best = _best_rows(ray.get(best_refs), k, ordered=True)
    reports: list[_Scanned] = ray.get([report for _, report in scans])
    rows = {c: (column_matrix(best[c]) if c == EMBEDDING else best[c].to_numpy(zero_copy_only=False))
            if best is not None else (np.empty((0, 0), np.float16) if c == EMBEDDING else np.empty(0))
            for c in columns}
    skipped = [r.skipped for r in reports if r.skipped is not None]
    skipped_table = pa.concat_tables(skipped, promote_options="permissive") if skipped else None
    skipped_columns = {c: (skipped_table[c].to_numpy(zero_copy_only=False) if skipped_table is not None
                           else np.empty(0, dtype=object)) for c in ("image_id", "uri", "reason")}
    lowest = min((r.lowest for r in reports), default=np.inf)
    highest = max((r.highest for r in reports), default=-np.inf)
    stop_set = None
    if sample:
        parts = [r.sample for r in reports if r.sample is not None]
        chosen = _smallest_keys(pa.concat_tables(parts, promote_options="permissive"), sample) if parts else None
        ids = _numpy(chosen["image_id"]).astype(np.int64) if chosen is not None else np.empty(0, np.int64)
        predicted = _numpy(chosen["predicted"]).astype(np.int64) if chosen is not None else np.empty(0, np.int64)
        order = np.argsort(ids)
        stop_set = {"image_id": ids[order], "predicted": predicted[order]}
    return Selection(rows=rows, skipped=skipped_columns, score_min=None if lowest == np.inf else float(lowest),
                     score_max=None if highest == -np.inf else float(highest),
                     rows_read=sum(r.rows for r in reports), stop_set=stop_set)


# Small per-batch transforms of a round, kept here so Ray workers import no TensorFlow for them.
def drop_ids(batch: dict[str, NDArray], ids_ref: ray.ObjectRef) -> dict[str, NDArray]:
    keep = ~np.isin(batch["image_id"], ray.get(ids_ref))
    return {name: column[keep] for name, column in batch.items()}


def labelled_images(batch: dict[str, NDArray]) -> dict[str, NDArray]:
    keep = (batch["error"] == "") & ~np.isnan(batch["label"].astype(np.float64))
    return {"image": batch["image"][keep], "label": batch["label"][keep].astype(np.int64)}


@ray.remote(num_cpus=0.5)
def _split_ids(block: pa.Table, parts: int) -> tuple[NDArray[np.int64], ...] | NDArray[np.int64]:
    """One block's ids cut into ``parts`` by a hash of the id: equal ids land in equal parts."""
    ids = block["image_id"].to_numpy()
    part = ((ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)) % np.uint64(parts)
    pieces = tuple(ids[part == p] for p in range(parts))
    return pieces if parts > 1 else pieces[0]


@ray.remote(num_cpus=0.5)
def _repeated_ids(limit: int, *pieces: NDArray[np.int64]) -> NDArray[np.int64]:
    unique, counts = np.unique(np.concatenate(pieces), return_counts=True)
    return unique[counts > 1][:limit]


def duplicate_ids(ds: ray.data.Dataset, limit: int = 5) -> list[int]:
    """Up to ``limit`` image_ids that occur more than once anywhere in ``ds``.

    A two-step hash shuffle in Ray tasks: each block's ids are cut into parts by a hash of the
    id, then each part is checked whole, so a repeat is found whichever blocks hold it; only the
    repeated ids reach the driver. (``groupby("image_id").count()`` gives the same answer but
    took 7-18 s for 3,000 ids on 2 cores, this 2 s; 2M ids take 3 s.)
    """
    blocks = ds.select_columns(["image_id"]).to_arrow_refs()
    if not blocks:
        return []
    parts = max(1, min(64, len(blocks) // 8))  # a part holds about 8 blocks' worth of ids
    split = [_split_ids.options(num_returns=parts).remote(block, parts) for block in blocks]
    pieces = [[s] for s in split] if parts == 1 else split
    found = ray.get([_repeated_ids.remote(limit, *[p[i] for p in pieces]) for i in range(parts)])
    return sorted(int(i) for i in np.concatenate(found))[:limit]
