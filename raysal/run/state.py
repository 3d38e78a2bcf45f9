"""The run's state: what each round selected and labelled, its metrics, and the models.

The state root is a local folder or any ``pyarrow.fs`` URI. This module is the one place that
knows where each file lives (``RunState``'s keys and ``RoundFiles``). Layout::

    run.json                      what must not change between rounds (classes, pool, model shape)
    lease/<generation>.json       the lease of the round that runs (raysal.run.lease)
    models/0000/                  round-0 model (model.json + weights.h5 [+ head.npz] + _published.json), trained
                                  on the seed set; model.json has the backbone's digest
    models/000r/                  the model retrained at the end of round r
    embeddings/<digest>.json      which round's scores hold the embeddings of the backbone with that digest
    rounds/000r/config.json       the config the round started with (a resumed round keeps it)
    rounds/000r/g<generation>/    a stage's outputs, in the folder of the lease generation that wrote them:
        scores/                   every pool image's score [and embedding] (Parquet)         (score)
        selection.parquet         image_id, uri, score, predicted, rank                      (select)
        stop_set.parquet          image_id, predicted: the stopping signal's sample          (select)
        skipped.parquet           image_id, uri, reason                                      (select)
        to_label.csv              human labelling: the tasks to hand out                     (select)
        labelstudio/              the same as Label Studio tasks.json and labeling_config.xml (select)
        labels.parquet            image_id, label: the selection, labelled                   (label)
        metrics.json              evaluation of the round                                    (evaluate)
    rounds/000r/labelstudio/      a push's project.json and a pull's export (raysal labelstudio)
    rounds/000r/stages/<stage>.json   commit marker of each stage, created once, naming its generation
    rounds/000r/round.json        written last: the round is done
    history.json, learning_curve.png  redrawn after each round

Fencing: a stage writes its outputs into its own lease generation's folder, then commits by
creating its marker (create-if-absent, the lease's primitive), which names that generation.
Readers follow the committed marker to its generation's folder, so a writer that lost its lease
while paused (a GC pause, a stopped VM) and wrote on when it resumed, unchecked, as Ray
workers do, writes only into its own folder: never read, its commit refused, and the folder
removed by the next holder (``sweep``). A round from before fencing (markers without a
generation) keeps its files where they were, at ``rounds/000r/<name>``.

Every single file is written whole or not at all, and a folder of several files (a model) is
published with a marker written last (``publish_dir``). While a round holds the lease, every
change first asks the lease whether it is still held (``guard``).
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
from numpy.typing import NDArray

from raysal.errors import LeaseLost, StateError
from raysal.labelling import labelstudio
from raysal.run.store import PUBLISHED, Store  # noqa: F401  (PUBLISHED: a published folder's marker)

STAGES = ("score", "select", "label", "train", "evaluate")
RUN_FILE = "run.json"  # what must not change between rounds
HISTORY_FILE = "history.json"
LEARNING_CURVE_FILE = "learning_curve.png"
LOGS_DIR = "logs"
REPORT_DIR = "report"  # the run's HTML report, rewritten by every round (raysal.run.report)
TRAIN_DIR = "train"  # Ray Train's run storage, and the decoded training sets cached beside it
EMBEDDINGS_DIR = "embeddings"
ROUNDS_DIR = "rounds"
MODELS_DIR = "models"
# Which stage writes each of a round's outputs (into its generation's folder).
OUTPUTS = {"scores": "score", "selection.parquet": "select", "skipped.parquet": "select",
           "stop_set.parquet": "select", "to_label.csv": "select", labelstudio.TASKS_FILE: "select",
           labelstudio.CONFIG_FILE: "select", "labels.parquet": "label", "metrics.json": "evaluate",
           "seed_split.parquet": "train"}  # a cold start's round 0 (raysal.run.coldstart)
_GENERATION_DIR = re.compile(r"^g(\d{8})$")
_IN_GENERATION = re.compile(r"^rounds/\d+/g(\d{8})/")


def generation_dir(generation: int) -> str:
    """The folder of a round that holds what lease generation ``generation`` wrote."""
    return f"g{generation:08d}"


def _file(name: str) -> property:
    return property(lambda self: self.file(name), doc=f"the round's ``{name}``")


@dataclass(frozen=True)
class RoundFiles:
    """The keys of round ``number``'s files, relative to the state root.

    A stage's output (``OUTPUTS``) lives in the folder of the generation that committed the
    stage, or, while the stage is not committed, of the generation writing it (``state``'s);
    without a state, or for a round from before fencing, directly in the round's folder.
    """

    number: int
    state: RunState | None = None

    @property
    def key(self) -> str:
        return f"{ROUNDS_DIR}/{self.number:04d}"

    config = _file("config.json")  # the config the round started with (a resumed round keeps it)
    scores = _file("scores")  # a folder of Parquet files
    selection = _file("selection.parquet")
    skipped = _file("skipped.parquet")
    stop_set = _file("stop_set.parquet")
    to_label = _file("to_label.csv")  # written last by a select stage whose round waits for human labels
    labels = _file("labels.parquet")
    metrics = _file("metrics.json")
    seed_split = _file("seed_split.parquet")  # round 0 of a cold start: its labels' split (image_id, label, split)
    record = _file("round.json")  # written last: the round is done

    def stage(self, stage: str) -> str:
        """The commit marker of one of the round's stages."""
        return f"{self.key}/stages/{stage}.json"

    def file(self, name: str) -> str:
        """A file of the round: a stage's output in its generation's folder, anything else (a
        Label Studio push's ``labelstudio/project.json``) in the round's own."""
        stage = OUTPUTS.get(name)
        if stage is None or self.state is None:
            return f"{self.key}/{name}"
        generation = self.state.output_generation(self.number, stage)
        return f"{self.key}/{name}" if generation is None else f"{self.key}/{generation_dir(generation)}/{name}"


def model_key(number: int) -> str:
    return f"{MODELS_DIR}/{number:04d}"


def embeddings_key(digest: str) -> str:
    """The cache entry of the backbone with this digest (``raysal.model.embeddings``)."""
    return f"{EMBEDDINGS_DIR}/{digest}.json"


def train_cache_key(model: int) -> str:
    """Where the decoded training set of model ``model`` is cached, when it does not fit in memory."""
    return f"{TRAIN_DIR}/decoded-{model:04d}"


class RunState(Store):
    """A run's state root and the named transitions on it.

    ``generation``: the lease generation this process writes as, while it holds the lease
    (``raysal.run.rounds`` sets it); None for readers.
    """

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.generation: int | None = None

    @staticmethod
    def round_key(number: int) -> str:
        return RoundFiles(number).key

    @staticmethod
    def model_key(number: int) -> str:
        return model_key(number)

    def files(self, number: int) -> RoundFiles:
        return RoundFiles(number, self)

    def write_bytes(self, key: str, data: bytes) -> None:
        self._check_own(key)
        super().write_bytes(key, data)

    def delete_dir(self, key: str) -> None:
        self._check_own(key)
        super().delete_dir(key)

    def _check_own(self, key: str) -> None:
        """Refuse a change inside another generation's folder: a writer that resolved a key after
        another round committed the stage (its lease check passed just before it paused)."""
        found = _IN_GENERATION.search(key)
        if found and self.generation is not None and int(found.group(1)) != self.generation:
            raise LeaseLost(f"{self.uri(key)} belongs to lease generation {int(found.group(1))}, not to this round's "
                            f"{self.generation}: another round committed this stage; this round stops")

    def output_generation(self, number: int, stage: str) -> int | None:
        """The generation whose folder holds ``stage``'s outputs in round ``number``: the one that
        committed it, else this process's own (it is writing them); None: the round's own folder
        (a round from before fencing, or a reader looking at an uncommitted stage)."""
        marker = self.stage_done(number, stage)
        if marker is not None:
            return marker.get("generation")
        return self.generation

    def rounds(self) -> list[int]:
        return self.list_numbers(ROUNDS_DIR)

    def round_record(self, number: int) -> dict[str, Any] | None:
        return self.read_json(RoundFiles(number).record)

    def stage_done(self, number: int, stage: str) -> dict[str, Any] | None:
        """The commit marker of round ``number``'s ``stage``, or None while it is not committed."""
        return self.read_json(RoundFiles(number).stage(stage))

    def commit_stage(self, number: int, stage: str, record: dict[str, Any]) -> None:
        """Commit a stage whose outputs are written: create its marker, naming this process's
        generation, unless another generation committed it first (then ``LeaseLost``: this
        process wrote as a round that lost the run)."""
        if stage not in STAGES:
            raise StateError(f"unknown stage {stage!r}")
        earlier = STAGES[: STAGES.index(stage)]
        missing = [s for s in earlier if not self.stage_done(number, s)]
        if missing:
            raise StateError(f"round {number}: cannot commit {stage} before {missing}")
        key = RoundFiles(number).stage(stage)
        marker = {**record, "stage": stage, "generation": self.generation}
        self._before_change()
        if not self._create_exclusive(key, json.dumps(marker, indent=2, sort_keys=True).encode()):
            other = self.read_json(key) or {}
            raise LeaseLost(f"round {number}: stage {stage} was committed by generation {other.get('generation')} "
                            f"while this round (generation {self.generation}) was writing it; this round lost the "
                            "run and stops. Its files are never read")
        self.sweep(number)

    def sweep(self, number: int) -> list[str]:
        """Remove the folders of round ``number`` that older generations wrote and no committed
        stage names: what a crashed or paused round left. Only a lease holder sweeps, and only
        below its own generation (a higher one would be a live holder's). Returns what it removed."""
        if self.generation is None:
            return []
        kept = {marker.get("generation") for stage in STAGES for marker in [self.stage_done(number, stage)] if marker}
        infos = self.fs.get_file_info(pafs.FileSelector(self._path(RoundFiles(number).key), allow_not_found=True))
        removed = []
        for info in infos:
            match = _GENERATION_DIR.match(info.base_name)
            if info.type == pafs.FileType.Directory and match and int(match.group(1)) not in kept \
                    and int(match.group(1)) < self.generation:
                self._before_change()
                self.fs.delete_dir(info.path)
                removed.append(posixpath.join(RoundFiles(number).key, info.base_name))
        return removed

    def next_stage(self, number: int) -> str | None:
        return next((s for s in STAGES if not self.stage_done(number, s)), None)

    def latest_model(self) -> int | None:
        done = [n for n in self.list_numbers(MODELS_DIR) if self.is_published(model_key(n))]
        return done[-1] if done else None

    def excluded_ids(self, before: int | None = None) -> NDArray[np.int64]:
        """The ids no round may select again (before round ``before``): those labelled, and every
        one of a selection still waiting for its labels. A selected image that got no label (a
        skipped task) goes back to the pool."""
        parts = []
        for number in self.rounds():
            if before is not None and number >= before:
                continue
            labelled = self.stage_done(number, "label") is not None
            files = self.files(number)
            key = files.labels if labelled else files.selection
            table = self.read_table(key, ["image_id"])
            if table is None and labelled:  # never guess: its images could be selected and labelled again
                raise StateError(f"round {number}: {self.uri(key)} is missing though its label stage is committed")
            if table is not None:
                parts.append(table["image_id"].to_numpy())
        return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)

    def labels(self, up_to: int) -> pa.Table:
        """``image_id, label`` of every pool image labelled in rounds 1..up_to (a cold start's
        round 0 labels its seed set, val and test: ``seed_split``, not this)."""
        tables = [t for n in self.rounds() if 1 <= n <= up_to
                  for t in [self.read_table(self.files(n).labels)] if t is not None]
        schema = pa.schema([("image_id", pa.int64()), ("label", pa.int64())])
        return pa.concat_tables([t.select(["image_id", "label"]).cast(schema) for t in tables]) if tables \
            else schema.empty_table()
