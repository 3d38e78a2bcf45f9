"""Turn your labelled images into a ready run: split manifests and the config of its rounds.

    raysal prepare images --out run                          # images/<class>/*.jpg
    raysal prepare labels.csv --pool unlabelled --out run    # people label a separate pool
    raysal prepare images --out run --model hub --handle /models/inception_v3
    raysal prepare --pool unlabelled --classes cat,dog --out run   # a cold start: no labels yet

The labelled images (a folder with one subfolder per class, or a CSV/Parquet manifest with
``uri,label`` and an optional ``image_id``; relative uris are relative to the manifest's folder)
are split by class, with a seeded shuffle, into the seed set (data.labelled), val and test: every
class in every split, in proportion to its share of the images. Without --pool the rest of them
is the pool, labelled from the data when selected (label.mode = "oracle"); with --pool the seed
set takes the rest and people label what a round selects (label.mode = "human"). Only file names
are read, and no image is decoded; beside --pool, the files of the two inputs whose sizes match
are read to compare their bytes (``duplicates.same_files``).

Ids are those ``listing.list_images`` gives (a manifest's image_id column, else a hash of a
folder's path inside it or of a manifest's uri as written), so that a pool's ids are those a
round's folder source and ``raysal pack`` give it. Beside --pool, the labelled images' hashed
ids are hashed in the namespace "labelled" (``LABELLED_IDS``): the labelled folder and the pool
may then both hold cat/0001.jpg, two images with two ids. The pool's ids are as they always
were; only the seed, val and test images of a human run get other ids than a run prepared
before this rule gave them (no selection or label of a round names those).

With no labelled images (a cold start: --pool and --classes alone) the run's seed set, val and
test are of kind "seed": its round 0 selects select.seed_budget typical images of the pool for
people to label, and splits their labels by class as above (``raysal.run.coldstart``).
"""

from __future__ import annotations

import io
import json
import os
import tomllib
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from numpy.typing import NDArray

from raysal import storage
from raysal.config import MODEL_KINDS as MODELS
from raysal.config import ConfigError, config_from_dict
from raysal.data.duplicates import same_files
from raysal.data.listing import Listing, class_names, counted, examples, list_images
from raysal.data.splits import MAX_BUDGET as MAX_BUDGET  # moved to splits; raysal.cli.prepare imports it from here
from raysal.data.splits import SPLITS, Size, assign_splits, default_budget, split_counts
from raysal.data.splits import parse_size as parse_size  # moved to splits; raysal.cli.prepare imports it from here
from raysal.errors import BadInput, MissingInput  # noqa: F401  (raised here; importable from here too)

CONFIG_FILE = "config.toml"
DEFAULT_INPUT_SIZE = {"small_cnn": 32, "hub": 299, "inception_v3": 299}  # keras: the model file's own
SEED_SHARE = 0.2  # the seed set beside an oracle pool: as large as the test split
SUMMARY_CLASSES = 20  # rows of the summary's table before "... and N more classes"
LABELLED_IDS = "labelled"  # beside --pool, the namespace of the labelled images' hashed ids (listing.stable_id)

# A small CNN learns everything from the seed set, as in presets/demo.toml: no frozen phase.
FROM_SCRATCH = {"batch_size": 16, "head_epochs": 0, "finetune_epochs": 10, "finetune_learning_rate": 0.003}
# A pretrained backbone, as in the article: the head alone for 3 epochs, then the whole model for 2.
PRETRAINED = {"batch_size": 32, "head_epochs": 3, "finetune_epochs": 2, "head_learning_rate": 1e-3,
              "finetune_learning_rate": 1e-5}


# --- the inputs ------------------------------------------------------------------------------

def read_images(path: str, labelled: bool, id_namespace: str = "") -> Listing:
    """The images of a folder (a subfolder per class when ``labelled``) or a CSV/Parquet manifest,
    sorted by image_id, with their class names as ``labels`` (None for an unlabelled pool).

    Ids as ``listing.list_images`` gives them: a manifest's ``image_id`` column, else a stable hash
    of its uri as written; in a folder, a stable hash of the path relative to it; those hashes in
    ``id_namespace`` (``LABELLED_IDS`` for the labelled images beside a separate pool).
    """
    needs = "labelled images needs uri,label" if labelled else "pool images needs uri"
    listing = list_images(path, ("uri", "label") if labelled else ("uri",),
                          f"a manifest of {needs} and may have image_id", id_namespace)
    if not labelled:
        notes = listing.notes
        if listing.kind != "folder" and listing.labels is not None:
            notes += (f"the label column of {path} is not used: people label the pool (label.mode = \"human\")",)
        return replace(listing, labels=None, notes=notes).sorted_by_id()
    names = listing.labels.to_pylist() if listing.kind == "folder" else class_names(listing.labels)
    unlabelled = [n for n, name in zip(listing.names.tolist(), names, strict=True) if name is None]
    if unlabelled and listing.kind == "folder":
        raise BadInput(f"{path}: {counted(len(unlabelled), 'image')} outside a class subfolder, e.g. "
                       f"{examples(unlabelled)}: put every image in the subfolder of its class "
                       f"({path.rstrip('/')}/CLASS/IMAGE)")
    if unlabelled:
        raise BadInput(f"{path}: {counted(len(unlabelled), 'image')} without a label, e.g. "
                       f"{examples(unlabelled)}: every labelled image needs its class name (unlabelled ones "
                       "belong in --pool)")
    return replace(listing, labels=pa.array(names, pa.string())).sorted_by_id()


def check_disjoint(labelled: Listing, pool: Listing) -> None:
    """Refuse a pool that holds a labelled image (the same file, or a file with the same bytes),
    or shares an id with one (ids given in manifests' image_id columns)."""
    shared = sorted(set(labelled.uris.tolist()) & set(pool.uris.tolist()))
    if shared:
        raise BadInput(f"the pool {pool.source} holds {len(shared)} of the labelled images of {labelled.source}, e.g. "
                       f"{examples(shared)}: an image is either labelled or in the pool")
    common, at_labelled, at_pool = np.intersect1d(labelled.image_ids, pool.image_ids, return_indices=True)
    if len(common):
        clashes = [f"{i} ({labelled.uris[a]} and {pool.uris[b]})"
                   for i, a, b in zip(common, at_labelled, at_pool, strict=True)]
        raise BadInput(f"the pool {pool.source} and the labelled images {labelled.source} share "
                       f"{counted(len(common), 'image_id')}, e.g. {examples(clashes, 2)}: give the pool's images "
                       "ids of their own in its image_id column")
    same = same_files(labelled.uris.tolist(), pool.uris.tolist())
    if same:
        pairs = [f"{pool_uri} (the bytes of {labelled_uri})" for labelled_uri, pool_uri in same]
        raise BadInput(f"the pool {pool.source} holds {counted(len({p for _, p in same}), 'image')} with the same "
                       f"bytes as labelled images of {labelled.source}, e.g. {examples(pairs, 2)}: an image is "
                       "either labelled or in the pool; remove the copy from one of them")


# --- the run ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class PrepareConfig:
    """What ``raysal prepare`` is asked to do; every default in one place."""

    labelled: str  # a folder with a subfolder per class, or a CSV/Parquet manifest (uri,label[,image_id]); "": none
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
    classes: tuple[str, ...] = ()  # a cold start (no labelled images): the class names people choose from
    seed_budget: int | None = None  # a cold start: images round 0 selects; None: the budget, at least 3 per class

    def __post_init__(self) -> None:
        if not self.labelled:
            self._check_cold_start()
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
        if self.labelled and self.classes:
            raise BadInput("--classes: only for a cold start (no IMAGES); the labelled images name their classes")
        if self.labelled and self.seed_budget is not None:
            raise BadInput("--seed-budget: only for a cold start (no IMAGES), whose round 0 selects the seed set")
        if self.pool and self.labelled_size is not None:
            raise BadInput("--labelled: beside --pool the seed set is every labelled image not in val or test; "
                           "size --val and --test instead")
        if self.budget is not None and self.budget < 1:
            raise BadInput(f"--budget: must be at least 1 image, got {self.budget}")
        if storage.is_uri(self.out):
            raise BadInput(f"--out: {self.out} is a URI; the run's files are written to a local folder (its "
                           "manifests may point at s3:// images, and --state may be on S3)")

    def _check_cold_start(self) -> None:
        if not self.pool:
            raise BadInput("IMAGES: give labelled images, or for a cold start with none, --pool FOLDER and "
                           "--classes a,b,c")
        if len(self.classes) < 2:
            raise BadInput(f"--classes: a cold start needs the names of at least 2 classes (--classes cat,dog), got "
                           f"{list(self.classes)}")
        for name in self.classes:
            if not name or name != name.strip() or "," in name:
                raise BadInput(f"--classes: {name!r} is not a class name (no empty names, commas or outer spaces)")
        if len(set(self.classes)) < len(self.classes):
            raise BadInput(f"--classes: {sorted({c for c in self.classes if self.classes.count(c) > 1})} given twice")
        if self.labelled_size is not None or self.val_size != PrepareConfig.val_size \
                or self.test_size != PrepareConfig.test_size:
            raise BadInput("--labelled, --val, --test: a cold start splits round 0's labels itself (a fifth test, a "
                           "tenth val, the rest the seed set)")
        if self.seed_budget is not None and self.seed_budget < 3 * len(self.classes):
            raise BadInput(f"--seed-budget: at least 3 images per class ({3 * len(self.classes)} for "
                           f"{len(self.classes)}), one each for the seed set, val and test; got {self.seed_budget}")

    @property
    def cold_start(self) -> bool:
        return not self.labelled

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
    seeded = {split: {"kind": "seed"} for split in SPLITS if split != "pool"} if cfg.cold_start else {}
    return {
        "name": os.path.basename(os.path.normpath(cfg.out)) or "run",
        "seed": cfg.seed,
        "data": {"classes": list(classes), "root": root,
                 **{split: seeded.get(split, {"kind": "manifest", "path": f"{split}.parquet"}) for split in SPLITS}},
        "model": model_table(cfg),
        "train": dict(PRETRAINED if cfg.pretrained else FROM_SCRATCH),
        "select": {"budget": budget, "criterion": "least_confidence",
                   **({"seed_budget": seed_budget(cfg, budget), "seed_strategy": "typical"} if cfg.cold_start else {})},
        "label": {"mode": "human" if cfg.pool else "oracle"},
    }


def seed_budget(cfg: PrepareConfig, budget: int) -> int:
    """A cold start's round 0 selects --seed-budget, else a round's budget, at least 3 per class."""
    return cfg.seed_budget if cfg.seed_budget is not None else max(budget, 3 * len(cfg.classes))


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
        columns["label"] = listing.labels.filter(pa.array(keep))
    return pa.table(columns)


def plan_run(cfg: PrepareConfig) -> Plan:
    """Read the inputs and split them; nothing is written.

    Raises:
        MissingInput: an input that does not exist or cannot be read.
        BadInput: anything that must not become a run, with the file or option and examples.
    """
    if cfg.cold_start:
        return _plan_cold_start(cfg)
    labelled = read_images(cfg.labelled, labelled=True, id_namespace=LABELLED_IDS if cfg.pool else "")
    pool = read_images(cfg.pool, labelled=False) if cfg.pool else None
    if pool is not None:
        check_disjoint(labelled, pool)
    classes, labels = np.unique(np.asarray(labelled.labels.to_pylist(), str), return_inverse=True)  # sorted names
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
    _check_config(text)
    return Plan(cfg, tuple(classes.tolist()), counts, pool_size, manifests, table, text,
                labelled.notes + (pool.notes if pool is not None else ()))


def _check_config(text: str) -> None:
    try:
        config_from_dict(tomllib.loads(text))  # the file as written is what a round will load
    except ConfigError as exc:
        raise BadInput(f"the config it would write is refused: {exc}") from None


def _plan_cold_start(cfg: PrepareConfig) -> Plan:
    """A run with a pool and no labels: the pool's manifest, and a config whose seed set, val and
    test round 0 chooses."""
    pool = read_images(cfg.pool, labelled=False)
    k = len(cfg.classes)
    budget = cfg.budget or default_budget(len(pool))
    table = config_table(cfg, cfg.classes, storage.absolute(cfg.out), budget)
    seeds = table["select"]["seed_budget"]
    if seeds > len(pool):
        raise BadInput(f"--seed-budget: round 0 would select {seeds} images, more than the pool's {len(pool)}"
                       + ("" if cfg.seed_budget is not None else f" (at least 3 of each of {k} classes)"))
    described = {f"data.{s}": "a cold start: the images round 0 selects and people label, split by class"
                 for s in SPLITS if s != "pool"}
    described["data.pool"] = f"{len(pool)} images of {pool.source}, labelled by people"
    described["select"] = "round 0 selects seed_budget typical images before any model exists"
    header = f"# Written by raysal prepare for a cold start on the pool {cfg.pool}: no labelled images yet.\n"
    text = header + to_toml(table, described)
    _check_config(text)
    zeros = np.zeros(k, np.int64)
    return Plan(cfg, cfg.classes, {split: zeros for split in SPLITS}, len(pool),
                {"pool": _manifest(pool, None, with_labels=False)}, table, text, pool.notes)


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
