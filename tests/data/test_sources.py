"""raysal.data.sources, raysal.data.manifest and raysal.run.preflight on data made here: folders, manifests,
TFDS, digits. No Ray.

TFDS is never downloaded: splits come from ``tfds.testing.mock_data`` over a data_dir holding the
dataset's metadata (what a prepared data_dir has besides the records), or from a tiny builder
prepared here from in-memory examples.
"""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import raysal.model.keras_env  # noqa: F401  (before TensorFlow)
from raysal.config import SourceConfig, load_config
from raysal.data import sources
from raysal.data.images import decode_image
from raysal.data.listing import manifest_base
from raysal.data.manifest import (
    _conform,
    check_manifest,
    manifest_labels,
    manifest_problems,
    open_manifest,
    read_manifest_table,
    row_groups,
)
from raysal.run import preflight

FLOWERS = ["dandelion", "daisy", "tulips", "sunflowers", "roses"]  # tf_flowers label order
TINY_TFDS = "raysal_tiny_flowers"
TINY_TFDS_EXAMPLES = 12
SPLITS = ("labelled", "val", "test", "pool")

tfds.disable_progress_bar()


def _png(value: int, size: tuple[int, int] = (5, 4)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _write(root, rel: str, data: bytes = b"") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data or _png(len(rel)))


def _write_tfds_metadata(name: str, data_dir: str) -> None:
    """The metadata files of a prepared dataset (dataset_info.json, features.json, labels), no records."""
    builder = tfds.builder(name, data_dir=data_dir)
    os.makedirs(builder.data_dir)
    builder.info.write_to_directory(builder.data_dir)


class RaysalTinyFlowers(tfds.core.GeneratorBasedBuilder):
    """A 12-example, tf_flowers-shaped dataset prepared offline from in-memory images."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(names=FLOWERS),
        }))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(TINY_TFDS_EXAMPLES):
            yield i, {"image": np.full((6, 4, 3), i * 20, np.uint8), "label": i % len(FLOWERS)}


@pytest.fixture(scope="module")
def flowers_metadata_dir(tmp_path_factory) -> str:
    data_dir = str(tmp_path_factory.mktemp("tfds_meta"))
    _write_tfds_metadata("tf_flowers", data_dir)
    return data_dir


@pytest.fixture(scope="module")
def tiny_tfds_dir(tmp_path_factory) -> str:
    data_dir = str(tmp_path_factory.mktemp("tfds_tiny"))
    builder = tfds.builder(TINY_TFDS, data_dir=data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        compute_stats=tfds.download.ComputeStatsMode.SKIP))
    return data_dir


@pytest.fixture()
def no_tfds_download(monkeypatch):
    """Fail the test if anything asks TFDS to download and prepare."""

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"download_and_prepare called for {self.name}")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", refuse)


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory):
    """A data root whose ``digits`` folder was written once by ensure_digits."""
    root = tmp_path_factory.mktemp("data")
    sources.ensure_digits(str(root / "digits"))
    return root


# --- TFDS -----------------------------------------------------------------------------------


def test_tfds_split_under_mock_data(flowers_metadata_dir):
    cfg = SourceConfig(kind="tfds", tfds_name="tf_flowers", tfds_split="train[2:7]",
                       data_dir=flowers_metadata_dir, where="data.pool")
    with tfds.testing.mock_data(num_examples=10, data_dir=flowers_metadata_dir):
        first = sources.source_table(cfg, FLOWERS, root="/unused")
        second = sources.read_tfds_table(cfg, FLOWERS)

    assert first.column_names == ["image_id", "uri", "label", "image_bytes"]
    assert first.schema.field("image_id").type == pa.int64() and first.schema.field("label").type == pa.int64()
    # mock_data yields num_examples rows whatever the slice (its documented behaviour)
    assert first.num_rows == 10
    ids = first["image_id"].to_pylist()
    assert len(set(ids)) == len(ids) and all(i >= 0 for i in ids)
    assert ids == second["image_id"].to_pylist()
    assert all(uri.startswith("tfds://tf_flowers/") for uri in first["uri"].to_pylist())
    assert all(0 <= label < len(FLOWERS) for label in first["label"].to_pylist())
    for data in first["image_bytes"].to_pylist():
        assert decode_image(data, 12).shape == (12, 12, 3)


def test_tfds_prepared_split_slices_with_stable_ids(tiny_tfds_dir, no_tfds_download):
    def read(split: str):
        return sources.read_tfds_table(SourceConfig(kind="tfds", tfds_name=TINY_TFDS, tfds_split=split,
                                                    data_dir=tiny_tfds_dir), FLOWERS)

    whole, part = read("train"), read("train[2:7]")
    assert whole.num_rows == TINY_TFDS_EXAMPLES and part.num_rows == 5
    # an example keeps its id whichever slice reads it
    assert part.select(["image_id", "uri", "label"]) == whole.slice(2, 5).select(["image_id", "uri", "label"])
    assert len(set(whole["image_id"].to_pylist())) == TINY_TFDS_EXAMPLES
    # the bytes are the stored PNGs: example i is a flat image of value 20 * i, label i % 5
    for data, label in zip(whole["image_bytes"].to_pylist(), whole["label"].to_pylist(), strict=True):
        pixels = decode_image(data, 4)
        value = int(pixels[0, 0, 0])
        assert np.all(pixels == value) and value % 20 == 0 and label == (value // 20) % len(FLOWERS)


def test_tfds_classes_must_match_the_dataset_labels(tiny_tfds_dir):
    cfg = SourceConfig(kind="tfds", tfds_name=TINY_TFDS, tfds_split="train", data_dir=tiny_tfds_dir,
                       where="data.val")
    with pytest.raises(sources.SourceError, match="data.val: data.classes"):
        sources.read_tfds_table(cfg, list(reversed(FLOWERS)))


@pytest.mark.timeout(60)
def test_unprepared_tfds_fails_fast_without_downloading(tmp_path, no_tfds_download):
    empty = tmp_path / "tfds"
    empty.mkdir()
    cfg = SourceConfig(kind="tfds", tfds_name="tf_flowers", tfds_split="train[:5]", data_dir=str(empty),
                       where="data.pool")
    with pytest.raises(sources.SourceError, match="tfds build tf_flowers") as info:
        sources.source_table(cfg, FLOWERS, root=str(tmp_path))
    assert "data.pool" in str(info.value) and str(empty) in str(info.value)

    config = load_config("flowers", {f"data.{s}.data_dir": str(empty) for s in SPLITS})
    with pytest.raises(preflight.Unavailable, match="tfds build tf_flowers") as info:
        preflight.check(config, str(tmp_path / "state"))
    assert str(info.value).startswith("data.labelled:")
    assert list(empty.iterdir()) == []  # nothing was written, let alone downloaded


# --- folders --------------------------------------------------------------------------------


@pytest.fixture()
def folder(tmp_path):
    images = tmp_path / "images"
    for rel in ("cat/a.png", "cat/b.png", "dog/c.png", "top.png",
                ".hidden.png", "cat/.DS_Store", ".thumbs/cat.png"):
        _write(images, rel)
    return images


def test_folder_labels_from_class_subfolders(folder):
    table = sources.list_folder(str(folder), ["cat", "dog"], "data.labelled")
    assert table.schema == sources.SOURCE_SCHEMA
    rows = {os.path.relpath(r["uri"], folder): r["label"] for r in table.to_pylist()}
    assert rows == {"cat/a.png": 0, "cat/b.png": 0, "dog/c.png": 1, "top.png": None}  # hidden ones ignored
    assert table["uri"].to_pylist() == sorted(table["uri"].to_pylist())


def test_folder_ids_depend_only_on_the_relative_path(folder, tmp_path):
    def ids(path) -> dict[str, int]:
        table = sources.list_folder(str(path), ["cat", "dog"], "data.pool")
        return {os.path.relpath(r["uri"], path): r["image_id"] for r in table.to_pylist()}

    before = ids(folder)
    assert ids(folder) == before
    assert len(set(before.values())) == len(before)
    _write(folder, "cat/0_first.png")
    _write(folder, "zebra.png")
    after = ids(folder)
    assert set(after) == set(before) | {"cat/0_first.png", "zebra.png"}
    assert {rel: after[rel] for rel in before} == before
    moved = tmp_path / "elsewhere"
    shutil.copytree(folder, moved)
    assert ids(moved) == after


def test_folder_rows_slice(folder):
    whole = sources.list_folder(str(folder), ["cat", "dog"], "data.val")
    cfg = SourceConfig(kind="folder", path="images", rows="1:3", where="data.val")
    part = sources.source_table(cfg, ["cat", "dog"], root=str(folder.parent))
    assert part == whole.slice(1, 2)
    tail = sources.source_table(SourceConfig(kind="folder", path="images", rows="2:"), ["cat", "dog"],
                                root=str(folder.parent))
    assert tail == whole.slice(2)
    with pytest.raises(sources.SourceError, match=r"data.val.rows: '9:12' starts past the source's 4 rows"):
        sources.source_table(SourceConfig(kind="folder", path="images", rows="9:12", where="data.val"),
                             ["cat", "dog"], root=str(folder.parent))


def test_missing_folder_raises(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(sources.SourceError, match="data.test: image folder") as info:
        sources.list_folder(missing, ["cat", "dog"], "data.test")
    assert missing in str(info.value)
    with pytest.raises(sources.SourceError, match="image folder"):
        sources.source_table(SourceConfig(kind="folder", path="nowhere"), ["cat", "dog"], root=str(tmp_path))


# --- manifests ------------------------------------------------------------------------------


def _manifest(tmp_path, **columns) -> str:
    path = str(tmp_path / "manifest.parquet")
    pq.write_table(pa.table(columns), path)
    return path


def test_manifest_string_labels_map_to_indices(tmp_path):
    path = _manifest(tmp_path, image_id=pa.array([7, 3, 9], pa.int32()), uri=["x.png", "y.png", "z.png"],
                     label=["dog", None, "cat"])
    table = read_manifest_table(path, ["cat", "dog"], "data.pool")
    assert table.schema == sources.SOURCE_SCHEMA
    assert table.to_pylist() == [{"image_id": 7, "uri": str(tmp_path / "x.png"), "label": 1},
                                 {"image_id": 3, "uri": str(tmp_path / "y.png"), "label": None},
                                 {"image_id": 9, "uri": str(tmp_path / "z.png"), "label": 0}]


@pytest.mark.parametrize(("manifest", "uri", "expected"), [
    ("/data/pool/manifest.parquet", "img/a.jpg", "/data/pool/img/a.jpg"),
    ("/data/pool/manifest.parquet", "/elsewhere/b.jpg", "/elsewhere/b.jpg"),
    ("s3://bucket/pool/manifest.parquet", "img/a.jpg", "s3://bucket/pool/img/a.jpg"),
    ("s3://bucket/pool/manifest.parquet", "gs://other/c.jpg", "gs://other/c.jpg"),
])
def test_relative_uris_in_a_manifest_are_relative_to_the_manifest(manifest, uri, expected):
    """Never to the working directory of whichever process reads them."""
    table = _conform(pa.table({"image_id": [1], "uri": [uri]}), ["cat", "dog"], "data.pool", manifest_base(manifest))
    assert table["uri"].to_pylist() == [expected]


def test_manifest_without_labels_gets_null_labels(tmp_path):
    path = _manifest(tmp_path, image_id=[1, 2], uri=["a", "b"])
    table = read_manifest_table(path, ["cat", "dog"], "data.pool")
    assert table["label"].to_pylist() == [None, None] and table.schema == sources.SOURCE_SCHEMA


@pytest.mark.parametrize(("columns", "message"), [
    ({"image_id": [1, 2], "uri": ["a", "b"], "label": ["cat", "horse"]}, r"data.pool: labels \['horse'\] are not in"),
    ({"image_id": [1, 2], "uri": ["a", "b"], "label": [0, 2]}, r"data.pool: label indices outside \[0, 2\)"),
    ({"image_id": [1, 2], "label": ["cat", "dog"]}, r"data.pool: manifest .* has neither a uri nor an image_bytes"),
    ({"image_id": [5, 6, 5], "uri": ["a", "b", "c"]}, r"data.pool: duplicate image_id values, e.g. \[5\]"),
], ids=["unknown-class", "index-out-of-range", "no-uri", "duplicate-ids"])
def test_bad_manifest_raises(tmp_path, columns, message):
    path = _manifest(tmp_path, **columns)
    with pytest.raises(sources.SourceError, match=message):
        read_manifest_table(path, ["cat", "dog"], "data.pool")


def test_missing_manifest_raises(tmp_path):
    with pytest.raises(sources.SourceError, match="data.test: manifest .* does not exist"):
        read_manifest_table(str(tmp_path / "absent.parquet"), ["cat", "dog"], "data.test")


def test_manifest_source_with_rows_is_read_and_whole_manifest_is_left_to_ray(tmp_path):
    _manifest(tmp_path, image_id=[10, 11, 12, 13], uri=["a", "b", "c", "d"], label=["cat", "dog", "dog", "cat"])
    part = sources.source_table(SourceConfig(path="manifest.parquet", rows="1:3"), ["cat", "dog"], str(tmp_path))
    assert part["image_id"].to_pylist() == [11, 12] and part["label"].to_pylist() == [1, 1]
    assert sources.source_table(SourceConfig(path="manifest.parquet"), ["cat", "dog"], str(tmp_path)) is None


# --- digits ---------------------------------------------------------------------------------


def test_ensure_digits_writes_images_and_manifest(digits_root):
    from sklearn.datasets import load_digits

    folder = digits_root / "digits"
    table = pq.read_table(folder / sources.DIGITS_MANIFEST)
    assert table.num_rows == 1797
    assert sorted(os.listdir(folder / "images")) == [f"{i:04d}.png" for i in range(1797)]
    ids = table["image_id"].to_pylist()
    assert sorted(ids) == list(range(1797))
    assert set(table["label"].to_pylist()) == set(range(10))

    digits = load_digits()
    row = table.slice(5, 1).to_pylist()[0]
    with Image.open(row["uri"]) as img:
        pixels = np.asarray(img)
    np.testing.assert_array_equal(pixels, (digits.images[row["image_id"]] * (255 / 16)).round())
    assert row["label"] == digits.target[row["image_id"]]


def test_ensure_digits_second_call_does_not_rewrite(digits_root):
    folder = digits_root / "digits"
    manifest = folder / sources.DIGITS_MANIFEST
    image = folder / "images" / "0000.png"
    old_ns = 1_000_000_000 * 10**9
    for path in (manifest, image):
        os.utime(path, ns=(old_ns, old_ns))
    assert sources.ensure_digits(str(folder)) == str(manifest)
    assert manifest.stat().st_mtime_ns == old_ns and image.stat().st_mtime_ns == old_ns


def test_digits_source_rows(digits_root):
    cfg = SourceConfig(kind="digits", path="digits", rows="900:", where="data.pool")
    table = sources.source_table(cfg, [str(i) for i in range(10)], str(digits_root))
    assert table.num_rows == 897 and table.schema == sources.SOURCE_SCHEMA


# --- preflight ------------------------------------------------------------------------------


def test_preflight_demo_passes_and_writes_nothing(digits_root, tmp_path):
    state, fresh_root = tmp_path / "state", tmp_path / "fresh"
    preflight.check(load_config("demo", {"data.root": str(digits_root)}), str(state))
    preflight.check(load_config("demo", {"data.root": str(fresh_root)}), str(state))  # digits not written yet
    assert not state.exists() and not fresh_root.exists()


def test_preflight_refuses_a_pool_slice_past_the_end_before_the_round_starts(digits_root, tmp_path):
    config = load_config("demo", {"data.root": str(digits_root), "data.pool.rows": "99999:"})
    with pytest.raises(sources.SourceError, match=r"^data.pool.rows: '99999:' starts past the source's 1797 rows"):
        preflight.check(config, str(tmp_path / "state"))


def test_preflight_refuses_a_state_that_cannot_be_created(digits_root, tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(preflight.Unavailable, match="^--state: cannot create .* is not a writable folder"):
        preflight.check(load_config("demo", {"data.root": str(digits_root)}), str(tmp_path / "a-file" / "state"))


@pytest.mark.parametrize(("kind", "what"), [("manifest", "manifest file"), ("folder", "image folder")])
def test_preflight_missing_pool_names_the_field(digits_root, tmp_path, kind, what):
    config = load_config("demo", {"data.root": str(digits_root), "data.pool.kind": kind,
                                  "data.pool.path": "missing.parquet"})
    with pytest.raises(preflight.Unavailable, match=f"^data.pool.path: {what} ") as info:
        preflight.check(config, str(tmp_path / "state"))
    assert str(digits_root / "missing.parquet") in str(info.value)


def test_preflight_missing_inception_weights_names_the_field(digits_root, tmp_path):
    config = load_config("demo", {"data.root": str(digits_root), "model.kind": "inception_v3",
                                  "model.input_size": 75, "model.weights": str(tmp_path / "w.h5")})
    with pytest.raises(preflight.Unavailable, match="^model.weights: "):
        preflight.check(config, str(tmp_path / "state"))


@pytest.mark.timeout(60)
def test_preflight_flowers_needs_the_hub_model(flowers_metadata_dir, tmp_path, monkeypatch, no_tfds_download):
    cache = tmp_path / "tfhub_cache"
    cache.mkdir()
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    prepared = {f"data.{s}.data_dir": flowers_metadata_dir for s in SPLITS}
    with pytest.raises(preflight.Unavailable, match="^model.handle: TF Hub model https://tfhub.dev/") as info:
        preflight.check(load_config("flowers", prepared), str(tmp_path / "state"))
    assert str(cache) in str(info.value)

    local_model = tmp_path / "saved_model"
    local_model.mkdir()
    preflight.check(load_config("flowers", {**prepared, "model.handle": str(local_model)}), str(tmp_path / "state"))


# --- manifests in shards --------------------------------------------------------------------


def _shards(folder, *tables, row_group_size: int = 2) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for i, table in enumerate(tables):
        pq.write_table(table, folder / f"part-{i:05d}.parquet", row_group_size=row_group_size)
    return str(folder)


@pytest.mark.parametrize(("sizes", "start", "stop", "expected"), [
    ([[2, 2], [3]], 0, 7, [(0, 0, 0, 2), (0, 1, 0, 2), (1, 0, 0, 3)]),
    ([[2, 2], [3]], 1, 6, [(0, 0, 1, 1), (0, 1, 0, 2), (1, 0, 0, 2)]),
    ([[2, 2], [3]], 4, 5, [(1, 0, 0, 1)]),
    ([[2], [], [3]], 2, 4, [(2, 0, 0, 2)]),
    ([[2, 2]], 4, 4, []),
])
def test_row_groups_cover_exactly_the_slice(sizes, start, stop, expected):
    assert row_groups(sizes, start, stop) == expected


def test_folder_and_glob_of_shards_are_one_manifest_in_name_order(tmp_path):
    first = pa.table({"image_id": [5, 3, 9], "uri": ["a.png", "b.png", "/abs/c.png"], "label": ["cat", "dog", None]})
    second = pa.table({"image_id": [1, 2], "uri": ["d.png", "e.png"], "label": ["dog", "dog"]})
    folder = _shards(tmp_path / "pool", first, second)
    (tmp_path / "pool" / "_SUCCESS").write_text("")  # markers and hidden files are not shards
    (tmp_path / "pool" / ".part-00009.parquet.tmp-1").write_bytes(b"partial")
    whole = read_manifest_table(folder, ["cat", "dog"], "data.pool")
    assert whole["image_id"].to_pylist() == [5, 3, 9, 1, 2]
    assert whole["label"].to_pylist() == [0, 1, None, 1, 1]
    assert whole["uri"].to_pylist()[:3] == [f"{folder}/a.png", f"{folder}/b.png", "/abs/c.png"]  # the folder's
    by_glob = read_manifest_table(f"{folder}/part-*.parquet", ["cat", "dog"], "data.pool")
    assert by_glob.equals(whole)
    only_second = read_manifest_table(f"{folder}/*1.parquet", ["cat", "dog"], "data.pool")
    assert only_second["image_id"].to_pylist() == [1, 2]
    part = sources.source_table(SourceConfig(path="pool", rows="2:4", where="data.pool"), ["cat", "dog"],
                                str(tmp_path))
    assert part["image_id"].to_pylist() == [9, 1]  # the slice crosses the shards, in their name order
    labels = manifest_labels(SourceConfig(path="pool", rows="1:4", where="data.pool"), ["cat", "dog"],
                                     str(tmp_path))
    assert labels.to_pylist() == [1, None, 1]


def test_packed_manifest_keeps_the_bytes_and_names_rows_without_a_uri(tmp_path):
    folder = _shards(tmp_path / "pool", pa.table({"image_id": [4, 8], "image_bytes": [_png(1), _png(2)]}))
    table = read_manifest_table(folder, ["cat", "dog"], "data.pool")
    assert table.column_names == ["image_id", "uri", "label", "image_bytes"]
    assert table["image_bytes"].to_pylist() == [_png(1), _png(2)]
    assert table["uri"].to_pylist() == [f"{folder}/part-00000.parquet#image_id=4",
                                        f"{folder}/part-00000.parquet#image_id=8"]
    assert table["label"].null_count == 2


def test_a_slice_of_a_packed_manifest_is_left_to_ray_but_checked_now(tmp_path):
    _shards(tmp_path / "pool", pa.table({"image_id": [1, 2, 3], "uri": ["a", "b", "c"],
                                         "image_bytes": [_png(1), _png(2), _png(3)]}))
    assert sources.source_table(SourceConfig(path="pool", rows="0:2"), ["cat", "dog"], str(tmp_path)) is None
    with pytest.raises(sources.SourceError, match=r"^data.pool.rows: '3:' starts past the source's 3 rows"):
        sources.source_table(SourceConfig(path="pool", rows="3:", where="data.pool"), ["cat", "dog"], str(tmp_path))


@pytest.mark.parametrize(("columns", "problem"), [
    ({"image_id": [1], "label": ["cat"]}, "neither a uri nor an image_bytes column"),
    ({"image_id": [1], "image_bytes": ["not bytes"]}, "image_bytes is string, not binary"),
    ({"image_id": ["x"], "image_bytes": [b"..."]}, "image_id is string, not an integer"),
    ({"uri": ["a"], "image_bytes": [b"..."]}, "no image_id column"),
    ({"image_id": [1], "uri": [3]}, "uri is int64, not a string"),
    ({"image_id": [1], "uri": ["a"], "label": [[1, 2]]}, "label is list<item: int64>, not a class index"),
], ids=["no-uri-no-bytes", "bytes-as-string", "string-ids", "no-ids", "numeric-uri", "list-label"])
def test_manifest_problems_name_the_column(columns, problem):
    assert problem in "; ".join(manifest_problems(pa.table(columns).schema))


def _packed_pool_config(root, path: str):
    return load_config("demo", {"data.root": str(root), "data.classes": ["cat", "dog"], "data.pool.kind": "manifest",
                                "data.pool.path": path, "data.pool.rows": ""})


@pytest.mark.parametrize(("tables", "message"), [
    ([pa.table({"image_id": [1, 2], "label": ["cat", "dog"]})],
     r"^data.pool: manifest .*pool has neither a uri nor an image_bytes column"),
    ([pa.table({"image_id": [1], "uri": ["a"], "image_bytes": [b"x"]}),
      pa.table({"image_id": [2], "uri": ["b"], "image_bytes": ["x"]})],
     r"^data.pool: manifest .*pool \(shard .*part-00001.parquet\) has image_bytes is string, not binary"),
    ([pa.table({"image_id": [1], "uri": ["a"], "image_bytes": [b"x"]}), pa.table({"image_id": [2], "uri": ["b"]})],
     r"^data.pool: manifest .*: shard .*part-00001.parquet has the columns image_id \(number\), uri \(string\), "
     r".*part-00000.parquet image_id \(number\), uri \(string\), image_bytes \(binary\): every shard needs the "
     r"same ones"),
    ([pa.table({"image_id": [1], "uri": ["a"], "label": [0]}),
      pa.table({"image_id": [2], "uri": ["b"], "label": ["cat"]})],
     r"^data.pool: manifest .*: shard .*part-00001.parquet has the columns image_id \(number\), uri \(string\), "
     r"label \(string\), .*label \(number\): every shard needs the same ones, of the same kinds"),
], ids=["no-uri-no-bytes", "bytes-as-string-in-one-shard", "shards-differ", "labels-of-two-kinds"])
def test_preflight_refuses_a_bad_packed_manifest(tmp_path, tables, message):
    _shards(tmp_path / "pool", *tables)
    with pytest.raises(preflight.Refused, match=message):
        preflight.check(_packed_pool_config(tmp_path, "pool"), str(tmp_path / "state"))
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(("path", "message"), [
    ("empty", r"^data.pool.path: manifest folder .*empty holds no Parquet file"),
    ("pool/*.pq", r"^data.pool.path: manifest glob .*pool/\*.pq matches no Parquet file"),
])
def test_preflight_names_a_packed_manifest_that_is_not_there(tmp_path, path, message):
    (tmp_path / "empty").mkdir()
    _shards(tmp_path / "pool", pa.table({"image_id": [1], "image_bytes": [b"x"]}))
    with pytest.raises(preflight.Unavailable, match=message):
        preflight.check(_packed_pool_config(tmp_path, path), str(tmp_path / "state"))


def test_preflight_reads_the_labels_of_packed_splits(tmp_path):
    """A seed set packed in shards is checked for its classes like any other: its labels alone."""
    _shards(tmp_path / "seed", pa.table({"image_id": [1, 2, 3], "label": ["cat", "cat", "cat"],
                                         "image_bytes": [_png(1), _png(2), _png(3)]}))
    cfg = load_config("demo", {"data.root": str(tmp_path), "data.classes": ["cat", "dog"],
                               "data.labelled.kind": "manifest", "data.labelled.path": "seed",
                               "data.labelled.rows": ""})
    with pytest.raises(preflight.Refused, match=r"data.labelled: every image is of class 'cat'"):
        preflight.check_split_classes(cfg, str(tmp_path))


def test_shards_that_differ_in_width_read_as_one_manifest(tmp_path):
    """int32 and int64 ids, int and float labels (a missing label makes pandas write floats), an
    all-null label column: one manifest, whole or sliced across the shards."""
    folder = _shards(tmp_path / "pool",
                     pa.table({"image_id": pa.array([1, 2], pa.int32()), "uri": ["a", "b"], "label": [0, 1]}),
                     pa.table({"image_id": [3, 4], "uri": ["c", "d"], "label": [1.0, None]}),
                     pa.table({"image_id": [5], "uri": ["e"], "label": pa.nulls(1)}))
    manifest = open_manifest(folder, "data.pool")
    check_manifest(manifest, "data.pool")
    part = sources.source_table(SourceConfig(path="pool", rows="1:5", where="data.pool"), ["cat", "dog"],
                                str(tmp_path))
    assert part["image_id"].to_pylist() == [2, 3, 4, 5] and part["label"].to_pylist() == [1, 1, None, None]


def test_a_shard_that_is_not_parquet_is_named(tmp_path):
    folder = _shards(tmp_path / "pool", pa.table({"image_id": [1], "uri": ["a"]}))
    (tmp_path / "pool" / "part-00001.parquet").write_bytes(b"half an upload")
    with pytest.raises(preflight.Refused, match=r"^data.pool: shard .*part-00001.parquet of manifest .*pool is not a "
                                                r"readable Parquet file"):
        preflight.check(_packed_pool_config(tmp_path, "pool"), str(tmp_path / "state"))
    with pytest.raises(sources.SourceError, match=r"part-00001.parquet of manifest"):
        read_manifest_table(folder, ["cat", "dog"], "data.pool")


def test_a_glob_star_stays_within_one_folder(tmp_path):
    _shards(tmp_path / "pool", pa.table({"image_id": [1], "uri": ["a"]}))
    _shards(tmp_path / "pool" / "a" / "b", pa.table({"image_id": [2], "uri": ["b"]}))
    _shards(tmp_path / "pool" / "c", pa.table({"image_id": [3], "uri": ["c"]}))
    found = read_manifest_table(str(tmp_path / "pool" / "*" / "part-*.parquet"), ["cat"], "data.pool")
    assert found["image_id"].to_pylist() == [3]  # pool/c/, not pool/a/b/ nor pool/ itself
