"""Scoring a pool on Ray: the actor pool that runs the model over decoded images, the score
files it writes, and the rescoring of earlier score files from their embeddings with a head
alone (plain tasks, no image decoded, no backbone run).
"""

from __future__ import annotations

import posixpath
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
import ray.data
from numpy.typing import NDArray
from ray.data.extensions import ArrowTensorArray

from raysal import storage
from raysal.config import Config
from raysal.model import keras_env
from raysal.model.embeddings import EMBEDDING, HEAD_FILE, DenseHead, check_files, column_matrix
from raysal.model.sampling import bald_sampler
from raysal.model.scorer import NON_FINITE, Scorer, score_rows
from raysal.run import resources
from raysal.run.cluster import cluster_cpus
from raysal.selection.criteria import SAMPLED
from raysal.selection.scan import column_numpy
from raysal.selection.topk import is_in_sorted


def writes_embeddings(cfg: Config, reusable: bool) -> bool:
    """Whether scoring writes embeddings: asked for, needed by the diversity strategy, or worth
    keeping because training leaves the backbone frozen and the model's head can be applied
    to them alone (``reusable``: its checkpoint has a digest and a head), so later rounds
    rescore from them."""
    return cfg.score.embeddings or cfg.select.strategy == "diversity" or (cfg.train.finetune_epochs == 0 and reusable)


def score(decoded: ray.data.Dataset, model_dir: str, cfg: Config, board: Any = None,
          embeddings: bool = False, round_number: int = 0) -> ray.data.Dataset:
    """Score decoded images with an actor pool; columns ``SCORE_COLUMNS``, and ``embedding``
    (float16 ``[d]``, NaN where not scored) with ``embeddings``. ``round_number`` draws the MC
    dropout masks of ``bald`` (``raysal.model.sampling``; a model of K heads: its members instead).

    ``board``: a ``progress.Board`` that the actors tell how many images they scored.
    Waits first, visibly and for at most ``score.resource_timeout_s``, until the cluster has the
    actors' (and a decode task's) resources free (``resources.wait_for``).
    """
    s = cfg.score
    resources.wait_for("score", resources.stage_asks(cfg, "score"), s.resource_timeout_s, "score.resource_timeout_s")
    return decoded.map_batches(
        Scorer,
        fn_constructor_kwargs={"model_dir": model_dir, "criterion": cfg.select.criterion, "seed": cfg.seed,
                               "batch_size": s.batch_size, "top_probs": s.top_probs, "xla": s.xla,
                               "mixed_precision": s.mixed_precision, "board": board,
                               "embeddings": embeddings, "mc_samples": cfg.select.mc_samples,
                               "round_number": round_number},
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
                   keep_embeddings: bool, board: Any,
                   sampler: Callable[[NDArray[np.floating]], NDArray[np.float32]] | None = None) -> int:
    """Score files rescored from their embeddings by ``head``: file i of ``paths`` becomes
    ``out_folder/part-{first + i}.parquet``, without the ``exclude_sorted`` ids. Returns the rows written."""
    from raysal.selection.criteria import get_criterion

    score_fn = get_criterion(criterion, seed)
    written = 0
    for i, path in enumerate(paths):
        table = pq.read_table(path, filesystem=fs, columns=["image_id", "uri", "label", "error", EMBEDDING])
        ids = column_numpy(table["image_id"]).astype(np.int64)  # [n]
        table = table.filter(pa.array(~is_in_sorted(ids, exclude_sorted)))
        ids = column_numpy(table["image_id"]).astype(np.int64)
        errors = np.asarray(table["error"].fill_null("").to_pylist(), dtype=object)  # [n]
        errors[errors == NON_FINITE] = ""  # the earlier model's output, not the image: the new head may do
        rows = np.flatnonzero(errors == "")
        embeddings = column_matrix(table[EMBEDDING])  # [n, d]
        probs = head.probs(embeddings[rows]) if rows.size else np.zeros((0, head.num_classes), np.float32)
        samples = sampler(embeddings[rows]) if sampler is not None else None  # bald: [T, m, c] or [K, m, c]
        out = score_rows(probs, rows, ids, errors, score_fn, min(top, head.num_classes), samples)
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
            keep_embeddings: bool = False, board: Any = None, tasks: int | None = None, round_number: int = 0) -> int:
    """Rescore from embeddings: the score files under ``embedded`` (a folder or URI whose files
    have an ``embedding`` column) rescored by the head at ``head_uri`` (``embeddings.HEAD_FILE``)
    into ``out``, as the scorer would score them with the model whose backbone made the
    embeddings. No image is decoded and no backbone runs: plain numpy in one task per CPU.
    ``exclude_ids`` are left out; ``keep_embeddings`` copies the column; ``round_number`` draws
    ``bald``'s MC dropout masks, as the scorer does (a head of K members is sampled by its
    members instead). Returns the rows written.
    """
    meta = check_files(posixpath.dirname(head_uri), [HEAD_FILE])  # a local path or a URI: "/" either way
    head = DenseHead.from_bytes(storage.read_bytes(head_uri))
    fs, path = storage.resolve(embedded)
    files = sorted(pads.dataset(path, filesystem=fs, format="parquet").files)
    out_fs, out_path = storage.resolve(out)
    out_fs.create_dir(out_path, recursive=True)
    exclude = ray.put(np.unique(np.asarray(exclude_ids, dtype=np.int64)))
    head_ref = ray.put(head)
    rate = (meta.get("model") or {}).get("dropout", cfg.model.dropout)  # the checkpoint's, as the scorer's
    sampler = bald_sampler(head, rate, cfg.select.mc_samples, cfg.seed, round_number) \
        if cfg.select.criterion in SAMPLED else None
    runs = np.array_split(np.arange(len(files)), min(len(files), max(1, tasks or cluster_cpus()))) if files else []
    return sum(ray.get([_rescore_files.remote(fs, [files[i] for i in run], out_path, int(run[0]), exclude, head_ref,
                                              cfg.select.criterion, cfg.seed, cfg.score.top_probs, keep_embeddings,
                                              board, sampler) for run in runs if len(run)]))
