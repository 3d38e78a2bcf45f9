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
    rounds/000r/scores/           every pool image's score [and embedding] (Parquet)
    rounds/000r/selection.parquet image_id, uri, score, predicted, rank
    rounds/000r/stop_set.parquet  image_id, predicted: the stopping signal's sample
    rounds/000r/skipped.parquet   image_id, uri, reason
    rounds/000r/to_label.csv      human labelling: the tasks to hand out
    rounds/000r/labelstudio/      the same as Label Studio tasks.json and labeling_config.xml
    rounds/000r/labels.parquet    image_id, label: the selection, labelled (all of it, or what humans labelled)
    rounds/000r/metrics.json      evaluation of the round
    rounds/000r/stages/<stage>.json   commit marker of each stage, written after its outputs
    rounds/000r/round.json        written last: the round is done
    history.json, learning_curve.png  redrawn after each round

A stage's outputs are written first and its marker last, so a crash leaves either a committed
stage or one that is redone from scratch. Every single file is written whole or not at all, and
a folder of several files (a model) is published with a marker written last (``publish_dir``).
While a round holds the lease, every change first asks the lease whether it is still held
(``guard``), so a round that lost it stops before its next commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from raysal.errors import StateError
from raysal.run.store import PUBLISHED, Store  # noqa: F401  (PUBLISHED: a published folder's marker)

STAGES = ("score", "select", "label", "train", "evaluate")
RUN_FILE = "run.json"  # what must not change between rounds
HISTORY_FILE = "history.json"
LEARNING_CURVE_FILE = "learning_curve.png"
LOGS_DIR = "logs"
TRAIN_DIR = "train"  # Ray Train's run storage, and the decoded training sets cached beside it
EMBEDDINGS_DIR = "embeddings"
ROUNDS_DIR = "rounds"
MODELS_DIR = "models"


def _file(name: str) -> property:
    return property(lambda self: f"{self.key}/{name}", doc=f"the round's ``{name}``")


@dataclass(frozen=True)
class RoundFiles:
    """The keys of round ``number``'s files, relative to the state root."""

    number: int

    @property
    def key(self) -> str:
        return f"{ROUNDS_DIR}/{self.number:04d}"

    config = _file("config.json")  # the config the round started with (a resumed round keeps it)
    scores = _file("scores")  # a folder of Parquet files
    selection = _file("selection.parquet")
    skipped = _file("skipped.parquet")
    stop_set = _file("stop_set.parquet")
    to_label = _file("to_label.csv")  # written last when the round waits for human labels
    labels = _file("labels.parquet")
    metrics = _file("metrics.json")
    record = _file("round.json")  # written last: the round is done

    def stage(self, stage: str) -> str:
        """The commit marker of one of the round's stages."""
        return f"{self.key}/stages/{stage}.json"

    def file(self, name: str) -> str:
        """Another file of the round, e.g. Label Studio's (``labelstudio/tasks.json``)."""
        return f"{self.key}/{name}"


def model_key(number: int) -> str:
    return f"{MODELS_DIR}/{number:04d}"


def embeddings_key(digest: str) -> str:
    """The cache entry of the backbone with this digest (``raysal.model.embeddings``)."""
    return f"{EMBEDDINGS_DIR}/{digest}.json"


def train_cache_key(model: int) -> str:
    """Where the decoded training set of model ``model`` is cached, when it does not fit in memory."""
    return f"{TRAIN_DIR}/decoded-{model:04d}"


class RunState(Store):
    """A run's state root and the named transitions on it."""

    @staticmethod
    def round_key(number: int) -> str:
        return RoundFiles(number).key

    @staticmethod
    def model_key(number: int) -> str:
        return model_key(number)

    @staticmethod
    def files(number: int) -> RoundFiles:
        return RoundFiles(number)

    def rounds(self) -> list[int]:
        return self.list_numbers(ROUNDS_DIR)

    def round_record(self, number: int) -> dict[str, Any] | None:
        return self.read_json(RoundFiles(number).record)

    def stage_done(self, number: int, stage: str) -> dict[str, Any] | None:
        return self.read_json(RoundFiles(number).stage(stage))

    def commit_stage(self, number: int, stage: str, record: dict[str, Any]) -> None:
        if stage not in STAGES:
            raise StateError(f"unknown stage {stage!r}")
        earlier = STAGES[: STAGES.index(stage)]
        missing = [s for s in earlier if not self.stage_done(number, s)]
        if missing:
            raise StateError(f"round {number}: cannot commit {stage} before {missing}")
        self.write_json(RoundFiles(number).stage(stage), {**record, "stage": stage})

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
            files = RoundFiles(number)
            key = files.labels if labelled else files.selection
            table = self.read_table(key, ["image_id"])
            if table is None and labelled:  # never guess: its images could be selected and labelled again
                raise StateError(f"round {number}: {self.uri(key)} is missing though its label stage is committed")
            if table is not None:
                parts.append(table["image_id"].to_numpy())
        return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)

    def labels(self, up_to: int) -> pa.Table:
        """``image_id, label`` of every pool image labelled in rounds 1..up_to."""
        tables = [t for n in self.rounds() if n <= up_to
                  for t in [self.read_table(RoundFiles(n).labels)] if t is not None]
        schema = pa.schema([("image_id", pa.int64()), ("label", pa.int64())])
        return pa.concat_tables([t.select(["image_id", "label"]).cast(schema) for t in tables]) if tables \
            else schema.empty_table()
