"""Turn your labelled images into a ready run: split manifests and the config of its rounds.

    raysal prepare images --out run                          # images/<class>/*.jpg
    raysal prepare labels.csv --pool unlabelled --out run    # people label a separate pool
    raysal prepare images --out run --model hub --handle /models/inception_v3

The labelled images (a folder with one subfolder per class, or a CSV/Parquet manifest with
``uri,label`` and an optional ``image_id``; relative uris are relative to the manifest's folder)
are split by class, with a seeded shuffle, into the seed set (data.labelled), val and test: every
class in every split, in proportion to its share of the images. Without --pool the rest of them
is the pool, labelled from the data when selected (label.mode = "oracle"); with --pool the seed
set takes the rest and people label what a round selects (label.mode = "human"). Only file names
are read: no image is opened.

exit codes:
  0  the run is prepared
  2  bad arguments or input (a class too small for every split, an image listed twice, a pool
     that overlaps the labelled images, a config that already exists); nothing was written
  3  an input folder or manifest does not exist or cannot be read; nothing was written
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
from collections import Counter
import shlex
import sys
import tomllib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from numpy.typing import NDArray

from raysal import storage
from raysal.config import MODEL_KINDS as MODELS
from raysal.config import MODEL_USES, ConfigError, config_from_dict
from raysal.data.sources import folder_files, manifest_base, resolve_path, stable_id, whole_numbers
from raysal.errors import BadInput, MissingInput  # noqa: F401  (raised here; importable from here too)

EXIT_OK, EXIT_BAD_INPUT, EXIT_MISSING = 0, 2, 3
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")
FILL_ORDER = ("test", "val", "labelled")  # the sized splits, filled in this order; the rest is "pool" or "labelled"
SPLITS = ("labelled", "val", "test", "pool")  # as in the config's [data], and the order of the summary
SPLIT_NAMES = {"labelled": "the seed set", "val": "val", "test": "test", "pool": "the pool"}
CONFIG_FILE = "config.toml"
DEFAULT_INPUT_SIZE = {"small_cnn": 32, "hub": 299, "inception_v3": 299}  # keras: the model file's own
SEED_SHARE = 0.2  # the seed set beside an oracle pool: as large as the test split
BUDGET_SHARE, MAX_BUDGET = 0.1, 500  # a round selects a tenth of the pool, at most the article's 500
SUMMARY_CLASSES = 20  # rows of the summary's table before "... and N more classes"

# A small CNN learns everything from the seed set, as in presets/demo.toml: no frozen phase.
FROM_SCRATCH = {"batch_size": 16, "head_epochs": 0, "finetune_epochs": 10, "finetune_learning_rate": 0.003}
# A pretrained backbone, as in the article: the head alone for 3 epochs, then the whole model for 2.
PRETRAINED = {"batch_size": 32, "head_epochs": 3, "finetune_epochs": 2, "head_learning_rate": 1e-3,
              "finetune_learning_rate": 1e-5}

Size = int | float  # images (an int >= 1) or a share of the labelled images (a float in (0, 1))


# --- split arithmetic (pure) -----------------------------------------------------------------

def parse_size(text: str, option: str) -> Size:
    """'60' -> 60 images; '0.2' -> a fifth of the labelled images."""
    try:
        images = int(text)
    except ValueError:
        try:
            share = float(text)
        except ValueError:
            raise BadInput(f"{option}: {text!r} is neither a number of images (60) nor a share (0.2)") from None
        if not 0 < share < 1:
            raise BadInput(f"{option}: a share must be between 0 and 1, got {text}")
        return share
    if images < 1:
        raise BadInput(f"{option}: must be at least 1 image, got {images}")
    return images


def split_total(size: Size, n_images: int) -> int:
    """Images in a split of ``size`` out of ``n_images``; a share is rounded half up."""
    return size if isinstance(size, int) else math.floor(size * n_images + 0.5)


def proportional(total: int, counts: NDArray[np.int64], caps: NDArray[np.int64]) -> NDArray[np.int64]:
    """``total`` images shared among classes in proportion to ``counts``, at least 1 and at most
    ``caps`` each (largest remainders, Hamilton's method; ties to the lower class index).

    Requires ``len(counts) <= total <= caps.sum()`` and every cap >= 1.
    """
    shares = total * counts / counts.sum()  # [k]
    alloc = np.clip(np.floor(shares).astype(np.int64), 1, caps)  # [k]
    index = np.arange(len(counts))
    while (left := total - int(alloc.sum())) != 0:
        movable = alloc < caps if left > 0 else alloc > 1  # [k]
        behind = (shares - alloc) if left > 0 else (alloc - shares)  # [k], larger = moved first
        order = np.lexsort((index, -behind))
        chosen = order[movable[order]][:abs(left)]
        if not len(chosen):
            raise ValueError(f"cannot share {total} images among counts {counts.tolist()} within caps {caps.tolist()}")
        alloc[chosen] += 1 if left > 0 else -1
    return alloc


def split_counts(counts: NDArray[np.int64], classes: Sequence[str], sizes: Mapping[str, Size],
                 rest: str) -> dict[str, NDArray[np.int64]]:
    """Images of each class in each split: stratified, every class at least once in every split
    but an oracle pool.

    Args:
        counts: labelled images per class, ``[k]``.
        sizes: the sized splits (of ``FILL_ORDER``), each a number of images or a share.
        rest: the split that takes the images left over: "pool" (it may lack a class) or
            "labelled" (the seed set, beside a separate pool).
    Returns:
        ``{split: [k] images per class}``, in ``FILL_ORDER`` then ``rest``; the rows sum to ``counts``.
    Raises:
        BadInput: a class with fewer images than splits that need it (naming the class), or
            sizes that leave nothing for ``rest``.
    """
    full = [s for s in SPLITS if s in sizes or s == rest == "labelled"]  # the splits that hold every class
    needed = len(full)
    small = [f"{c!r} has {m}" for c, m in zip(classes, counts.tolist()) if m < needed]
    if small:
        held = ", ".join(SPLIT_NAMES[s] for s in full[:-1]) + f" and {SPLIT_NAMES[full[-1]]}"
        raise BadInput(f"too few labelled images: class {', class '.join(small)}, and every class needs at least "
                       f"{needed}, one for each of {held}. Add images, or leave the class out")
    k, n = len(classes), int(counts.sum())
    totals = {split: split_total(sizes[split], n) for split in FILL_ORDER if split in sizes}
    for split, total in totals.items():
        if total < k:
            raise BadInput(f"--{split}: {sizes[split]} gives {total} images, too few for one of each of the {k} "
                           "classes")
    least_rest = k if rest == "labelled" else 1
    if n - sum(totals.values()) < least_rest:
        asked = " + ".join(f"{totals[s]} ({s})" for s in totals)
        raise BadInput(f"{asked} of the {n} labelled images leave fewer than {least_rest} for {SPLIT_NAMES[rest]}: "
                       f"make {', '.join(f'--{s}' for s in totals)} smaller")
    remaining = counts.astype(np.int64)  # a copy
    result: dict[str, NDArray[np.int64]] = {}
    later = needed
    for split, total in totals.items():
        later -= 1
        result[split] = proportional(total, counts, remaining - later)  # keep one of each class for each later split
        remaining = remaining - result[split]
    result[rest] = remaining
    return result


def assign_splits(labels: NDArray[np.int64], counts: Mapping[str, NDArray[np.int64]],
                  rng: np.random.Generator) -> NDArray[np.object_]:
    """The split of each image: per class, a shuffle of its images cut into runs of ``counts``.

    Args:
        labels: class index of each image, ``[n]``, in a stable order (image_id order).
        counts: ``{split: [k] images per class}`` as ``split_counts`` returns, summing to the classes' sizes.
    Returns:
        ``[n]`` split names.
    """
    splits = np.empty(len(labels), dtype=object)
    for c in range(len(next(iter(counts.values())))):
        members = np.flatnonzero(labels == c)  # [n_c]
        members = members[rng.permutation(len(members))]
        start = 0
        for split, per_class in counts.items():
            splits[members[start:start + per_class[c]]] = split
            start += int(per_class[c])
    return splits


def default_budget(pool_size: int) -> int:
    return int(min(MAX_BUDGET, max(1, math.floor(BUDGET_SHARE * pool_size))))


# --- the inputs ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Listing:
    """The images of one input, sorted by image_id."""

    source: str  # the folder or manifest, as the user named it
    image_ids: NDArray[np.int64]  # [n]
    uris: NDArray[np.object_]  # [n] absolute local paths or URIs
    labels: NDArray[np.object_] | None  # [n] class names; None for an unlabelled pool
    notes: tuple[str, ...] = ()  # what was left out, for the summary

    def __len__(self) -> int:
        return len(self.image_ids)


def examples(values: Sequence[Any], limit: int = 3) -> str:
    return ", ".join(str(v) for v in list(values)[:limit]) + (", ..." if len(values) > limit else "")


def counted(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def check_listing(source: str, image_ids: list[int], uris: list[str], labels: list[str] | None,
             notes: tuple[str, ...] = ()) -> Listing:
    """Refuse an image listed twice or an id used twice, then sort by image_id."""
    twice = [uri for uri, n in Counter(uris).items() if n > 1]
    if twice:
        raise BadInput(f"{source} lists {counted(len(twice), 'image')} more than once, e.g. {examples(twice)}: list "
                       "every image once")
    first: dict[int, str] = {}
    clashes: dict[int, str] = {}
    for image_id, uri in zip(image_ids, uris):
        if image_id in first and image_id not in clashes:
            clashes[image_id] = f"{image_id} ({first[image_id]} and {uri})"
        first.setdefault(image_id, uri)
    if clashes:
        raise BadInput(f"{source}: {counted(len(clashes), 'image_id')} used by more than one image, e.g. "
                       f"{examples(list(clashes.values()), 2)}: every image needs an id of its own")
    order = np.argsort(np.asarray(image_ids, np.int64), kind="stable")
    return Listing(source, np.asarray(image_ids, np.int64)[order], np.asarray(uris, object)[order],
                   None if labels is None else np.asarray(labels, object)[order], notes)


def _list_folder(path: str, labelled: bool) -> Listing:
    rel_paths, all_uris = folder_files(path)
    uri_of = dict(zip(rel_paths, all_uris))
    images = [r for r in rel_paths if r.lower().endswith(IMAGE_SUFFIXES)]
    others = [r for r in rel_paths if not r.lower().endswith(IMAGE_SUFFIXES)]
    notes = (f"left out {counted(len(others), 'file')} of {path} not named as images ({', '.join(IMAGE_SUFFIXES)}), "
             f"e.g. {examples(others)}",) if others else ()
    if not images:
        raise BadInput(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    labels = None
    if labelled:
        loose = [r for r in images if "/" not in r]
        if loose:
            raise BadInput(f"{path}: {counted(len(loose), 'image')} outside a class subfolder, e.g. "
                           f"{examples(loose)}: put every image in the subfolder of its class "
                           f"({path.rstrip('/')}/CLASS/IMAGE)")
        labels = [r.split("/")[0] for r in images]
    return check_listing(path, [stable_id(r) for r in images], [uri_of[r] for r in images], labels, notes)


def read_manifest_file(path: str, fs: pafs.FileSystem, inner: str, columns: Sequence[str] | None = None) -> pa.Table:
    """A CSV or Parquet manifest; of a Parquet one only those of ``columns`` it has (None: all)."""
    try:
        if path.lower().endswith(".csv"):
            with fs.open_input_stream(inner) as stream:
                return pacsv.read_csv(stream, convert_options=pacsv.ConvertOptions(
                    column_types={"uri": pa.string(), "label": pa.string()}, strings_can_be_null=True))
        if columns is not None:
            names = pq.read_schema(inner, filesystem=fs).names
            columns = [c for c in columns if c in names]
        return pq.read_table(inner, filesystem=fs, columns=columns)
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadInput(f"{path} cannot be read as a {'CSV' if path.lower().endswith('.csv') else 'Parquet'} "
                       f"manifest: {exc}") from None


def class_names(labels: pa.ChunkedArray) -> list[str | None]:
    """Labels as class names: strings as they are, whole numbers (pandas writes floats) as '0', '1'."""
    whole = whole_numbers(labels.combine_chunks())
    labels = labels if whole is None else whole
    names = labels.cast(pa.string()).to_pylist()
    return [None if n is None or not n.strip() else n.strip() for n in names]


def manifest_images(path: str, table: pa.Table) -> tuple[list[str], list[str], list[int]]:
    """A manifest's rows: each ``uri`` as written, as a path or URI to read (relative to the
    manifest's folder; ``a/../a.jpg`` is ``a.jpg``), and its ``image_id`` (a stable hash of the
    uri as written where the manifest has none). ``BadInput`` for a row without a uri or an id."""
    written = table["uri"].cast(pa.string()).to_pylist()
    empty = [i + 1 for i, u in enumerate(written) if u is None or not u.strip()]
    if empty:
        raise BadInput(f"{path}: {counted(len(empty), 'row')} without a uri, e.g. data rows {examples(empty)}")
    base = manifest_base(path)
    uris = [os.path.normpath(u) if not storage.is_uri(u) else u
            for u in (resolve_path(w.strip(), base) for w in written)]
    if "image_id" not in table.column_names:
        return written, uris, [stable_id(w.strip()) for w in written]
    ids = table["image_id"]
    if ids.null_count or not pa.types.is_integer(ids.type):
        raise BadInput(f"{path}: image_id must be a whole number in every row, got type {ids.type} with "
                       f"{ids.null_count} empty rows")
    return written, uris, ids.cast(pa.int64()).to_pylist()


def _read_manifest(path: str, labelled: bool) -> Listing:
    fs, inner = storage.resolve(path)
    table = read_manifest_file(path, fs, inner)
    wanted = ["uri", "label"] if labelled else ["uri"]
    missing = [c for c in wanted if c not in table.column_names]
    if missing:
        raise BadInput(f"{path} has no {' or '.join(missing)} column (it has {table.column_names}): a manifest of "
                       f"{'labelled images needs uri,label' if labelled else 'pool images needs uri'} and may have "
                       "image_id")
    written, uris, image_ids = manifest_images(path, table)
    labels = None
    notes: tuple[str, ...] = ()
    if labelled:
        labels = class_names(table["label"])
        unlabelled = [w for w, name in zip(written, labels) if name is None]
        if unlabelled:
            raise BadInput(f"{path}: {counted(len(unlabelled), 'image')} without a label, e.g. "
                           f"{examples(unlabelled)}: every labelled image needs its class name (unlabelled ones "
                           "belong in --pool)")
    elif "label" in table.column_names:
        notes = (f"the label column of {path} is not used: people label the pool (label.mode = \"human\")",)
    return check_listing(path, image_ids, uris, labels, notes)


def read_images(path: str, labelled: bool) -> Listing:
    """The images of a folder (a subfolder per class when ``labelled``) or a CSV/Parquet manifest.

    Ids: a manifest's ``image_id`` column, else a stable hash of its uri as written; in a folder, a
    stable hash of the path relative to it (as ``sources.list_folder`` gives).
    """
    try:
        fs, inner = storage.resolve(path)
        kind = fs.get_file_info(inner).type
    except OSError as exc:  # an unknown scheme, a bucket without credentials
        raise MissingInput(f"{path} cannot be read: {exc}") from None
    if kind == pafs.FileType.NotFound:
        raise MissingInput(f"{path} does not exist")
    if kind == pafs.FileType.Directory:
        return _list_folder(path, labelled)
    if not path.lower().endswith(MANIFEST_SUFFIXES):
        raise BadInput(f"{path} is neither a folder of images nor a manifest ({', '.join(MANIFEST_SUFFIXES)})")
    return _read_manifest(path, labelled)


def check_disjoint(labelled: Listing, pool: Listing) -> None:
    """Refuse a pool that holds a labelled image, or shares an id with one."""
    shared = sorted(set(labelled.uris.tolist()) & set(pool.uris.tolist()))
    if shared:
        raise BadInput(f"the pool {pool.source} holds {len(shared)} of the labelled images of {labelled.source}, e.g. "
                       f"{examples(shared)}: an image is either labelled or in the pool")
    common, at_labelled, at_pool = np.intersect1d(labelled.image_ids, pool.image_ids, return_indices=True)
    if len(common):
        clashes = [f"{i} ({labelled.uris[a]} and {pool.uris[b]})" for i, a, b in zip(common, at_labelled, at_pool)]
        raise BadInput(f"the pool {pool.source} and the labelled images {labelled.source} share "
                       f"{counted(len(common), 'image_id')}, e.g. {examples(clashes, 2)}: give the pool's images "
                       "ids of their own (an image_id column, or other paths relative to the pool folder)")


# --- the run ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class PrepareConfig:
    """What ``raysal prepare`` is asked to do; every default in one place."""

    labelled: str  # a folder with a subfolder per class, or a CSV/Parquet manifest (uri,label[,image_id])
    out: str = "run"  # a local folder for the manifests and config.toml
    pool: str = ""  # a separate unlabelled pool (folder or manifest); "" = the rest of the labelled images
    labelled_size: Size | None = None  # None: SEED_SHARE beside an oracle pool; beside --pool, the rest
    val_size: Size = 0.1  # enough to watch training without taking many images from the seed set
    test_size: Size = 0.2  # as many as the seed set: the accuracy every round reports
    seed: int = 0  # the split's shuffle, and the run's weight init
    model: str = "small_cnn"  # small_cnn | hub | inception_v3 | keras
    handle: str = ""  # model = hub: a TF Hub handle or SavedModel folder
    weights: str = ""  # model = inception_v3: a local weights file ("" = random init)
    model_path: str = ""  # model = keras: the Keras model file (model.path)
    model_use: str = ""  # model = keras: model.use ("" = its default)
    input_size: int | None = None  # None: 32 for small_cnn, 299 (the article's) for hub, inception_v3; keras: needed
    budget: int | None = None  # None: a tenth of the pool, 1 to 500
    force: bool = False  # overwrite an existing config.toml in ``out``

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise BadInput(f"--model: {self.model!r} is not one of {', '.join(MODELS)}")
        for option, value, model in (("--handle", self.handle, "hub"), ("--weights", self.weights, "inception_v3"),
                                     ("--model-path", self.model_path, "keras"),
                                     ("--model-use", self.model_use, "keras")):
            if value and self.model != model:
                raise BadInput(f"{option}: only with --model {model}, not --model {self.model}")
        if self.model == "hub" and not self.handle:
            raise BadInput("--handle: --model hub needs a TF Hub handle or a local SavedModel folder")
        if self.model == "keras" and not self.model_path:
            raise BadInput("--model-path: --model keras needs the Keras model file")
        if self.model == "keras" and self.input_size is None:
            raise BadInput("--input-size: --model keras needs the side of the square images your model takes "
                           "(e.g. 224)")
        if self.pool and self.labelled_size is not None:
            raise BadInput("--labelled: beside --pool the seed set is every labelled image not in val or test; "
                           "size --val and --test instead")
        if self.budget is not None and self.budget < 1:
            raise BadInput(f"--budget: must be at least 1 image, got {self.budget}")
        if storage.is_uri(self.out):
            raise BadInput(f"--out: {self.out} is a URI; the run's files are written to a local folder (its "
                           "manifests may point at s3:// images, and --state may be on S3)")

    @property
    def rest(self) -> str:
        return "labelled" if self.pool else "pool"

    @property
    def sizes(self) -> dict[str, Size]:
        sizes = {"test": self.test_size, "val": self.val_size}
        if not self.pool:
            sizes["labelled"] = SEED_SHARE if self.labelled_size is None else self.labelled_size
        return sizes

    @property
    def pretrained(self) -> bool:
        return self.model in ("hub", "keras") or (self.model == "inception_v3" and bool(self.weights))


def model_table(cfg: PrepareConfig) -> dict[str, Any]:
    table: dict[str, Any] = {"kind": cfg.model}
    size = cfg.input_size or DEFAULT_INPUT_SIZE.get(cfg.model)
    if size is not None:
        table["input_size"] = size
    if cfg.model == "hub":  # a local SavedModel folder, or a URL resolved through the hub cache
        table["handle"] = storage.absolute(cfg.handle)  # a URL stays as it is
    if cfg.model == "inception_v3" and cfg.weights:
        table["weights"] = storage.absolute(cfg.weights)
    if cfg.model == "keras":
        table["path"] = storage.absolute(cfg.model_path)
        if cfg.model_use:
            table["use"] = cfg.model_use
    return table


def config_table(cfg: PrepareConfig, classes: Sequence[str], root: str, budget: int) -> dict[str, Any]:
    """The run's config as a nested dict, for ``config.config_from_dict`` and the TOML file."""
    return {
        "name": os.path.basename(os.path.normpath(cfg.out)) or "run",
        "seed": cfg.seed,
        "data": {"classes": list(classes), "root": root,
                 **{split: {"kind": "manifest", "path": f"{split}.parquet"} for split in SPLITS}},
        "model": model_table(cfg),
        "train": dict(PRETRAINED if cfg.pretrained else FROM_SCRATCH),
        "select": {"budget": budget, "criterion": "least_confidence"},
        "label": {"mode": "human" if cfg.pool else "oracle"},
    }


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def to_toml(table: Mapping[str, Any], comments: Mapping[str, str] | None = None, prefix: str = "") -> str:
    """A nested dict as TOML: a table's values, then its sub-tables; ``comments`` by dotted table name."""
    comments = comments or {}
    lines = [f"{key} = {_toml_value(value)}" for key, value in table.items() if not isinstance(value, Mapping)]
    for key, value in table.items():
        if isinstance(value, Mapping):
            name = f"{prefix}{key}"
            note = f"  # {comments[name]}" if name in comments else ""
            lines += ["", f"[{name}]{note}", to_toml(value, comments, f"{name}.").strip("\n")]
    return "\n".join(lines).strip("\n") + "\n"


@dataclass(frozen=True)
class Plan:
    """A prepared run, not yet written: its manifests, config and what to tell the user."""

    cfg: PrepareConfig
    classes: tuple[str, ...]
    counts: dict[str, NDArray[np.int64]]  # split -> [k] labelled images per class; a human pool: [0] * k
    pool_size: int
    manifests: dict[str, pa.Table]  # split -> image_id, uri[, label]
    config: dict[str, Any]  # as ``config_table`` gives it
    config_text: str  # config.toml: the config with a header and a comment per split
    notes: tuple[str, ...]

    @property
    def config_path(self) -> str:
        return os.path.join(self.cfg.out, CONFIG_FILE)


def _manifest(listing: Listing, keep: NDArray[np.bool_] | None, with_labels: bool) -> pa.Table:
    keep = np.ones(len(listing), bool) if keep is None else keep
    columns = {"image_id": pa.array(listing.image_ids[keep], pa.int64()),
               "uri": pa.array(listing.uris[keep].tolist(), pa.string())}
    if with_labels:
        columns["label"] = pa.array(listing.labels[keep].tolist(), pa.string())
    return pa.table(columns)


def plan_run(cfg: PrepareConfig) -> Plan:
    """Read the inputs and split them; nothing is written.

    Raises:
        MissingInput: an input that does not exist or cannot be read.
        BadInput: anything that must not become a run, with the file or option and examples.
    """
    labelled = read_images(cfg.labelled, labelled=True)
    pool = read_images(cfg.pool, labelled=False) if cfg.pool else None
    if pool is not None:
        check_disjoint(labelled, pool)
    classes, labels = np.unique(labelled.labels.astype(str), return_inverse=True)  # sorted class names
    if len(classes) < 2:
        raise BadInput(f"{labelled.source}: all {len(labelled)} images are of class {str(classes[0])!r}; active "
                       "learning needs at least 2 classes")
    counts = split_counts(np.bincount(labels, minlength=len(classes)), classes.tolist(), cfg.sizes, cfg.rest)
    splits = assign_splits(labels, counts, np.random.default_rng(cfg.seed))
    manifests = {split: _manifest(labelled, splits == split, with_labels=True) for split in counts}
    if pool is not None:
        manifests["pool"] = _manifest(pool, None, with_labels=False)
        counts["pool"] = np.zeros(len(classes), np.int64)
    pool_size = manifests["pool"].num_rows
    budget = cfg.budget or default_budget(pool_size)
    table = config_table(cfg, classes.tolist(), storage.absolute(cfg.out), budget)
    described = {f"data.{s}": f"{int(counts[s].sum())} images" for s in SPLITS if s != "pool"}
    described["data.pool"] = (f"{pool_size} images of {pool.source}, labelled by people" if pool is not None
                              else f"{pool_size} images, labelled from the data when selected")
    described["train"] = ("as the article: the new head alone with the backbone frozen, then the whole model at a "
                          "small learning rate" if cfg.pretrained
                          else "a model trained from scratch, as presets/demo.toml: no frozen phase")
    header = (f"# Written by raysal prepare from {cfg.labelled}{f' and the pool {cfg.pool}' if cfg.pool else ''}, "
              f"split with seed {cfg.seed}.\n")
    text = header + to_toml(table, described)
    try:
        config_from_dict(tomllib.loads(text))  # the file as written is what a round will load
    except ConfigError as exc:
        raise BadInput(f"the config it would write is refused: {exc}") from None
    return Plan(cfg, tuple(classes.tolist()), counts, pool_size, manifests, table, text,
                labelled.notes + (pool.notes if pool is not None else ()))


def write_run(plan: Plan) -> None:
    """Write the manifests, then config.toml; each file whole or not at all."""
    out = os.path.expanduser(plan.cfg.out)
    if os.path.exists(os.path.join(out, CONFIG_FILE)) and not plan.cfg.force:
        raise BadInput(f"{plan.config_path} exists: a run may already have started on it. Choose another --out, "
                       "or pass --force to write it again")
    if os.path.exists(out) and not os.path.isdir(out):
        raise BadInput(f"--out: {out} is a file, not a folder")
    os.makedirs(out, exist_ok=True)
    fs = pafs.LocalFileSystem()
    for split, table in plan.manifests.items():
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        storage.write_whole(fs, os.path.abspath(os.path.join(out, f"{split}.parquet")), buffer.getvalue())
    storage.write_whole(fs, os.path.abspath(os.path.join(out, CONFIG_FILE)), plan.config_text.encode())


def prepare(cfg: PrepareConfig) -> Plan:
    """Read, split and write a run; see ``plan_run`` and ``write_run``."""
    plan = plan_run(cfg)
    write_run(plan)
    return plan


# --- the console -----------------------------------------------------------------------------

def round_command(plan: Plan, prog: str) -> str:
    """The command that runs the first round, as the user would type it in the same folder."""
    runner = "raysal round" if prog.startswith("raysal") else "python jobs/round.py"
    state = os.path.join(plan.cfg.out, "state")
    return f"{runner} --config {shlex.quote(plan.config_path)} --state {shlex.quote(state)}"


def format_summary(plan: Plan, prog: str) -> str:
    """What the user reads: images per split and class, the model, and the next command."""
    cfg, k = plan.cfg, len(plan.classes)
    human = bool(cfg.pool)
    shown = list(range(min(k, SUMMARY_CLASSES)))
    width = max(len("class"), *(len(plan.classes[c]) for c in shown))

    def row(name: str, values: Sequence[str]) -> str:
        return f"  {name:<{width}}" + "".join(f"  {v:>8}" for v in values)

    def cells(pick: Any) -> list[str]:
        return [str(int(pick(plan.counts[s]))) for s in SPLITS if s != "pool"] + \
               (["-"] if human else [str(int(pick(plan.counts["pool"])))])

    n_labelled = sum(int(plan.counts[s].sum()) for s in SPLITS)
    lines = [f"{n_labelled} labelled images of {k} classes in {cfg.labelled}, split by class with seed {cfg.seed}:",
             row("class", SPLITS)]
    lines += [row(plan.classes[c], cells(lambda counts: counts[c])) for c in shown]
    if k > len(shown):
        lines.append(f"  ... and {k - len(shown)} more classes")
    lines.append(row("all", cells(np.sum)[:3] + [str(plan.pool_size)]))
    if human:
        lines.append(f"pool: {plan.pool_size} unlabelled images of {cfg.pool}, labelled by people "
                     "(label.mode = \"human\"): a round stops after selecting and writes rounds/000r/to_label.csv "
                     "in its state; once labelled, run it again with --import-labels FILE")
    else:
        lines.append("pool: the rest of the labelled images; a round takes their labels from the data "
                     "(label.mode = \"oracle\")")
    model, train = plan.config["model"], plan.config["train"]
    size = f" at {model['input_size']}x{model['input_size']}" if "input_size" in model else ""
    how = (f"the head trained {train['head_epochs']} epochs, then the whole model {train['finetune_epochs']}"
           if cfg.pretrained else f"trained from scratch, {train['finetune_epochs']} epochs")
    lines.append(f"model: {cfg.model}{size}, {how}; {plan.config['select']['budget']} images selected per round "
                 "(--budget)")
    lines += [f"note: {note}" for note in plan.notes]
    written = [os.path.join(cfg.out, f"{s}.parquet") for s in SPLITS] + [plan.config_path]
    lines += [f"wrote {', '.join(written)}", "", "Run the first round:", f"  {round_command(plan, prog)}"]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None, prog: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     epilog=__doc__[__doc__.index("exit codes:"):],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("labelled", metavar="IMAGES",
                        help="labelled images: a folder with one subfolder per class, or a CSV/Parquet manifest "
                             "with uri,label[,image_id] (local or s3://)")
    parser.add_argument("--pool", default="", metavar="FOLDER|MANIFEST",
                        help="unlabelled images for people to label (label.mode = human); default: hold out the "
                             "rest of the labelled images as the pool, labelled from the data (oracle)")
    parser.add_argument("--out", default=PrepareConfig.out, metavar="DIR",
                        help=f"local folder for the manifests and config.toml (default: {PrepareConfig.out})")
    parser.add_argument("--labelled", metavar="SIZE", dest="labelled_size",
                        help=f"seed set: images (60) or a share of them (default {SEED_SHARE}); not with --pool, "
                             "where the seed set takes what val and test leave")
    parser.add_argument("--val", metavar="SIZE", help=f"validation split (default {PrepareConfig.val_size})")
    parser.add_argument("--test", metavar="SIZE", help=f"test split (default {PrepareConfig.test_size})")
    parser.add_argument("--seed", type=int, default=PrepareConfig.seed, metavar="N",
                        help="the split's shuffle and the run's weight init")
    parser.add_argument("--model", default=PrepareConfig.model, choices=MODELS,
                        help="small_cnn (default, trained from scratch), hub (--handle), inception_v3 "
                             "([--weights]) or keras (--model-path, --input-size)")
    parser.add_argument("--handle", default="", metavar="HANDLE",
                        help="--model hub: TF Hub handle or local SavedModel folder")
    parser.add_argument("--weights", default="", metavar="FILE",
                        help="--model inception_v3: local weights file (default: random init)")
    parser.add_argument("--model-path", default="", metavar="PATH",
                        help="--model keras: your saved Keras model (model.path)")
    parser.add_argument("--model-use", default="", choices=MODEL_USES,
                        help="--model keras: backbone (default: its outputs feed a new Dense head) or classifier "
                             "(its outputs are the classes)")
    parser.add_argument("--input-size", type=int, metavar="PIXELS",
                        help="square image side (default 32 for small_cnn, 299 for hub and inception_v3; "
                             "needed for keras)")
    parser.add_argument("--budget", type=int, metavar="N",
                        help=f"images selected per round (default: a tenth of the pool, at most {MAX_BUDGET})")
    parser.add_argument("--force", action="store_true", help="overwrite an existing config.toml in --out")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, prog: str = "jobs/prepare.py") -> int:
    args = parse_args(argv, prog)
    try:
        sizes = {f"{option}_size": parse_size(text, f"--{option}")
                 for option, text in (("labelled", args.labelled_size), ("val", args.val), ("test", args.test))
                 if text is not None}  # those not given keep PrepareConfig's defaults
        cfg = PrepareConfig(
            labelled=args.labelled, out=args.out, pool=args.pool, **sizes, seed=args.seed, model=args.model,
            handle=args.handle, weights=args.weights, model_path=args.model_path, model_use=args.model_use,
            input_size=args.input_size, budget=args.budget, force=args.force)
        plan = prepare(cfg)
    except MissingInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_MISSING
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(format_summary(plan, prog))
    return EXIT_OK
