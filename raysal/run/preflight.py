"""Checks that run before a round changes anything: are its inputs present, readable, unique,
and visible from every node of the cluster?

A round that would fail on missing data, a model it cannot load offline, a pool with repeated
ids or a path that only the driver sees stops here, in seconds, with a message that names the
config field and says how to fix it. ``check`` needs no Ray; ``check_cluster`` runs once Ray
is up, and asks Ray to do the work (the driver never loads a large manifest).
"""

from __future__ import annotations

import os

import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raysal import storage
from raysal.config import Config, SourceConfig
from raysal.data import sources
from raysal.data.sources import SourceError, prepared_tfds_builder, resolve_path
from raysal.errors import Refused, Unavailable  # noqa: F401  (raised here; importable from here too)
from raysal.run import tracking


def _sources(cfg: Config) -> tuple[SourceConfig, ...]:
    """The sources a round reads, but a cold start's seed splits: those are pool images."""
    return tuple(s for s in (cfg.data.labelled, cfg.data.val, cfg.data.test, cfg.data.pool) if s.kind != "seed")


def data_root(cfg: Config, state_root: str) -> str:
    """Where relative source paths point: ``data.root``, else ``<state>/data``."""
    if cfg.data.root:
        return cfg.data.root
    return storage.join(state_root, "data")


def _check_source(cfg: SourceConfig, root: str) -> None:
    if cfg.kind == "tfds":
        try:
            prepared_tfds_builder(cfg)
        except SourceError as exc:  # TFDS messages name the field already
            raise Unavailable(str(exc)) from None
        return
    path = resolve_path(cfg.path, root)
    if cfg.kind == "digits":  # written on first use, into a local folder
        if storage.is_uri(path):
            raise Unavailable(f"{cfg.where}.path: the digits demo set is written to a local folder, not {path}: "
                              "set data.root to a local path")
        return
    if cfg.kind == "manifest":  # a file, a folder of shards or a glob; its footers alone are read
        try:
            manifest = sources.open_manifest(path, cfg.where)
        except SourceError as exc:
            raise Unavailable(f"{cfg.where}.path: {str(exc).removeprefix(f'{cfg.where}: ')}") from None
        try:
            sources.check_manifest(manifest, cfg.where)
        except SourceError as exc:
            raise Refused(str(exc)) from None
        return
    fs, inner = storage.resolve(path)
    if fs.get_file_info(inner).type != pafs.FileType.Directory:
        raise Unavailable(f"{cfg.where}.path: image folder {path} does not exist")


def _digits_pending(source: SourceConfig, root: str) -> bool:
    """The digits demo set, not written yet (it is, on first use, under the lease)."""
    return source.kind == "digits" and not os.path.exists(
        os.path.join(resolve_path(source.path, root), sources.DIGITS_MANIFEST))


def _split_classes(source: SourceConfig, classes: tuple[str, ...], root: str) -> set[str] | None:
    """The classes that a split's labels name; None where that takes more than reading labels
    (a TFDS split, the digits set not written yet)."""
    if source.kind == "tfds":
        return None
    if _digits_pending(source, root):
        return None
    if source.kind == "manifest":  # its label column alone, of the rows the split takes
        labels = sources.manifest_labels(source, classes, root)
    else:
        labels = sources.source_table(source, classes, root)["label"]
    return {classes[i] for i in pc.unique(labels).drop_null().to_pylist()}


def check_split_classes(cfg: Config, root: str) -> None:
    """Raise ``Refused`` when the seed set holds a single class, or a split lacks a class that
    another split has: the model (from such a seed set) or the accuracy (on such a test split)
    would say nothing about that class, and a round would report it without a word."""
    splits = tuple(s for s in (cfg.data.labelled, cfg.data.val, cfg.data.test) if s.kind != "seed")  # round 0's
    present = {s.where: found for s in splits if (found := _split_classes(s, cfg.data.classes, root)) is not None}
    order = {name: i for i, name in enumerate(cfg.data.classes)}
    problems = []
    seed = present.get(cfg.data.labelled.where)
    if seed is not None and len(seed) < 2:
        which = f"every image is of class {next(iter(seed))!r}" if seed else "no image has a label"
        problems.append(f"{cfg.data.labelled.where}: {which}; a model trained on it tells no classes apart")
    for where, found in present.items():
        others = {w: f for w, f in present.items() if w != where}
        for name in sorted(set().union(*others.values()) - found, key=order.get):
            having = [w for w, f in others.items() if name in f]
            problems.append(f"{where} has no image of class {name!r}, which {' and '.join(having)} "
                            f"{'has' if len(having) == 1 else 'have'}")
    if problems:
        raise Refused("; ".join(problems) + ". Every split needs images of every class: split the labelled images "
                      "by class (raysal prepare does), not by rows of a sorted list")


def _nearest_existing(path: str) -> str:
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def _check_model(cfg: Config) -> None:
    """A model file or handle that is missing is ``Unavailable``; a Keras model, or a TF Hub
    classifier, that does not fit the config is ``Refused``: both are loaded here, on the driver."""
    m = cfg.model
    if m.kind not in ("hub", "keras") and not (m.kind == "inception_v3" and m.weights):
        return
    from raysal.model import models

    if m.kind == "keras" or m.use == "classifier":  # built whole: the loader says what is missing or wrong
        try:
            models.build_model(m, len(cfg.data.classes))
        except models.ModelUnavailable as exc:
            raise Unavailable(str(exc)) from None
        except models.ModelRefused as exc:
            raise Refused(str(exc)) from None
        return
    if m.kind == "hub":
        field, problem = "model.handle", models.hub_handle_available(m.handle)
    else:
        field, problem = "model.weights", (None if os.path.isfile(os.path.expanduser(m.weights))
                                           else f"InceptionV3 weights file {m.weights} does not exist")
    if problem:
        raise Unavailable(f"{field}: {problem}")


def storage_roots(cfg: Config, state_root: str) -> dict[str, str]:
    """Every storage location a round reads or writes, by the field (or option) that names it."""
    roots = {"--state": state_root, "data.root": data_root(cfg, state_root)}
    for source in _sources(cfg):
        if source.kind != "tfds" and source.path:
            roots[f"{source.where}.path"] = resolve_path(source.path, roots["data.root"])
    model = cfg.model
    roots.update({field: value for field, value in (("model.path", model.path), ("model.weights", model.weights),
                                                    ("model.handle", model.handle))
                   if value and not value.startswith(("http://", "https://"))})  # a hub URL is no storage
    return roots


def check(cfg: Config, state_root: str) -> None:
    """Raise ``Unavailable`` naming the first missing input of the round, ``Refused`` for a model
    that does not fit it; writes nothing. Storage is probed first, each location once, with a
    bounded wait (``storage.probe``)."""
    tracking.check(cfg)
    storage.probe(storage_roots(cfg, state_root))
    root = data_root(cfg, state_root)
    for source in _sources(cfg):
        _check_source(source, root)
    check_split_classes(cfg, root)
    pool = cfg.data.pool
    if pool.rows and pool.kind != "tfds" and not _digits_pending(pool, root):
        sources.source_table(pool, cfg.data.classes, root)  # a slice past the end fails now, not mid-round
    _check_model(cfg)
    if not storage.is_uri(state_root):
        existing = _nearest_existing(state_root)
        if not (os.path.isdir(existing) and os.access(existing, os.W_OK)):
            raise Unavailable(f"--state: cannot create {state_root}: {existing} is not a writable folder")


def _local_paths(cfg: Config, state_root: str) -> dict[str, str]:
    """Every local (non-URI) path the round's workers will read, by the field that names it."""
    root = data_root(cfg, state_root)
    paths = {"--state": state_root, "data.root": root}
    for source in _sources(cfg):
        if source.kind != "tfds":
            paths[f"{source.where}.path"] = resolve_path(source.path, root)
    if cfg.model.kind == "keras":
        paths["model.path"] = os.path.expanduser(cfg.model.path)
    if cfg.model.kind == "inception_v3" and cfg.model.weights:
        paths["model.weights"] = os.path.expanduser(cfg.model.weights)
    if cfg.model.kind == "hub" and os.path.isdir(os.path.expanduser(cfg.model.handle)):
        paths["model.handle"] = os.path.expanduser(cfg.model.handle)
    for source in _sources(cfg):
        path = paths.get(f"{source.where}.path", "")
        if source.kind == "manifest" and path:  # and where its images are, unless it carries them
            try:
                manifest = sources.open_manifest(path, source.where)
                first = pq.ParquetFile(manifest.files[0], filesystem=manifest.fs)
            except (SourceError, OSError, ValueError):  # refused by _check_source, with its reason
                continue
            if "image_bytes" in first.schema_arrow.names or not first.metadata.num_row_groups:
                continue
            uris = first.read_row_group(0, columns=["uri"])["uri"].to_pylist()[:1]
            uris = [resolve_path(u, manifest.base) for u in uris if u]
            paths.update({f"{source.where} images ({u})": u for u in uris if not storage.is_uri(u)})
    return {field: path for field, path in paths.items() if not storage.is_uri(path)}


def check_cluster(cfg: Config, state_root: str) -> None:
    """Checks that need Ray (call after ``init_ray``): raise ``Refused`` when no node of the
    cluster could ever host a stage's workers (``resources.check``), another node cannot see a
    local path of the round, or a manifest repeats an image_id."""
    import ray.data

    from raysal.run import cluster, resources
    from raysal.run.duplicates import duplicate_ids

    resources.check(cfg)
    blind = cluster.paths_not_shared(_local_paths(cfg, state_root))
    if blind:
        raise Refused("; ".join(blind) + ". Every node reads the state and the images: put them on storage every "
                      "node mounts at the same path, or on object storage (--state s3://bucket/run, s3:// URIs "
                      "in the manifest)")
    root = data_root(cfg, state_root)
    for source in _sources(cfg):
        if source.kind != "manifest":
            continue  # folder, TFDS and digits sources are read, and checked, on the driver
        path = resolve_path(source.path, root)
        shards = sources.open_manifest(path, source.where).paths
        repeated = duplicate_ids(
            ray.data.read_parquet(shards, file_extensions=None).select_columns(["image_id"]))
        if repeated:
            raise Refused(f"{source.where}: manifest {path} repeats image_id values, e.g. {repeated}: every image "
                          "needs an id of its own, or it could be selected and labelled twice")
