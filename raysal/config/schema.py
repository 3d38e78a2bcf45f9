"""The run configuration's fields: frozen dataclasses, every default visible with the reason
beside it, each checked in ``__post_init__`` with a message that names the field
(``select.budget``) and the bad value. ``raysal.config.loading`` reads them from TOML.
Pure stdlib: no ``ray``, no ``tensorflow``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from raysal.errors import ConfigError  # noqa: F401  (raised here; importable from here too)

SOURCE_KINDS = ("manifest", "folder", "tfds", "digits", "seed")
SEED_STRATEGIES = ("typical", "random")  # a cold start's round 0: raysal.run.coldstart
MODEL_KINDS = ("small_cnn", "hub", "inception_v3", "keras")
MODEL_USES = ("backbone", "classifier")
MODEL_OUTPUTS = ("", "logits", "probs")
PREPROCESS_MODES = ("", "unit", "symmetric", "mean_std")
CRITERION_NAMES = ("least_confidence", "smallest_margin", "entropy", "random", "bald")
# How the budget is chosen from the scores: the registry raysal.selection.strategies.
STRATEGY_NAMES = ("top_k", "power", "softmax", "class_balanced", "diversity")
TRAIN_DATA_MODES = ("auto", "memory", "cache")


def _check(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{where}: {message}")


@dataclass(frozen=True)
class SourceConfig:
    """Where a split's images come from. All kinds yield (image_id, uri or bytes, label)."""

    # manifest | folder | tfds | digits (the offline demo set) | seed (a cold start: the images
    # round 0 selected from the pool and people labelled, split by class; no path)
    kind: str = "manifest"
    path: str = ""  # manifest file, image folder or digits folder; relative to data.root
    rows: str = ""  # "start:stop" slice of the source's rows in its stable order; "" = all
    tfds_name: str = ""  # kind = tfds: dataset name, e.g. "tf_flowers"
    tfds_split: str = ""  # kind = tfds: split with TFDS slicing, e.g. "train[:1000]"
    data_dir: str = ""  # kind = tfds: prepared TFDS data_dir ("" = TFDS default)
    where: str = "source"  # the field path used in error messages, set by the loader

    def __post_init__(self) -> None:
        w = self.where
        _check(self.kind in SOURCE_KINDS, f"{w}.kind", f"{self.kind!r} is not one of {SOURCE_KINDS}")
        if self.kind == "tfds":
            _check(bool(self.tfds_name), f"{w}.tfds_name", "is required when kind = 'tfds'")
            _check(bool(self.tfds_split), f"{w}.tfds_split", "is required when kind = 'tfds'")
        elif self.kind == "seed":
            _check(not self.path and not self.rows, f"{w}.path" if self.path else f"{w}.rows",
                   "is not read when kind = 'seed' (round 0 of a cold start chooses the images)")
        else:
            _check(bool(self.path), f"{w}.path", f"is required when kind = {self.kind!r}")
        if self.rows:
            row_slice(self.rows, f"{w}.rows")


def row_slice(rows: str, where: str = "rows") -> slice:
    """Parse "start:stop" (either side may be empty) into a slice of non-negative bounds."""
    parts = rows.split(":")
    _check(len(parts) == 2, where, f"{rows!r} is not of the form 'start:stop'")
    try:
        start, stop = (int(p) if p.strip() else None for p in parts)
    except ValueError:
        raise ConfigError(f"{where}: {rows!r} has a bound that is not an integer") from None
    _check((start or 0) >= 0 and (stop is None or stop >= 0), where, f"{rows!r} has a negative bound")
    _check(stop is None or stop > (start or 0), where, f"{rows!r} is empty")
    return slice(start, stop)


@dataclass(frozen=True)
class DataConfig:
    classes: tuple[str, ...]  # class names; a label is an index into this tuple
    labelled: SourceConfig  # the labelled seed set the round-0 model trains on
    val: SourceConfig  # validation during training
    test: SourceConfig  # held-out test split
    pool: SourceConfig  # the unlabelled pool to select from
    root: str = ""  # base for relative source paths; "" = <state>/data

    def __post_init__(self) -> None:
        _check(len(self.classes) >= 2, "data.classes", f"needs at least 2 classes, got {list(self.classes)}")
        dupes = sorted({c for c in self.classes if self.classes.count(c) > 1})
        _check(not dupes, "data.classes", f"duplicate class names {dupes}")
        _check(self.pool.kind != "seed", "data.pool.kind", "'seed' names a split of the labels round 0 of a cold "
               "start imports, not a pool: give the pool's images")
        seeded = [s.where for s in (self.labelled, self.val, self.test) if s.kind == "seed"]
        _check(len(seeded) in (0, 3), "data", f"{', '.join(seeded)} of kind 'seed' needs data.labelled, data.val and "
               "data.test all of kind 'seed' (a cold start splits the labels of round 0 into the three)")

    @property
    def cold_start(self) -> bool:
        """Whether the run starts with no labels: round 0 selects a seed set (``raysal.run.coldstart``)."""
        return self.labelled.kind == "seed"


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "small_cnn"  # small_cnn | hub (TF Hub SavedModel) | inception_v3 | keras (your saved Keras model)
    input_size: int = 32  # square side in pixels; 299 for InceptionV3 as in the article
    handle: str = ""  # kind = hub: TF Hub handle, local SavedModel path or cached URL
    path: str = ""  # kind = keras: SavedModel folder, .keras or .h5 file; local or a URI (s3://...)
    # hub, keras: backbone (its outputs feed a new Dropout + Dense head) | classifier (its outputs are the classes)
    use: str = "backbone"
    outputs: str = ""  # use = classifier: logits | probs; "" = the last layer's activation (keras), logits (hub)
    weights: str = ""  # kind = inception_v3: local weights file; "" = random init (no download)
    preprocess: str = ""  # unit [0, 1] | symmetric [-1, 1] | mean_std; "" = symmetric for inception_v3, else unit
    mean: tuple[float, ...] = ()  # preprocess = mean_std: per-channel (R, G, B) mean of pixels / 255
    std: tuple[float, ...] = ()  # preprocess = mean_std: per-channel (R, G, B) std of pixels / 255, each > 0
    dropout: float = 0.2  # before the Dense head (use = backbone)
    # use = backbone: K Dense heads from different initial weights on the same embedding, each
    # trained on its own loss; the model outputs their mean, and bald scores their disagreement
    heads: int = 1
    # kind = keras: load a model whose layers run Python code stored in the file (Lambda layers):
    # that code then runs on the driver and every Ray worker. Only for files whose author you trust.
    trust_code: bool = False

    def __post_init__(self) -> None:
        _check(self.kind in MODEL_KINDS, "model.kind", f"{self.kind!r} is not one of {MODEL_KINDS}")
        _check(8 <= self.input_size <= 1024, "model.input_size", f"{self.input_size} is outside [8, 1024]")
        if self.kind == "inception_v3":
            _check(self.input_size >= 75, "model.input_size", f"InceptionV3 needs >= 75, got {self.input_size}")
        if self.kind == "hub":
            _check(bool(self.handle), "model.handle", "is required when model.kind = 'hub'")
        if self.kind == "keras":
            _check(bool(self.path), "model.path", "is required when model.kind = 'keras'")
        else:
            _check(not self.path, "model.path", f"is only read when model.kind = 'keras', not {self.kind!r}")
        _check(self.use in MODEL_USES, "model.use", f"{self.use!r} is not one of {MODEL_USES}")
        if self.use == "classifier":
            _check(self.kind in ("hub", "keras"), "model.use",
                   f"'classifier' needs a pretrained classifier (model.kind = 'hub' or 'keras'), not {self.kind!r}")
        _check(self.outputs in MODEL_OUTPUTS, "model.outputs", f"{self.outputs!r} is not one of {MODEL_OUTPUTS}")
        _check(not self.outputs or self.use == "classifier", "model.outputs",
               f"is only read when model.use = 'classifier', got {self.outputs!r}")
        _check(self.preprocess in PREPROCESS_MODES, "model.preprocess",
               f"{self.preprocess!r} is not one of {PREPROCESS_MODES}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if self.preprocess == "mean_std":
                _check(len(values) == 3, f"model.{name}",
                       f"needs 3 values (R, G, B) when model.preprocess = 'mean_std', got {list(values)}")
            else:
                _check(not values, f"model.{name}",
                       f"is only read when model.preprocess = 'mean_std', got {list(values)}")
        _check(all(s > 0 for s in self.std), "model.std", f"every value must be > 0, got {list(self.std)}")
        _check(0.0 <= self.dropout < 1.0, "model.dropout", f"{self.dropout} is outside [0, 1)")
        _check(1 <= self.heads <= 32, "model.heads", f"{self.heads} is outside [1, 32]")
        _check(self.heads == 1 or self.use == "backbone", "model.heads",
               f"> 1 needs model.use = 'backbone' (new heads on its features), not {self.use!r}; got {self.heads}")
        _check(not self.trust_code or self.kind == "keras", "model.trust_code",
               f"is only read when model.kind = 'keras', not {self.kind!r}")

    @property
    def pretrained(self) -> bool:
        """Whether the backbone comes with weights (a hub handle, your Keras model, InceptionV3's
        weights file), so that its features mean something before any training."""
        return self.kind in ("hub", "keras") or (self.kind == "inception_v3" and bool(self.weights))

    @classmethod
    def from_dict(cls, table: Mapping[str, Any]) -> ModelConfig:
        """Rebuild from ``asdict`` output or a checkpoint's JSON (lists back to tuples), validated
        like a ``[model]`` table; fields the table lacks (an older checkpoint) take their defaults."""
        from raysal.config.loading import build  # the loader reads the schema: imported when called

        return build(cls, table, "model")


@dataclass(frozen=True)
class TrainConfig:
    num_workers: int = 2  # Ray Train workers (MultiWorkerMirroredStrategy replicas)
    cpus_per_worker: float = 0.5  # fractional: whole CPUs per worker starve Ray Data on small nodes
    gpus_per_worker: float = 0.0  # 1 on GPU nodes
    batch_size: int = 32  # per worker
    head_epochs: int = 3  # backbone frozen, as in the article
    finetune_epochs: int = 2  # whole model trainable, as in the article
    head_learning_rate: float = 1e-3  # Adam
    finetune_learning_rate: float = 1e-5  # small, so fine-tuning does not wreck the backbone
    max_failures: int = 2  # worker-group restarts after a worker dies (a lost node, an OOM kill)
    images_per_worker: int = 2000  # one worker per this many training images, up to num_workers; 0: always num_workers
    in_memory_mb: int = 1024  # a worker keeps its shard in memory across epochs up to this size; larger ones stream
    data: str = "auto"  # where the decoded set waits between epochs: memory (Ray's object store) | cache (Parquet
    # shards in the state, read back each epoch) | auto: memory when it takes at most half of the object store
    # Seconds to wait for the cluster to free (or the autoscaler to add) the workers' CPUs and GPUs
    # before the round stops with exit 3; a line says what is awaited at least every 30 s. 0 = forever.
    resource_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        _check(self.num_workers >= 1, "train.num_workers", f"must be >= 1, got {self.num_workers}")
        _check(self.cpus_per_worker > 0, "train.cpus_per_worker", f"must be > 0, got {self.cpus_per_worker}")
        _check(self.gpus_per_worker >= 0, "train.gpus_per_worker", f"must be >= 0, got {self.gpus_per_worker}")
        _check(self.batch_size >= 1, "train.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.head_epochs >= 0, "train.head_epochs", f"must be >= 0, got {self.head_epochs}")
        _check(self.finetune_epochs >= 0, "train.finetune_epochs", f"must be >= 0, got {self.finetune_epochs}")
        _check(self.head_epochs + self.finetune_epochs >= 1, "train", "head_epochs + finetune_epochs must be >= 1")
        _check(self.max_failures >= 0, "train.max_failures", f"must be >= 0, got {self.max_failures}")
        _check(self.data in TRAIN_DATA_MODES, "train.data", f"{self.data!r} is not one of {TRAIN_DATA_MODES}")
        _check(self.images_per_worker >= 0, "train.images_per_worker", f"must be >= 0, got {self.images_per_worker}")
        _check(self.in_memory_mb >= 0, "train.in_memory_mb", f"must be >= 0, got {self.in_memory_mb}")
        _check(self.resource_timeout_s >= 0, "train.resource_timeout_s",
               f"must be >= 0 seconds (0 waits forever), got {self.resource_timeout_s}")
        for name in ("head_learning_rate", "finetune_learning_rate"):
            value = getattr(self, name)
            _check(0 < value < 1, f"train.{name}", f"{value} is outside (0, 1)")


@dataclass(frozen=True)
class ScoreConfig:
    batch_size: int = 64  # images per model call; fixed so the tf.function traces once
    min_actors: int = 1  # actor pool lower bound
    max_actors: int = 1  # actor pool upper bound: the autoscaler adds actors up to this
    cpus_per_actor: float = 0.5  # leave CPUs for the decode tasks, or the pipeline stalls
    gpus_per_actor: float = 0.0  # 1 on GPU nodes
    decode_cpus: float = 0.5  # per decode task
    decode_threads: int = 2  # libjpeg-turbo and OpenCV release the GIL: threads share a batch's decoding
    calls_per_actor: int = 2  # concurrent batches per actor: one decodes while another runs the model
    top_probs: int = 5  # top classes/probabilities kept per image in the scores file
    xla: bool = False  # compile the model call with XLA (jit_compile): often faster on GPUs
    mixed_precision: bool = False  # float16 compute (mixed_float16): for GPUs with tensor cores
    # Write each image's penultimate-layer embedding (float16, what the head sees) beside its
    # scores. Always on for select.strategy = "diversity" and for a frozen backbone
    # (train.finetune_epochs = 0), whose later rounds rescore from them.
    embeddings: bool = False
    # Rescore the pool from an earlier round's embeddings with the head alone (no decoding, no
    # backbone) when the scoring model's backbone is the one that made them (same weights).
    reuse_embeddings: bool = True
    # Seconds to wait for the cluster to free (or the autoscaler to add) the scoring actors' CPUs
    # and GPUs before the round stops with exit 3; a line says what is awaited at least every 30 s. 0 = forever.
    resource_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        _check(self.resource_timeout_s >= 0, "score.resource_timeout_s",
               f"must be >= 0 seconds (0 waits forever), got {self.resource_timeout_s}")
        _check(self.batch_size >= 1, "score.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.min_actors >= 1, "score.min_actors", f"must be >= 1, got {self.min_actors}")
        _check(self.max_actors >= self.min_actors, "score.max_actors",
               f"{self.max_actors} is below score.min_actors = {self.min_actors}")
        _check(self.cpus_per_actor > 0, "score.cpus_per_actor", f"must be > 0, got {self.cpus_per_actor}")
        _check(self.gpus_per_actor >= 0, "score.gpus_per_actor", f"must be >= 0, got {self.gpus_per_actor}")
        _check(self.decode_cpus > 0, "score.decode_cpus", f"must be > 0, got {self.decode_cpus}")
        _check(self.calls_per_actor >= 1, "score.calls_per_actor", f"must be >= 1, got {self.calls_per_actor}")
        _check(self.decode_threads >= 1, "score.decode_threads", f"must be >= 1, got {self.decode_threads}")
        _check(self.top_probs >= 1, "score.top_probs", f"must be >= 1, got {self.top_probs}")


@dataclass(frozen=True)
class SelectConfig:
    budget: int = 500  # images to label per round, as in the article
    criterion: str = "least_confidence"  # the article's choice
    # top_k: the budget of highest scores (the article). power / softmax: a sample without
    # replacement with probabilities proportional to score^beta / exp(beta * score) (Kirsch et
    # al. 2023), fewer near-duplicates at large budgets; random per (seed, round, image), exact.
    # class_balanced: budget // len(classes) per predicted class, the rest by score (Emam et al. 2021).
    # diversity: the budget spread over the candidates' embeddings by k-center greedy (raysal.selection.diversity).
    strategy: str = "top_k"
    beta: float = 1.0  # the power / softmax sharpness; larger comes closer to top_k
    candidates: int = 4  # diversity: it picks among the candidates x budget best by the criterion
    # Stop labelling once the model's predictions on the pool stop changing: when Cohen's kappa
    # between the last two models' predictions on a fixed sample of the pool (the stop set) is at
    # least this, the round's summary says so. 0: never (the kappa is reported either way).
    # Bloodgood & Vijay-Shanker (2009) stop at 0.99.
    stop_kappa: float = 0.0
    # criterion = "bald": the stochastic passes of the head with dropout on (MC dropout) that
    # estimate each image's disagreement; they run over the embeddings, not the images.
    mc_samples: int = 20
    # A cold start (data.labelled, val and test of kind "seed"): the images round 0 selects for
    # people to label before any model exists, split by class into the seed set, val and test.
    seed_budget: int = 0
    # typical: TypiClust (Hacohen et al. 2022), the most typical image of each of seed_budget
    # clusters of the pool's features; random: a seeded sample of the pool.
    seed_strategy: str = "typical"

    def __post_init__(self) -> None:
        _check(self.budget >= 1, "select.budget", f"must be >= 1, got {self.budget}")
        _check(self.seed_budget >= 0, "select.seed_budget", f"must be >= 0, got {self.seed_budget}")
        _check(self.seed_strategy in SEED_STRATEGIES, "select.seed_strategy",
               f"{self.seed_strategy!r} is not one of {SEED_STRATEGIES}")
        _check(2 <= self.mc_samples <= 1000, "select.mc_samples", f"must be in [2, 1000], got {self.mc_samples}")
        _check(self.strategy in STRATEGY_NAMES, "select.strategy", f"{self.strategy!r} is not one of {STRATEGY_NAMES}")
        _check(self.beta > 0 and math.isfinite(self.beta), "select.beta", f"must be > 0, got {self.beta}")
        _check(self.candidates >= 1, "select.candidates", f"must be >= 1, got {self.candidates}")
        _check(0.0 <= self.stop_kappa <= 1.0, "select.stop_kappa", f"must be in [0, 1], got {self.stop_kappa}")
        _check(self.criterion in CRITERION_NAMES, "select.criterion",
               f"{self.criterion!r} is not one of {CRITERION_NAMES}")


LABEL_MODES = ("oracle", "human")


MULTIPLE_LABELS = ("majority", "refuse")


@dataclass(frozen=True)
class LabelConfig:
    mode: str = "oracle"  # oracle: labels already in the pool source (the article); human: import a file
    # human: a round goes on once this fraction of its selection is labelled; the images left
    # without a label (skipped tasks) go back to the pool
    min_labelled: float = 0.9
    multiple: str = "majority"  # an image labelled more than once: majority (a tie: unlabelled) | refuse the file
    # human, Label Studio tasks: the folder Label Studio serves local files from (its
    # LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT); "" = "/"; local images must be below it
    files_root: str = ""
    presign_expiry_s: int = 7 * 24 * 3600  # s3:// images are shown by presigned URLs valid this long (SigV4's most)

    def __post_init__(self) -> None:
        _check(self.mode in LABEL_MODES, "label.mode", f"{self.mode!r} is not one of {LABEL_MODES}")
        _check(0.0 < self.min_labelled <= 1.0, "label.min_labelled", f"must be in (0, 1], got {self.min_labelled}")
        _check(self.multiple in MULTIPLE_LABELS, "label.multiple", f"{self.multiple!r} is not one of {MULTIPLE_LABELS}")
        _check(1 <= self.presign_expiry_s <= 7 * 24 * 3600, "label.presign_expiry_s",
               f"must be in [1, 604800] (7 days, the longest an S3 presigned URL lasts), got {self.presign_expiry_s}")


@dataclass(frozen=True)
class TrackConfig:
    mlflow: bool = False  # log each round to the MLflow server in MLFLOW_TRACKING_URI (pip install 'raysal[mlflow]')
    mlflow_uri: str = ""  # log each round to this MLflow server (http:// or https://); set, it implies mlflow
    timeout_s: float = 10.0  # each request to the server waits at most this long, with no retry

    def __post_init__(self) -> None:
        _check(not self.mlflow_uri or self.mlflow_uri.startswith(("http://", "https://")), "track.mlflow_uri",
               f"must be an http:// or https:// address of an MLflow tracking server, got {self.mlflow_uri!r}")
        _check(0 < self.timeout_s <= 300, "track.timeout_s", f"must be in (0, 300] seconds, got {self.timeout_s}")


@dataclass(frozen=True)
class Config:
    data: DataConfig  # required: there is no sensible default data set outside the presets
    name: str = "custom"  # shown in summaries and stored with each round
    seed: int = 0  # weight init, shuffling and the random baseline
    model: ModelConfig = field(default_factory=ModelConfig)  # [model]: what scores and is trained
    train: TrainConfig = field(default_factory=TrainConfig)  # [train]: Ray Train workers and epochs
    score: ScoreConfig = field(default_factory=ScoreConfig)  # [score]: the actor pool and decode tasks
    select: SelectConfig = field(default_factory=SelectConfig)  # [select]: criterion, strategy, budget
    label: LabelConfig = field(default_factory=LabelConfig)  # [label]: oracle or human labels
    track: TrackConfig = field(default_factory=TrackConfig)  # [track]: each round in an experiment tracker

    def __post_init__(self) -> None:
        _check(0 <= self.seed < 2**32, "seed", f"must be in [0, 2**32), got {self.seed}")  # numpy's seed range
        if self.data.cold_start:  # every class at least once in each of the seed set, val and test
            least = 3 * len(self.data.classes)
            _check(self.select.seed_budget >= least, "select.seed_budget",
                   f"a cold start (data.labelled of kind 'seed') needs at least 3 images per class, {least} for "
                   f"{len(self.data.classes)} classes, got {self.select.seed_budget}")
        else:
            _check(self.select.seed_budget == 0, "select.seed_budget",
                   f"is only read for a cold start (data.labelled, val and test of kind 'seed'), got "
                   f"{self.select.seed_budget}; set it to 0 or leave it out")
        if self.select.criterion == "bald":  # it samples the Dropout + Dense head(s) raysal adds
            _check(self.model.use == "backbone", "select.criterion",
                   "'bald' needs model.use = 'backbone' (the Dropout + Dense head it samples with dropout on), "
                   f"not {self.model.use!r}")
            _check(self.model.dropout > 0 or self.model.heads > 1, "select.criterion",
                   "'bald' needs model.dropout > 0 (its passes sample the head's dropout; 0.2 is the default) "
                   "or model.heads > 1 (it scores the members' disagreement)")
        if self.model.kind == "hub" and self.model.use == "classifier":
            _check(self.train.head_epochs == 0, "train.head_epochs",
                   f"must be 0 when model.kind = 'hub' and model.use = 'classifier' (a hub classifier has no "
                   f"separate head: train it whole with train.finetune_epochs), got {self.train.head_epochs}")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), round-trippable through ``config_from_dict``."""

        def strip(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: strip(v) for k, v in value.items() if k != "where"}
            if isinstance(value, tuple):
                return list(value)
            return value

        return strip(dataclasses.asdict(self))
