"""The Ray Data pipeline of a round: decode, score with an actor pool, select exactly.

Lazy dataset in, lazy dataset out; the caller decides when to write or materialise. Decoding
runs in CPU tasks, scoring in an actor pool that loads the model once per actor, and selection
keeps each block's best k before a bounded merge on the driver: no global sort.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import ray.data
from numpy.typing import NDArray

from raysal import keras_env, storage
from raysal.config import Config
from raysal.images import UndecodableImage, decode_image
from raysal.topk import top_k_indices

log = logging.getLogger(__name__)

NON_FINITE = "model output is not finite (NaN or inf)"
SCORE_COLUMNS = ("image_id", "uri", "label", "score", "predicted", "top_classes", "top_probs", "error")


def _decode_one(data: bytes | None, uri: str, size: int) -> tuple[NDArray[np.uint8] | None, str]:
    try:
        return decode_image(data if data is not None else storage.read_bytes(uri), size), ""
    except UndecodableImage as exc:
        return None, str(exc)
    except OSError as exc:  # missing file, permission, network: the image is unreadable, not the job
        return None, f"unreadable: {exc}"


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


class Scorer:
    """Holds one model per actor; ``__call__`` scores one batch of decoded images."""

    def __init__(self, model_dir: str, criterion: str, seed: int, batch_size: int, top_probs: int,
                 xla: bool = False, mixed_precision: bool = False, board: Any = None) -> None:
        keras_env.use_legacy_keras()
        import tensorflow as tf
        import tf_keras as keras

        from raysal import criteria, models

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
        self._predict = tf.function(lambda images: tf.cast(self.model(images, training=False), tf.float32),
                                    input_signature=[spec], jit_compile=xla)
        self._predict(tf.zeros(spec.shape, tf.uint8))  # trace (and compile) now, as part of the actor's start

    def probs(self, images: NDArray[np.uint8]) -> NDArray[np.float32]:
        n = len(images)
        out = []
        for start in range(0, n, self.batch_size):
            chunk = images[start:start + self.batch_size]
            pad = self.batch_size - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.uint8)])
            out.append(self._predict(chunk).numpy()[: self.batch_size - pad])
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), np.float32)  # [n, c]

    def __call__(self, batch: dict[str, NDArray]) -> dict[str, NDArray]:
        n = len(batch["image_id"])
        errors = batch["error"].copy()
        scores = np.full(n, np.nan)  # [n], NaN = skipped, never selected
        predicted = np.full(n, -1, dtype=np.int64)
        top_classes = np.full((n, self.top), -1, dtype=np.int64)  # [n, k]
        top_probs = np.zeros((n, self.top), dtype=np.float32)  # [n, k]
        decoded = np.flatnonzero(errors == "")
        if decoded.size:
            probs = self.probs(batch["image"][decoded])  # [m, c]
            finite = np.isfinite(probs).all(axis=1)  # [m]: a NaN or inf output is skipped and reported
            errors[decoded[~finite]] = NON_FINITE
            ok, probs = decoded[finite], probs[finite]
            if ok.size:
                scores[ok] = self.criterion(probs, batch["image_id"][ok].astype(np.int64))
                order = np.argsort(-probs, axis=1, kind="stable")[:, : self.top]  # [m, k]
                predicted[ok] = order[:, 0]
                top_classes[ok] = order
                top_probs[ok] = np.take_along_axis(probs, order, axis=1)
        if self.board is not None:
            self.board.add.remote(n)  # not awaited: progress never slows scoring
        return {"image_id": batch["image_id"], "uri": batch["uri"], "label": batch["label"], "score": scores,
                "predicted": predicted, "top_classes": top_classes, "top_probs": top_probs, "error": errors}


def score(decoded: ray.data.Dataset, model_dir: str, cfg: Config, board: Any = None) -> ray.data.Dataset:
    """Score decoded images with an actor pool; columns ``SCORE_COLUMNS``.

    ``board``: a ``progress.Board`` that the actors tell how many images they scored.
    """
    s = cfg.score
    return decoded.map_batches(
        Scorer,
        fn_constructor_kwargs={"model_dir": model_dir, "criterion": cfg.select.criterion, "seed": cfg.seed,
                               "batch_size": s.batch_size, "top_probs": s.top_probs, "xla": s.xla,
                               "mixed_precision": s.mixed_precision, "board": board},
        batch_size=s.batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=s.min_actors, max_size=s.max_actors,
                                           max_concurrent_calls_per_actor=s.calls_per_actor,
                                           enable_true_multi_threading=s.calls_per_actor > 1),
        num_cpus=s.cpus_per_actor, num_gpus=s.gpus_per_actor or None,
        runtime_env={"env_vars": keras_env.worker_env()},
    )


CANDIDATE, SKIPPED, LOWEST = 0, 1, 2  # why a row survived a block, in the ``_role`` column


def _column(table: pa.Table, name: str) -> NDArray:
    return table[name].to_numpy()  # numeric columns: zero-copy when there is one chunk


def _block_survivors(block: pa.Table, k: int, exclude_ref: ray.ObjectRef) -> pa.Table:
    """The rows of one block the driver needs: its top k, its skipped rows, its lowest score."""
    scores = _column(block, "score")
    skipped = (np.flatnonzero(pc.not_equal(block["error"], "").to_numpy(zero_copy_only=False))
               if "error" in block.column_names else np.empty(0, np.intp))
    top = top_k_indices(scores, _column(block, "image_id"), k, ray.get(exclude_ref))
    valid = np.flatnonzero(~np.isnan(scores))
    lowest = valid[[np.argmin(scores[valid])]] if valid.size else np.empty(0, np.intp)
    keep = np.concatenate([top, skipped, lowest])
    role = np.repeat([CANDIDATE, SKIPPED, LOWEST], [len(top), len(skipped), len(lowest)]).astype(np.int8)
    return block.take(keep).append_column("_role", pa.array(role))


@dataclass(frozen=True)
class Selection:
    """The result of one pass over a round's scores."""

    rows: dict[str, NDArray]  # the top k rows, in selection order
    skipped: dict[str, NDArray]  # image_id, uri, reason of every image that could not be scored
    score_min: float | None  # over every scored image
    score_max: float | None


def select_top_k(scored: ray.data.Dataset, k: int, exclude_ids: NDArray[np.int64] | None = None,
                 columns: tuple[str, ...] = ("image_id", "uri", "score", "predicted")) -> Selection:
    """Exact top-k rows of ``scored`` by (score desc, image_id asc), never an excluded id.

    One pass: each block keeps its own best k (``argpartition``) plus its skipped rows and its
    lowest score; the survivors stream to the driver as Arrow batches and merge into a running
    top-k, so the driver holds ~2k rows plus one batch, and the skipped rows.
    """
    exclude = np.unique(np.asarray(exclude_ids if exclude_ids is not None else [], dtype=np.int64))
    exclude_ref = ray.put(exclude)  # stored once; tasks fetch it instead of each carrying a copy
    wanted = list(dict.fromkeys([*columns, *(["error"] if "error" in scored.columns() else [])]))
    survivors = scored.select_columns(wanted).map_batches(
        _block_survivors, fn_kwargs={"k": k, "exclude_ref": exclude_ref}, batch_size=None, batch_format="pyarrow")
    best: pa.Table | None = None
    skipped: list[pa.Table] = []
    lowest = np.inf
    for batch in survivors.iter_batches(batch_size=max(k, 4096), batch_format="pyarrow"):
        role = _column(batch, "_role")
        candidates = batch.filter(pa.array(role == CANDIDATE)).select(list(columns))
        merged = (candidates if best is None else pa.concat_tables([best, candidates])).combine_chunks()
        best = merged.take(top_k_indices(_column(merged, "score"), _column(merged, "image_id"), k))
        if (role == SKIPPED).any():
            rows = batch.filter(pa.array(role == SKIPPED))
            skipped.append(pa.table({"image_id": rows["image_id"], "uri": rows["uri"], "reason": rows["error"]}))
        if (role == LOWEST).any():
            lowest = min(lowest, float(_column(batch, "score")[role == LOWEST].min()))
    rows = {c: (best[c].to_numpy(zero_copy_only=False) if best is not None else np.empty(0)) for c in columns}
    skipped_table = pa.concat_tables(skipped) if skipped else None
    skipped_columns = {c: (skipped_table[c].to_numpy(zero_copy_only=False) if skipped_table is not None
                           else np.empty(0, dtype=object)) for c in ("image_id", "uri", "reason")}
    # The highest score of all is the first selected one unless every top row was excluded.
    return Selection(rows=rows, skipped=skipped_columns, score_min=None if np.isinf(lowest) else lowest,
                     score_max=float(rows["score"][0]) if len(rows["score"]) else None)


# Small per-batch transforms of a round, kept here so Ray workers import no TensorFlow for them.
def drop_ids(batch: dict[str, NDArray], ids_ref: ray.ObjectRef) -> dict[str, NDArray]:
    keep = ~np.isin(batch["image_id"], ray.get(ids_ref))
    return {name: column[keep] for name, column in batch.items()}


def labelled_images(batch: dict[str, NDArray]) -> dict[str, NDArray]:
    keep = (batch["error"] == "") & ~np.isnan(batch["label"].astype(np.float64))
    return {"image": batch["image"][keep], "label": batch["label"][keep].astype(np.int64)}


def keep_ids(batch: pa.Table, ids_ref: ray.ObjectRef) -> pa.Table:
    """Rows whose image_id is in the sorted id array behind ``ids_ref``."""
    return batch.filter(pc.is_in(batch["image_id"], value_set=pa.array(ray.get(ids_ref))))


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
