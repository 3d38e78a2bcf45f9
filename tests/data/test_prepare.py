"""raysal.data.prepare and raysal.data.splits (split arithmetic, inputs, refusals, the CLI), preflight's
class checks, and the "Your own images" page's commands (docs/own-images.md) run end to end."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from raysal.cli.prepare import main
from raysal.config import config_from_dict, load_config
from raysal.data import prepare, sources, splits
from raysal.data.listing import stable_id
from raysal.data.prepare import BadInput, MissingInput, PrepareConfig
from raysal.run import preflight

from _jobs import round_file

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"


def _touch(root: Path, rel: str) -> Path:
    """An image file by name only: prepare decodes none (beside a pool it compares the bytes of files
    of the same size, so each file's bytes are its own)."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(f"not decoded: {path}".encode())
    return path


def _folder(root: Path, sizes: dict[str, int]) -> Path:
    for name, n in sizes.items():
        for i in range(n):
            _touch(root, f"{name}/{i:03d}.png")
    return root


def _read(run: Path, split: str) -> pa.Table:
    return pq.read_table(run / f"{split}.parquet")


def _by_class(table: pa.Table) -> dict[str, int]:
    names, counts = np.unique(np.asarray(table["label"].to_pylist()), return_counts=True)
    return dict(zip(names.tolist(), counts.tolist(), strict=True))


# --- split arithmetic ------------------------------------------------------------------------

@pytest.mark.parametrize(("total", "counts", "expected"), [
    pytest.param(10, [50, 30, 20], [5, 3, 2], id="exact-shares"),
    pytest.param(7, [50, 30, 20], [4, 2, 1], id="largest-remainder"),  # 3.5, 2.1, 1.4
    pytest.param(3, [100, 3, 3], [1, 1, 1], id="at-least-one-each"),  # 2.83, 0.08, 0.08
    pytest.param(4, [10, 10, 10], [2, 1, 1], id="ties-to-the-lower-class"),
])
def test_proportional_known_answers(total, counts, expected) -> None:
    counts = np.array(counts)
    assert splits.proportional(total, counts, counts).tolist() == expected


def test_split_counts_by_shares_oracle_pool() -> None:
    split = splits.split_counts(np.array([100, 120, 80]), ["cat", "dog", "fox"],
                                 {"test": 0.2, "val": 0.1, "labelled": 0.2}, rest="pool")
    assert {s: c.tolist() for s, c in split.items()} == {
        "test": [20, 24, 16], "val": [10, 12, 8], "labelled": [20, 24, 16], "pool": [50, 60, 40]}
    assert list(split) == ["test", "val", "labelled", "pool"]


def test_split_counts_sizes_equal_the_same_shares() -> None:
    counts, classes = np.array([37, 91, 12]), ["a", "b", "c"]
    by_share = splits.split_counts(counts, classes, {"test": 0.25, "val": 0.1, "labelled": 0.3}, rest="pool")
    by_size = splits.split_counts(counts, classes, {"test": 35, "val": 14, "labelled": 42}, rest="pool")
    assert {s: c.tolist() for s, c in by_share.items()} == {s: c.tolist() for s, c in by_size.items()}
    assert [int(by_size[s].sum()) for s in ("test", "val", "labelled")] == [35, 14, 42]


def test_split_counts_every_class_in_every_split_even_a_small_one() -> None:
    counts = np.array([3, 50, 200])
    split = splits.split_counts(counts, ["rare", "b", "c"], {"test": 0.2, "val": 0.1, "labelled": 0.2}, rest="pool")
    assert {s: c.tolist() for s, c in split.items()} == {
        "test": [1, 10, 40], "val": [1, 5, 19], "labelled": [1, 10, 40], "pool": [0, 25, 101]}


def test_split_counts_seed_set_takes_the_rest_beside_a_separate_pool() -> None:
    split = splits.split_counts(np.array([100, 120, 80]), ["cat", "dog", "fox"], {"test": 0.2, "val": 0.1},
                                 rest="labelled")
    assert {s: c.tolist() for s, c in split.items()} == {
        "test": [20, 24, 16], "val": [10, 12, 8], "labelled": [70, 84, 56]}


def test_split_counts_refuses_a_class_too_small_naming_it() -> None:
    with pytest.raises(BadInput, match=r"^too few labelled images: class 'fox' has 2, and every class needs at "
                                       r"least 3, one for each of the seed set, val and test\. Add images"):
        splits.split_counts(np.array([40, 40, 2]), ["cat", "dog", "fox"], {"test": 0.2, "val": 0.1, "labelled": 0.2},
                             rest="pool")


@pytest.mark.parametrize(("sizes", "message"), [
    ({"test": 2, "val": 0.1, "labelled": 0.2}, r"^--test: 2 gives 2 images, too few for one of each of the 3 classes"),
    ({"test": 0.5, "val": 0.3, "labelled": 0.2}, r"^30 \(test\) \+ 18 \(val\) \+ 12 \(labelled\) of the 60 labelled "
                                                  r"images leave fewer than 1 for the pool"),
])
def test_split_counts_refuses_sizes_that_do_not_fit(sizes, message) -> None:
    with pytest.raises(BadInput, match=message):
        splits.split_counts(np.array([20, 20, 20]), ["a", "b", "c"], sizes, rest="pool")


def test_assign_splits_is_seeded_and_cuts_each_class_by_its_counts() -> None:
    labels = np.repeat([0, 1], [10, 6])  # [16]
    counts = {"test": np.array([2, 1]), "val": np.array([3, 2]), "pool": np.array([5, 3])}
    first = splits.assign_splits(labels, counts, np.random.default_rng(7))
    assert first.tolist() == splits.assign_splits(labels, counts, np.random.default_rng(7)).tolist()
    assert first.tolist() != splits.assign_splits(labels, counts, np.random.default_rng(8)).tolist()
    for split, per_class in counts.items():
        assert [int(np.sum((first == split) & (labels == c))) for c in (0, 1)] == per_class.tolist()


@pytest.mark.parametrize(("text", "expected"), [("60", 60), ("0.2", 0.2)])
def test_parse_size(text, expected) -> None:
    assert splits.parse_size(text, "--val") == expected and type(splits.parse_size(text, "--val")) is type(expected)


@pytest.mark.parametrize(("text", "message"), [
    ("0", r"^--val: must be at least 1 image, got 0"),
    ("1.5", r"^--val: a share must be between 0 and 1, got 1.5"),
    ("ten", r"^--val: 'ten' is neither a number of images \(60\) nor a share \(0.2\)"),
])
def test_parse_size_refuses(text, message) -> None:
    with pytest.raises(BadInput, match=message):
        splits.parse_size(text, "--val")


# --- inputs ----------------------------------------------------------------------------------

def test_folder_run_is_stratified_reproducible_and_lists_every_image_once(tmp_path) -> None:
    images = _folder(tmp_path / "images", {"dog": 120, "cat": 100, "fox": 80})
    _touch(images, "notes.txt")
    _touch(images, ".hidden/x.png")
    plan = prepare.prepare(PrepareConfig(labelled=str(images), out=str(tmp_path / "run"), seed=3))
    run = tmp_path / "run"
    tables = {s: _read(run, s) for s in splits.SPLITS}
    assert {s: _by_class(t) for s, t in tables.items()} == {
        "labelled": {"cat": 20, "dog": 24, "fox": 16}, "val": {"cat": 10, "dog": 12, "fox": 8},
        "test": {"cat": 20, "dog": 24, "fox": 16}, "pool": {"cat": 50, "dog": 60, "fox": 40}}
    every = pa.concat_tables(tables.values())
    expected_uris = sorted(str(p) for p in images.glob("[!.]*/*.png"))  # hidden folders left out
    assert sorted(every["uri"].to_pylist()) == expected_uris  # each image once, absolute
    for uri, image_id, label in zip(*(every[c].to_pylist() for c in ("uri", "image_id", "label")), strict=True):
        rel = os.path.relpath(uri, images)
        assert image_id == stable_id(rel) and label == rel.split("/")[0]
    assert plan.notes == (f"left out 1 file of {images} not named as images (.jpg, .jpeg, .png, .bmp, .gif, "
                          ".webp, .tif, .tiff), e.g. notes.txt",)

    cfg = load_config(str(run / "config.toml"))
    assert cfg.data.classes == ("cat", "dog", "fox") and cfg.data.root == str(run) and cfg.seed == 3
    assert (cfg.data.pool.kind, cfg.data.pool.path, cfg.label.mode) == ("manifest", "pool.parquet", "oracle")
    assert (cfg.model.kind, cfg.model.input_size, cfg.train.head_epochs, cfg.train.finetune_epochs) == \
        ("small_cnn", 32, 0, 10)
    assert cfg.select.budget == 15  # a tenth of the pool
    preflight.check(cfg, str(run / "state"))

    again = prepare.plan_run(PrepareConfig(labelled=str(images), out=str(tmp_path / "run2"), seed=3))
    other = prepare.plan_run(PrepareConfig(labelled=str(images), out=str(tmp_path / "run3"), seed=4))
    assert again.manifests["test"].equals(tables["test"])
    assert not other.manifests["test"].equals(tables["test"])


def test_csv_manifest_labels_by_name_and_relative_uris(tmp_path) -> None:
    rows = [(f"pics/{name}{i}.jpg", name) for name in ("zebra", "ant") for i in range(5)]
    manifest = tmp_path / "data" / "labels.csv"
    manifest.parent.mkdir()
    manifest.write_text("uri,label\n" + "".join(f"{u},{label}\n" for u, label in rows))
    plan = prepare.plan_run(PrepareConfig(labelled=str(manifest), out=str(tmp_path / "run"), labelled_size=2,
                                          val_size=2, test_size=2))
    assert plan.classes == ("ant", "zebra")
    every = pa.concat_tables(plan.manifests.values())
    found = zip(every["uri"].to_pylist(), every["image_id"].to_pylist(), every["label"].to_pylist(), strict=True)
    assert sorted(found) == sorted((str(tmp_path / "data" / u), stable_id(u), label) for u, label in rows)
    assert {s: t.num_rows for s, t in plan.manifests.items()} == {"test": 2, "val": 2, "labelled": 2, "pool": 4}


def test_parquet_manifest_keeps_its_image_ids_and_whole_number_labels(tmp_path) -> None:
    uris = [f"s3://bucket/img/{i}.png" for i in range(12)]
    pq.write_table(pa.table({"image_id": pa.array(range(100, 112), pa.int64()), "uri": uris,
                             "label": pa.array([float(i % 2) for i in range(12)])}), tmp_path / "m.parquet")
    plan = prepare.plan_run(PrepareConfig(labelled=str(tmp_path / "m.parquet"), out=str(tmp_path / "run"),
                                          labelled_size=2, val_size=2, test_size=2))
    assert plan.classes == ("0", "1")
    every = pa.concat_tables(plan.manifests.values())
    found = zip(every["image_id"].to_pylist(), every["uri"].to_pylist(), strict=True)
    assert sorted(found) == list(zip(range(100, 112), uris, strict=True))


def test_separate_pool_makes_a_human_run(tmp_path) -> None:
    images = _folder(tmp_path / "images", {"cat": 10, "dog": 10})
    pool = _folder(tmp_path / "unlabelled", {"batch1": 7})
    code = main([str(images), "--pool", str(pool), "--out", str(tmp_path / "run")])
    assert code == 0
    cfg = load_config(str(tmp_path / "run" / "config.toml"))
    assert cfg.label.mode == "human"
    pool_table = _read(tmp_path / "run", "pool")
    assert pool_table.column_names == ["image_id", "uri"]
    assert sorted(pool_table["uri"].to_pylist()) == sorted(str(p) for p in pool.glob("*/*.png"))
    assert {s: _by_class(_read(tmp_path / "run", s)) for s in ("labelled", "val", "test")} == {
        "labelled": {"cat": 7, "dog": 7}, "val": {"cat": 1, "dog": 1}, "test": {"cat": 2, "dog": 2}}
    assert cfg.select.budget == 1


def test_models_and_their_training(tmp_path) -> None:
    def model_and_train(**kw):
        return {k: prepare.config_table(PrepareConfig(labelled="x", **kw), ["a", "b"], "/r", 5)[k]
                for k in ("model", "train")}

    hub = model_and_train(model="hub", handle="/models/inception")
    assert hub == {"model": {"kind": "hub", "input_size": 299, "handle": "/models/inception"},
                   "train": prepare.PRETRAINED}
    keras = model_and_train(model="keras", model_path="m.keras", model_use="classifier", input_size=224)
    # a relative local file is written absolute: the config works from any directory
    assert keras["model"] == {"kind": "keras", "input_size": 224, "path": os.path.abspath("m.keras"),
                              "use": "classifier"}
    assert keras["train"] == {"batch_size": 32, "head_epochs": 3, "finetune_epochs": 2, "head_learning_rate": 1e-3,
                              "finetune_learning_rate": 1e-5}
    assert model_and_train(model="inception_v3")["train"] == prepare.FROM_SCRATCH  # random init
    assert model_and_train(model="inception_v3", weights="w.h5")["model"] == {
        "kind": "inception_v3", "input_size": 299, "weights": os.path.abspath("w.h5")}
    assert model_and_train()["model"] == {"kind": "small_cnn", "input_size": 32}


# --- refusals --------------------------------------------------------------------------------

def _main(tmp_path, *args: str, capsys) -> tuple[int, str]:
    code = main([*args], prog="raysal prepare")
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_refuses_repeated_image_ids_naming_the_file_and_examples(tmp_path, capsys) -> None:
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"image_id": [1, 2, 3, 2] * 3, "uri": [f"{i}.png" for i in range(12)],
                             "label": ["a", "b"] * 6}), path)
    code, out = _main(tmp_path, str(path), "--out", str(tmp_path / "run"), capsys=capsys)
    assert code == 2
    assert (f"error: {path}: 3 image_ids used by more than one image, e.g. 2 ({tmp_path}/1.png and {tmp_path}/3.png), "
            f"1 ({tmp_path}/0.png and {tmp_path}/4.png), ...: every image needs an id of its own") in out
    assert not (tmp_path / "run").exists()


def test_refuses_an_image_listed_twice(tmp_path, capsys) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("uri,label\n" + "".join(f"{i % 9}.png,{'ab'[i % 2]}\n" for i in range(10)))
    code, out = _main(tmp_path, str(path), capsys=capsys)
    assert code == 2 and f"error: {path} lists 1 image more than once, e.g. {tmp_path}/0.png: list every" in out


def test_refuses_a_pool_that_holds_labelled_images(tmp_path, capsys) -> None:
    images = _folder(tmp_path / "images", {"cat": 5, "dog": 5})
    pool = tmp_path / "pool.csv"
    pool.write_text("uri\nimages/cat/003.png\nnew/1.png\n")
    code, out = _main(tmp_path, str(images), "--pool", str(pool), "--out", str(tmp_path / "run"), capsys=capsys)
    assert code == 2
    assert (f"error: the pool {pool} holds 1 of the labelled images of {images}, e.g. {images}/cat/003.png: an "
            "image is either labelled or in the pool") in out


def test_refuses_a_pool_sharing_ids_with_the_labelled_images(tmp_path, capsys) -> None:
    """Ids a manifest gives in its image_id column are its own: a clash is refused."""
    labelled = tmp_path / "labels.csv"
    labelled.write_text("image_id,uri,label\n" + "".join(f"{i},l{i}.png,{'ab'[i % 2]}\n" for i in range(10)))
    pool = tmp_path / "pool.csv"
    pool.write_text("image_id,uri\n7,p7.png\n11,p11.png\n")
    code, out = _main(tmp_path, str(labelled), "--pool", str(pool), "--out", str(tmp_path / "run"), capsys=capsys)
    assert code == 2
    assert (f"error: the pool {pool} and the labelled images {labelled} share 1 image_id, e.g. 7 ({tmp_path}/l7.png "
            f"and {tmp_path}/p7.png): give the pool's images ids of their own in its image_id column") in out


def test_labelled_and_pool_folders_may_both_hold_cat_0001(tmp_path) -> None:
    """The same path in both folders is two images with two ids: the labelled ones are hashed in
    their own namespace; the pool's stay those a round's folder source and raysal pack give."""
    images = _folder(tmp_path / "images", {"cat": 10, "dog": 10})
    pool = _folder(tmp_path / "pool", {"cat": 3, "dog": 3})  # cat/000.png ... again: other images
    assert main([str(images), "--pool", str(pool), "--out", str(tmp_path / "run")]) == 0
    run = tmp_path / "run"
    labelled = pa.concat_tables(_read(run, s) for s in ("labelled", "val", "test"))
    for uri, image_id in zip(labelled["uri"].to_pylist(), labelled["image_id"].to_pylist(), strict=True):
        assert image_id == stable_id(os.path.relpath(uri, images), prepare.LABELLED_IDS) != stable_id(
            os.path.relpath(uri, images))
    pooled = _read(run, "pool")
    assert sorted(pooled["image_id"].to_pylist()) == sorted(
        sources.list_folder(str(pool), ["cat", "dog"], "data.pool")["image_id"].to_pylist())
    assert set(labelled["image_id"].to_pylist()).isdisjoint(pooled["image_id"].to_pylist())
    assert len(set(labelled["uri"].to_pylist()) | set(pooled["uri"].to_pylist())) == 26
    cfg = load_config(str(run / "config.toml"))
    assert cfg.label.mode == "human"
    preflight.check(cfg, str(run / "state"))  # a round may start on it


def test_refuses_a_pool_holding_the_bytes_of_a_labelled_image_naming_both(tmp_path, capsys) -> None:
    """A copy of a labelled image in the pool, under any name, is refused; a file of the same size
    and the same first 64 KiB that differs after them is another image."""
    images = _folder(tmp_path / "images", {"cat": 10, "dog": 10})
    pool = _folder(tmp_path / "pool", {"new": 4})
    big = np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8).tobytes()  # past the hashed head
    (images / "cat" / "big.png").write_bytes(big)
    (pool / "new" / "same-head.png").write_bytes(big[:-1] + bytes([big[-1] ^ 1]))
    assert main([str(images), "--pool", str(pool), "--out", str(tmp_path / "run")]) == 0

    shutil.copy(images / "dog" / "003.png", pool / "new" / "renamed.png")
    (pool / "new" / "big-copy.png").write_bytes(big)
    code, out = _main(tmp_path, str(images), "--pool", str(pool), "--out", str(tmp_path / "run2"), capsys=capsys)
    assert code == 2
    assert (f"error: the pool {pool} holds 2 images with the same bytes as labelled images of {images}, e.g. "
            f"{pool}/new/big-copy.png (the bytes of {images}/cat/big.png), {pool}/new/renamed.png (the bytes of "
            f"{images}/dog/003.png): an image is either labelled or in the pool") in out
    assert not (tmp_path / "run2").exists()


def test_refuses_a_class_too_small_naming_it(tmp_path, capsys) -> None:
    images = _folder(tmp_path / "images", {"cat": 20, "dog": 20, "eel": 2})
    code, out = _main(tmp_path, str(images), "--out", str(tmp_path / "run"), capsys=capsys)
    assert code == 2 and "error: too few labelled images: class 'eel' has 2, and every class needs at least 3" in out


@pytest.mark.parametrize(("make", "args", "message"), [
    pytest.param(lambda p: _touch(p, "images/a.png"), [], "images: 1 image outside a class subfolder, e.g. a.png: "
                 "put every image in the subfolder of its class (images/CLASS/IMAGE)", id="loose-image"),
    pytest.param(lambda p: (p / "labels.csv").write_text("uri,label\na.png,cat\nb.png,\n"), [],
                 "labels.csv: 1 image without a label, e.g. b.png", id="missing-label"),
    pytest.param(lambda p: (p / "labels.csv").write_text("path,label\na.png,cat\n"), [],
                 "labels.csv has no uri column (it has ['path', 'label'])", id="no-uri-column"),
    pytest.param(lambda p: _folder(p / "images", {"cat": 9}), [], "images: all 9 images are of class 'cat'",
                 id="one-class"),
    pytest.param(lambda p: _folder(p / "images", {"cat": 9, "dog": 9}), ["--pool", "images", "--labelled", "3"],
                 "--labelled: beside --pool the seed set is every labelled image", id="labelled-with-pool"),
    pytest.param(lambda p: _folder(p / "images", {"cat": 9, "dog": 9}), ["--model", "hub"],
                 "--handle: --model hub needs", id="hub-without-handle"),
    pytest.param(lambda p: _folder(p / "images", {"cat": 9, "dog": 9}), ["--handle", "h"],
                 "--handle: only with --model hub, not --model small_cnn", id="handle-without-hub"),
])
def test_refusals_exit_2_and_write_nothing(tmp_path, capsys, monkeypatch, make, args, message) -> None:
    monkeypatch.chdir(tmp_path)
    make(tmp_path)
    source = "labels.csv" if (tmp_path / "labels.csv").exists() else "images"
    code, out = _main(tmp_path, source, *args, capsys=capsys)
    assert code == 2 and message in out, out
    assert not (tmp_path / "run").exists()


def test_missing_input_exits_3(tmp_path, capsys) -> None:
    code, out = _main(tmp_path, str(tmp_path / "nowhere"), capsys=capsys)
    assert code == 3 and f"error: {tmp_path}/nowhere does not exist" in out
    with pytest.raises(MissingInput):
        prepare.read_images(str(tmp_path / "nowhere.csv"), labelled=False)


def test_an_existing_config_is_kept_without_force(tmp_path, capsys) -> None:
    images = _folder(tmp_path / "images", {"cat": 9, "dog": 9})
    run = tmp_path / "run"
    assert _main(tmp_path, str(images), "--out", str(run), capsys=capsys)[0] == 0
    before = (run / "config.toml").read_text()
    code, out = _main(tmp_path, str(images), "--out", str(run), "--seed", "5", capsys=capsys)
    assert code == 2 and f"{run}/config.toml exists: a run may already have started on it" in out
    assert (run / "config.toml").read_text() == before
    assert _main(tmp_path, str(images), "--out", str(run), "--seed", "5", "--force", capsys=capsys)[0] == 0
    assert load_config(str(run / "config.toml")).seed == 5


def test_jobs_script_is_the_same_command(tmp_path) -> None:
    _folder(tmp_path / "images", {"cat": 4, "dog": 4})

    def run_script(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "python"), str(REPO / "jobs" / "prepare.py"), "images", *args],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)

    refused = run_script("--labelled", "2", "--val", "3", "--test", "3")
    assert refused.returncode == 2 and refused.stderr == (
        "error: 3 (test) + 3 (val) + 2 (labelled) of the 8 labelled images leave fewer than 1 for the pool: make "
        "--test, --val, --labelled smaller\n")
    done = run_script("--labelled", "0.25", "--val", "2", "--test", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("python jobs/round.py --config run/config.toml --state run/state")


def test_summary_names_the_splits_and_the_command(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _folder(tmp_path / "images", {"cat": 10, "dog": 20})
    code, out = _main(tmp_path, "images", "--out", "my run", capsys=capsys)
    assert code == 0
    assert out.splitlines()[:5] == [
        "30 labelled images of 2 classes in images, split by class with seed 0:",
        "  class  labelled       val      test      pool",
        "  cat           2         1         2         5",
        "  dog           4         2         4        10",
        "  all           6         3         6        15"]
    assert out.rstrip().endswith(
        "Run the first round:\n  raysal round --config 'my run/config.toml' --state 'my run/state'")


# --- preflight: splits that lack a class -----------------------------------------------------

def _hand_written(tmp_path, labelled: str, test: str, rows: dict[str, str] | None = None):
    rows = rows or {}
    return config_from_dict({
        "data": {"classes": ["cat", "dog"], "root": str(tmp_path),
                 "labelled": {"kind": "folder", "path": labelled, "rows": rows.get("labelled", "")},
                 "val": {"kind": "folder", "path": labelled, "rows": rows.get("val", "")},
                 "test": {"kind": "manifest", "path": test}, "pool": {"kind": "folder", "path": labelled}}})


def test_preflight_refuses_a_test_split_without_a_class(tmp_path) -> None:
    _folder(tmp_path / "images", {"cat": 4, "dog": 4})
    pq.write_table(pa.table({"image_id": [1, 2], "uri": ["x.png", "y.png"], "label": ["cat", "cat"]}),
                   tmp_path / "test.parquet")
    with pytest.raises(preflight.Refused, match=r"^data\.test has no image of class 'dog', which data\.labelled and "
                                                r"data\.val have\. Every split needs images of every class"):
        preflight.check(_hand_written(tmp_path, "images", "test.parquet"), str(tmp_path / "state"))


def test_preflight_refuses_rows_of_a_sorted_folder(tmp_path) -> None:
    """The newcomer's config: rows slice a sorted file list, so each split holds one class."""
    _folder(tmp_path / "images", {"cat": 4, "dog": 4})
    pq.write_table(pa.table({"image_id": [1, 2], "uri": ["x.png", "y.png"], "label": [0, 1]}),
                   tmp_path / "test.parquet")
    cfg = _hand_written(tmp_path, "images", "test.parquet", rows={"labelled": "0:4", "val": "4:"})
    with pytest.raises(preflight.Refused) as info:
        preflight.check(cfg, str(tmp_path / "state"))
    assert str(info.value).startswith(
        "data.labelled: every image is of class 'cat'; a model trained on it tells no classes apart; "
        "data.labelled has no image of class 'dog', which data.val and data.test have; "
        "data.val has no image of class 'cat', which data.labelled and data.test have.")


def test_preflight_passes_when_every_split_has_every_class(tmp_path) -> None:
    _folder(tmp_path / "images", {"cat": 4, "dog": 4})
    pq.write_table(pa.table({"image_id": [1, 2], "uri": ["x.png", "y.png"], "label": ["dog", "cat"]}),
                   tmp_path / "test.parquet")
    preflight.check(_hand_written(tmp_path, "images", "test.parquet"), str(tmp_path / "state"))


# --- the docs' commands, end to end ----------------------------------------------------------

SHAPES = {"cat": "square", "dog": "circle", "fox": "triangle"}
COLOURS = {"cat": (220, 40, 40), "dog": (40, 200, 60), "fox": (50, 60, 230)}


def readme_commands() -> tuple[list[str], list[str]]:
    """The "Your own images" page's two ```bash blocks (docs/own-images.md, which the README points
    to): from a folder to a first round, and "A large pool": pack the prepared pool, and start the
    run on its shards."""
    text = (REPO / "docs" / "own-images.md").read_text()
    section = text.split("# Your own images\n", 1)[1].split("\n## Your own model\n", 1)[0]
    blocks = re.findall(r"^```bash\n(.*?)^```", section, flags=re.S | re.M)
    assert len(blocks) == 2, "a folder to a first round; then the same run on a packed pool"
    own, packed = ([line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
                   for block in blocks)
    return own, packed


def _write_shapes(folder: Path, per_class: int) -> None:
    """Images of 32x32 that differ clearly by class: a red square, a green circle, a blue triangle."""
    rng = np.random.default_rng(0)
    for name, shape in SHAPES.items():
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            image = Image.fromarray(rng.integers(0, 60, (32, 32, 3), dtype=np.uint8))
            x, y, r = (int(v) for v in (*rng.integers(9, 23, 2), rng.integers(5, 8)))
            draw = ImageDraw.Draw(image)
            box = [x - r, y - r, x + r, y + r]
            if shape == "square":
                draw.rectangle(box, fill=COLOURS[name])
            elif shape == "circle":
                draw.ellipse(box, fill=COLOURS[name])
            else:
                draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=COLOURS[name])
            image.save(folder / name / f"{i:03d}.png")


@pytest.mark.timeout(1200)  # ~3 min on 2 idle cores; 11-13 min measured while other suites ran beside it
def test_readme_own_images_commands_end_to_end(tmp_path) -> None:
    """The README's commands from a folder of images to a first round, with the pool packed in
    Parquet shards as "A large pool" says: its round command is the first one plus the pool's
    path, so this one round runs both. (A round on an unpacked prepared pool, a manifest of
    uris, is what the demo and most other round tests run.)"""
    own, packed = readme_commands()
    prepare_cmd = next(c for c in own if c.startswith("raysal prepare "))
    own_round = next(c for c in own if c.startswith("raysal round "))
    pack_cmd = next(c for c in packed if c.startswith("raysal pack "))
    round_cmd = next(c for c in packed if c.startswith("raysal round "))
    assert round_cmd.startswith(own_round + " --set data.pool.path="), (own_round, round_cmd)
    commands = [prepare_cmd, pack_cmd, round_cmd]
    prepare_args, round_args = shlex.split(prepare_cmd, comments=True), shlex.split(round_cmd, comments=True)
    images = tmp_path / prepare_args[2]  # raysal prepare IMAGES ...
    _write_shapes(images, per_class=30)
    assert (VENV_BIN / "raysal").exists(), "install raysal into .venv: the README's commands call `raysal`"
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}

    done = subprocess.run(["bash", "-e", "-c", "\n".join(commands)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=1100)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]

    cfg = load_config(str(tmp_path / round_args[round_args.index("--config") + 1]))
    counts = {s: _by_class(pq.read_table(os.path.join(cfg.data.root, getattr(cfg.data, s).path)))
              for s in ("labelled", "val", "test", "pool")}
    assert counts == {"labelled": {n: 6 for n in SHAPES}, "val": {n: 3 for n in SHAPES},
                      "test": {n: 6 for n in SHAPES}, "pool": {n: 15 for n in SHAPES}}

    state = round_args[round_args.index("--state") + 1]
    status = subprocess.run(["raysal", "round", "--state", state, "--status", "--json"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr[-3000:]
    (record,) = json.loads(status.stdout)["rounds"]
    assert record["state"] == "done" and record["round"] == 1
    assert record["test_accuracy_after"] >= 0.8, out[-4000:]  # chance is 1/3

    # The round read the shards, whose rows are the prepared pool's: same ids, labels and uris.
    pack_args = shlex.split(pack_cmd, comments=True)
    shards = pack_args[pack_args.index("--out") + 1]
    pool = pq.read_table(os.path.join(cfg.data.root, cfg.data.pool.path)).sort_by("image_id")
    packed_rows = pq.read_table(tmp_path / shards).sort_by("image_id")
    assert packed_rows.select(["image_id", "uri", "label"]).equals(pool.select(["image_id", "uri", "label"]))
    assert all(len(b) > 0 for b in packed_rows["image_bytes"].to_pylist())
    run_cfg = json.loads((tmp_path / state / "run.json").read_text())
    assert run_cfg["pool"]["path"] == "pool-packed", run_cfg["pool"]
    selection = pq.read_table(round_file(tmp_path / state, 1, "selection.parquet"))
    assert 0 < selection.num_rows and set(selection["uri"].to_pylist()) <= set(pool["uri"].to_pylist())
