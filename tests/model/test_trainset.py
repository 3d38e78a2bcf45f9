"""raysal.model.trainset: a training set larger than Ray's object store trains from a Parquet cache; a
small one is materialised as before.

The Ray checks need a Ray whose object store is small (Ray's minimum is 75 MiB), and the test
session's Ray (conftest.py) is another: they run once in a child process, this file run as a
script, which writes what it saw to a JSON file that the tests read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

BUCKET = "raysal-test"  # created by the s3_env fixture (conftest.py)
STORE_MIB = 80  # the child's object store, just above Ray's minimum
SIDE = 128  # 49,152 bytes an image: few rows, so an epoch is a few dozen training steps
LARGE = 2_000  # 98 MB decoded: larger than the whole object store
SMALL = 100  # 5 MB: under half of it
DROPPED_EVERY = 37  # ids that are a multiple of this are dropped, as undecodable images are


# --- the child process ------------------------------------------------------------------------

def _planted(batch: dict, side: int) -> dict:
    """Images whose label is their brightness (dark 0, bright 1), with the id in the first 4 bytes."""
    import numpy as np

    ids = batch["id"][batch["id"] % DROPPED_EVERY != 0]
    labels = (ids % 2).astype(np.int64)
    rng = np.random.default_rng(int(batch["id"][0]))
    base = np.where(labels == 1, 170, 10).astype(np.uint8)[:, None, None, None]
    images = base + rng.integers(0, 60, (len(ids), side, side, 3), dtype=np.uint8)  # [n, s, s, 3]
    images.reshape(len(ids), -1)[:, :4] = ids.astype("<u4").view(np.uint8).reshape(-1, 4)
    return {"image": images, "label": labels}


def _images(n: int) -> Any:
    import ray.data

    return ray.data.range(n, override_num_blocks=max(1, n // 100)).map_batches(
        _planted, fn_kwargs={"side": SIDE}, batch_format="numpy")


def _rows_seen(dataset: Any) -> list[list[int]]:
    """(id, label) of every row the dataset yields, read back from the images."""
    import numpy as np

    seen = []
    for batch in dataset.iter_batches(batch_size=256, batch_format="numpy"):
        images = np.ascontiguousarray(batch["image"]).reshape(len(batch["label"]), -1)
        ids = images[:, :4].copy().view("<u4").ravel()
        seen += [[i, label] for i, label in zip(ids.tolist(), batch["label"].tolist(), strict=True)]
    return sorted(seen)


def _cache_files(cache_uri: str) -> list[str]:
    import pyarrow.fs as pafs

    from raysal import storage

    fs, inner = storage.resolve(cache_uri)
    if fs.get_file_info(inner).type == pafs.FileType.NotFound:
        return []
    return [info.path for info in fs.get_file_info(pafs.FileSelector(inner, recursive=True))
            if info.type == pafs.FileType.File]


def _folder_exists(uri: str) -> bool:
    import pyarrow.fs as pafs

    from raysal import storage

    fs, inner = storage.resolve(uri)
    return fs.get_file_info(inner).type != pafs.FileType.NotFound


def _child(out_path: str, work: str, s3_root: str) -> int:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
    import ray.data
    from ray.data.dataset import MaterializedDataset

    import raysal.model.keras_env  # noqa: F401  (before TensorFlow)
    from raysal.config import load_config
    from raysal.model import train, trainset

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for tests/_models.py
    from _models import save_keras_classifier

    ray.init(address="local", num_cpus=2, object_store_memory=STORE_MIB * 2**20, include_dashboard=False,
             runtime_env={"env_vars": raysal.model.keras_env.worker_env()}, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    # One conv layer of 4 filters: an epoch of 2,000 images takes seconds, not the minute of the small CNN.
    model_path = os.path.join(work, "tiny.h5")
    save_keras_classifier(model_path, "softmax", classes=2, size=SIDE)
    overrides = {"data.classes": ["dark", "bright"], "model.input_size": SIDE, "model.kind": "keras",
                 "model.path": model_path, "model.use": "classifier", "train.num_workers": 1,
                 "train.batch_size": 64, "train.head_epochs": 0, "train.finetune_epochs": 2,
                 "train.finetune_learning_rate": 0.05,
                 "train.in_memory_mb": 0}  # the workers read the cache every epoch, not once
    report: dict[str, Any] = {"store_bytes": ray.cluster_resources()["object_store_memory"]}

    def prepared(n: int, max_rows: int, data: str, cache_uri: str, fit: bool = False,
                 stale: bool = False) -> dict[str, Any]:
        start = time.perf_counter()
        if stale:  # a shard left by a crashed run, with a row of its own
            os.makedirs(os.path.join(cache_uri, "crashed"))
            row = _planted({"id": np.array([10**6 + 1])}, SIDE)
            pq.write_table(pa.table({"image": pa.array([row["image"][0].tobytes()], pa.binary(SIDE * SIDE * 3)),
                                     "label": row["label"]}), os.path.join(cache_uri, "crashed", "old.parquet"))
        case_cfg = load_config("demo", {**overrides, "train.data": data})
        with trainset.prepare_train_set(_images(n), max_rows, case_cfg, cache_uri) as train_set:
            case = {"kept": train_set.kept, "count": train_set.count, "cache_files": len(_cache_files(cache_uri)),
                    "materialised": isinstance(train_set.dataset, MaterializedDataset),
                    "rows": _rows_seen(train_set.dataset)}
            if fit:
                val = _images(200).materialize()
                print(f"trainset child: prepared in {time.perf_counter() - start:.1f} s", file=sys.stderr)
                result = train.train_model(case_cfg, train_set.dataset, val, output_dir=os.path.join(work, "model"),
                                           storage_path=os.path.join(work, "ray-train"), run_name="large")
                case["metrics"] = result.metrics
                case["model_files"] = sorted(os.listdir(result.model_dir))
        case["cache_files_after"] = len(_cache_files(cache_uri))
        case["cache_folder_after"] = _folder_exists(cache_uri)
        print(f"trainset child: {n} images, {data}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
        return case

    report["large"] = prepared(LARGE, LARGE, "auto", os.path.join(work, "cache-large"), fit=True)
    report["small"] = prepared(SMALL, SMALL, "auto", os.path.join(work, "cache-small"))
    report["small_said_large"] = prepared(SMALL, LARGE, "auto", os.path.join(work, "cache-said"), stale=True)
    report["forced_memory"] = prepared(SMALL, LARGE, "memory", os.path.join(work, "cache-forced"))
    if s3_root:
        report["s3"] = prepared(SMALL, SMALL, "cache", f"{s3_root}/train/decoded-0001")

    def lease_lost() -> None:
        raise RuntimeError("the lease was lost")

    held = os.path.join(work, "cache-held")  # the shards of the round that holds the lease now
    os.makedirs(os.path.join(held, "holder"))
    Path(held, "holder", "shard.parquet").write_bytes(b"theirs")
    try:
        cache_cfg = load_config("demo", {**overrides, "train.data": "cache"})
        with trainset.prepare_train_set(_images(SMALL), LARGE, cache_cfg,
                                        held, guard=lease_lost):
            report["guarded"] = "entered"
    except RuntimeError as exc:
        report["guarded"] = str(exc)
    report["guarded_files_after"] = len(_cache_files(held))
    Path(out_path).write_text(json.dumps(report))
    return 0


# --- the tests ------------------------------------------------------------------------------

def expected_rows(n: int) -> list[tuple[int, int]]:
    return [[i, i % 2] for i in range(n) if i % DROPPED_EVERY != 0]  # as JSON gives them back


@pytest.fixture(scope="module")
def seen(s3_env, tmp_path_factory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("trainset")
    out = work / "report.json"
    proc = subprocess.run([sys.executable, __file__, str(out), str(work), f"s3://{BUCKET}/trainset-run"],
                          capture_output=True, text=True, timeout=280, env={**os.environ, **s3_env},
                          cwd=Path(__file__).parent)
    assert proc.returncode == 0 and out.exists(), (proc.stdout + proc.stderr)[-4000:]
    return json.loads(out.read_text())


@pytest.mark.timeout(300)
def test_a_set_larger_than_the_object_store_trains_from_the_cache(seen):
    large = seen["large"]
    assert LARGE * SIDE * SIDE * 3 > seen["store_bytes"] > 0
    assert large["kept"] == "cache" and not large["materialised"] and large["cache_files"] > 1
    want = expected_rows(LARGE)
    assert large["count"] == len(want) and large["rows"] == want  # every image once, with its own label
    # Brightness is the label: a model that read images and labels as written learns it at once.
    assert large["metrics"]["epoch"] == 2 and large["metrics"]["val_accuracy"] >= 0.9, large["metrics"]
    assert "weights.h5" in large["model_files"]
    assert large["cache_files_after"] == 0 and not large["cache_folder_after"]


@pytest.mark.timeout(300)
def test_a_small_set_is_materialised_as_before(seen):
    small = seen["small"]
    assert small["kept"] == "memory" and small["materialised"]
    assert small["count"] == len(expected_rows(SMALL)) and small["rows"] == expected_rows(SMALL)
    assert small["cache_files"] == 0 and small["cache_files_after"] == 0


@pytest.mark.timeout(300)
def test_the_bound_on_rows_decides_train_data_overrides_and_stale_shards_are_dropped(seen):
    want = expected_rows(SMALL)
    said = seen["small_said_large"]  # decided by max_rows; counted as written; a crashed run's shard never read
    assert said["kept"] == "cache" and said["count"] == len(want) and said["rows"] == want
    assert said["cache_files_after"] == 0 and not said["cache_folder_after"]
    forced = seen["forced_memory"]
    assert forced["kept"] == "memory" and forced["materialised"] and forced["rows"] == want


@pytest.mark.timeout(300)
def test_the_cache_can_live_on_s3_and_is_removed_there(seen):
    on_s3 = seen["s3"]
    assert on_s3["kept"] == "cache" and on_s3["cache_files"] >= 1
    assert on_s3["cache_files_after"] == 0 and not on_s3["cache_folder_after"]
    assert on_s3["count"] == len(expected_rows(SMALL)) and on_s3["rows"] == expected_rows(SMALL)


@pytest.mark.timeout(300)
def test_a_round_that_lost_the_lease_leaves_the_cache_alone(seen):
    assert seen["guarded"] == "the lease was lost" and seen["guarded_files_after"] == 1


def test_train_data_is_validated():
    from raysal.config import ConfigError, TrainConfig

    with pytest.raises(ConfigError, match=r"train\.data: 'disk' is not one of \('auto', 'memory', 'cache'\)"):
        TrainConfig(data="disk")
    assert TrainConfig().data == "auto"


if __name__ == "__main__":
    sys.exit(_child(*sys.argv[1:4]))
