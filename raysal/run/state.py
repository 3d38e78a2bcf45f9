"""The run's state: what each round selected and labelled, its metrics, and the models.

The state root is a local folder or any ``pyarrow.fs`` URI. Layout::

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

import json
import os
import posixpath
import shutil
import uuid
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from numpy.typing import NDArray

from raysal import faults, storage
from raysal.errors import StateError  # noqa: F401  (raised here; importable from here too)

STAGES = ("score", "select", "label", "train", "evaluate")
PUBLISHED = "_published.json"  # written last into a published folder: the files it holds and their sizes


class RunState:
    """A run's state root and the named transitions on it."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/") if storage.is_uri(root) else os.path.abspath(os.path.expanduser(root))
        self.fs, self.base = storage.resolve(self.root)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.guard: Callable[[], None] | None = None  # called before every change (the lease's check)

    # --- paths ---------------------------------------------------------------------------
    def uri(self, *parts: str) -> str:
        """A path Ray and pyarrow can open: a local path, or the root URI joined with parts."""
        return storage.join(self.root, *parts)

    def _path(self, *parts: str) -> str:
        return posixpath.join(self.base, *parts)

    @staticmethod
    def round_key(number: int) -> str:
        return f"rounds/{number:04d}"

    @staticmethod
    def model_key(number: int) -> str:
        return f"models/{number:04d}"

    # --- primitives ----------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        return self.fs.get_file_info(self._path(key)).type != pafs.FileType.NotFound

    def _before_change(self) -> None:
        if self.guard is not None:
            self.guard()

    def write_bytes(self, key: str, data: bytes) -> None:
        self._before_change()
        path = self._path(key)
        self.fs.create_dir(posixpath.dirname(path), recursive=True)
        storage.write_whole(self.fs, path, data)

    def read_bytes(self, key: str) -> bytes | None:
        if not self.exists(key):
            return None
        with self.fs.open_input_stream(self._path(key)) as stream:
            return stream.read()

    def write_json(self, key: str, data: Any) -> None:
        self.write_bytes(key, json.dumps(data, indent=2, sort_keys=True).encode())

    def read_json(self, key: str) -> Any:
        data = self.read_bytes(key)
        return None if data is None else json.loads(data)

    def write_table(self, key: str, table: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        self.write_bytes(key, sink.getvalue().to_pybytes())

    def read_table(self, key: str, columns: list[str] | None = None, filters: Any = None) -> pa.Table | None:
        """A Parquet file, or a folder of them, read whole; ``filters`` (a pyarrow expression)
        keeps matching rows only, as the files stream by."""
        if not self.exists(key):
            return None
        return pq.read_table(self._path(key), filesystem=self.fs, columns=columns, filters=filters)

    def delete_dir(self, key: str) -> None:
        self._before_change()
        if self.exists(key):
            self.fs.delete_dir(self._path(key))

    def publish_dir(self, local_dir: str, key: str) -> None:
        """Publish a finished local folder as ``key``, whole or not at all, replacing what was there.

        An object store has no atomic rename, so the folder's files are copied first and
        ``PUBLISHED`` (the list of files and their sizes) is written last; readers trust a folder
        only with that marker (``is_published``). Replacing starts by deleting the old marker, so a
        crash at any point leaves a folder that readers ignore and the next run publishes again.
        """
        files = {os.path.relpath(os.path.join(d, f), local_dir): os.path.getsize(os.path.join(d, f))
                 for d, _, names in os.walk(local_dir) for f in names}
        marker = json.dumps({"files": files}, indent=2, sort_keys=True).encode()
        self._before_change()
        if self.exists(f"{key}/{PUBLISHED}"):
            self.fs.delete_file(self._path(key, PUBLISHED))
        self.delete_dir(key)
        if self.local:
            parent, name = os.path.split(self._path(key))
            os.makedirs(parent, exist_ok=True)
            for left in os.listdir(parent):  # a copy that a crash left before its rename
                if left.startswith(f"{name}.tmp-"):
                    shutil.rmtree(os.path.join(parent, left), ignore_errors=True)
            tmp = f"{self._path(key)}.tmp-{uuid.uuid4().hex[:8]}"
            shutil.copytree(local_dir, tmp)
            with open(os.path.join(tmp, PUBLISHED), "wb") as f:
                f.write(marker)
            faults.point("publish:files-copied")
            os.replace(tmp, self._path(key))  # a local rename is atomic by itself
            return
        pafs.copy_files(local_dir, self._path(key), source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)
        faults.point("publish:files-copied")
        self.write_bytes(f"{key}/{PUBLISHED}", marker)

    def is_published(self, key: str) -> bool:
        """Whether ``key`` is a folder published whole: its marker is there and lists what is there."""
        marker = self.read_json(f"{key}/{PUBLISHED}")
        if marker is None:
            return False
        for name, size in marker["files"].items():
            info = self.fs.get_file_info(self._path(key, name))
            if info.type != pafs.FileType.File or info.size != size:
                return False
        return True

    def list_numbers(self, key: str) -> list[int]:
        if not self.exists(key):
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self._path(key)))
        return sorted(int(i.base_name) for i in infos if i.type == pafs.FileType.Directory and i.base_name.isdigit())

    # --- the lease's primitive (raysal.run.lease) --------------------------------------------------------------------------
    def _create_exclusive(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist; False if it does. Atomic on local disks and S3."""
        if self.local:
            path = self._path(key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # atomic, and refused when path exists: the file appears whole or not at all
            except FileExistsError:
                return False
            finally:
                os.remove(tmp)
            return True
        if self.root.startswith("s3://"):
            import boto3  # pyarrow has no create-if-absent: S3's conditional PUT is the atomic authority
            from botocore.exceptions import ClientError

            bucket, _, prefix = self.base.partition("/")
            try:
                boto3.client("s3").put_object(Bucket=bucket, Key=posixpath.join(prefix, key), Body=data,
                                              IfNoneMatch="*")
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                    return False
                raise
            return True
        raise StateError(f"state {self.root}: no atomic create on this filesystem, so no safe lock; "
                         "use a local path or s3://")

    # --- rounds ----------------------------------------------------------------------------
    def rounds(self) -> list[int]:
        return self.list_numbers("rounds")

    def round_record(self, number: int) -> dict[str, Any] | None:
        return self.read_json(f"{self.round_key(number)}/round.json")

    def stage_done(self, number: int, stage: str) -> dict[str, Any] | None:
        return self.read_json(f"{self.round_key(number)}/stages/{stage}.json")

    def commit_stage(self, number: int, stage: str, record: dict[str, Any]) -> None:
        if stage not in STAGES:
            raise StateError(f"unknown stage {stage!r}")
        earlier = STAGES[: STAGES.index(stage)]
        missing = [s for s in earlier if not self.stage_done(number, s)]
        if missing:
            raise StateError(f"round {number}: cannot commit {stage} before {missing}")
        self.write_json(f"{self.round_key(number)}/stages/{stage}.json", {**record, "stage": stage})

    def next_stage(self, number: int) -> str | None:
        return next((s for s in STAGES if not self.stage_done(number, s)), None)

    def latest_model(self) -> int | None:
        done = [n for n in self.list_numbers("models") if self.is_published(self.model_key(n))]
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
            key = f"{self.round_key(number)}/{'labels' if labelled else 'selection'}.parquet"
            table = self.read_table(key, ["image_id"])
            if table is None and labelled:  # never guess: its images could be selected and labelled again
                raise StateError(f"round {number}: {self.uri(key)} is missing though its label stage is committed")
            if table is not None:
                parts.append(table["image_id"].to_numpy())
        return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)

    def labels(self, up_to: int) -> pa.Table:
        """``image_id, label`` of every pool image labelled in rounds 1..up_to."""
        tables = [t for n in self.rounds() if n <= up_to
                  for t in [self.read_table(f"{self.round_key(n)}/labels.parquet")] if t is not None]
        schema = pa.schema([("image_id", pa.int64()), ("label", pa.int64())])
        return pa.concat_tables([t.select(["image_id", "label"]).cast(schema) for t in tables]) if tables \
            else schema.empty_table()
