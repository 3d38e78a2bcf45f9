"""raysal pack, and packed pools read, scored and selected through the real pipeline on a local Ray."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq
import pytest
from PIL import Image

from raysal import cli, faults, storage
from raysal.config import load_config
from raysal.data import decode as decoding
from raysal.data import pack, prepare, sources
from raysal.data.images import decode_image
from raysal.data.listing import PACK_POINTER
from raysal.data.manifest import open_manifest, read_manifest_table
from raysal.errors import EXIT_CONFIG, EXIT_MISSING, EXIT_OK
from raysal.model import models
from raysal.run import preflight, scoring
from raysal.run import topk as distributed
from raysal.selection import criteria

pytestmark = pytest.mark.timeout(120)
CLASSES = ["a", "b", "c"]
REPO = Path(__file__).resolve().parents[2]


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((6, 5, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _shards(folder: str | Path) -> list[str]:
    """The shards a folder's pack pointer names, as paths; asserting the folder holds that pack alone."""
    named = json.loads((Path(folder) / PACK_POINTER).read_text())["shards"]
    pack_folder = named[0].split("/")[0]
    assert sorted(os.listdir(folder)) == sorted([PACK_POINTER, pack_folder])  # nothing else: no earlier pack
    assert sorted(os.listdir(Path(folder) / pack_folder)) == [name.split("/")[1] for name in named]
    return [os.path.join(folder, name) for name in named]


def _shard_rows(folder: str) -> list[pa.Table]:
    return [pq.read_table(path) for path in _shards(folder)]


def test_pack_a_folder_into_shards_keeps_ids_labels_and_bytes(image_folder, tmp_path, capsys):
    root, expected = image_folder
    out = str(tmp_path / "packed")
    assert cli.main(["pack", root, "--out", out, "--rows-per-shard", "4"]) == EXIT_OK
    printed = capsys.readouterr().out
    assert f'path = "{out}"' in printed and "packed 9 images" in printed  # notes.txt is not named as an image

    shards = _shard_rows(out)
    assert [os.path.basename(path) for path in _shards(out)] == [f"part-{i:05d}.parquet" for i in range(3)]
    assert [t.num_rows for t in shards] == [4, 4, 1]
    packed = pa.concat_tables(shards)
    assert packed.schema == pack.shard_schema(pa.string())
    folder = sources.list_folder(root, CLASSES, "data.pool")  # the ids a folder source gives
    id_of = dict(zip(folder["uri"].to_pylist(), folder["image_id"].to_pylist(), strict=True))
    for row in packed.to_pylist():
        rel = os.path.relpath(row["uri"], root)
        assert rel in expected and row["image_id"] == id_of[row["uri"]]
        assert row["label"] == rel.split("/")[0]
        with open(row["uri"], "rb") as f:
            assert row["image_bytes"] == f.read()  # as it is: not decoded, not re-encoded

    assert cli.main(["pack", root, "--out", out]) == EXIT_CONFIG  # would replace a pack without being asked to
    assert "already holds a pack of 3 shards, e.g. pack-" in capsys.readouterr().err
    assert cli.main(["pack", root, "--out", out, "--force", "--no-labels"]) == EXIT_OK
    (shard,) = _shards(out)  # the earlier pack's folder is gone
    assert pq.read_schema(shard) == pack.shard_schema(None)
    assert cli.main(["pack", str(tmp_path / "nowhere"), "--out", out]) == EXIT_MISSING


def test_pack_a_manifest_keeps_its_ids_and_labels(image_folder, tmp_path):
    root, _ = image_folder
    manifest = str(tmp_path / "pool.csv")
    with open(manifest, "w") as f:
        f.write(f"image_id,uri,label\n7,{root}/a/rgb.jpg,a\n3,{root}/b/rgba.png,\n9,missing.png,c\n")
    packed = pack.pack(manifest, str(tmp_path / "packed"))
    table = pq.read_table(packed.shards[0])
    assert table["image_id"].to_pylist() == [7, 3, 9] and table["label"].to_pylist() == ["a", None, "c"]
    assert table["uri"][2].as_py() == str(tmp_path / "missing.png")  # relative to the manifest
    assert table["image_bytes"][2].as_py() is None  # unreadable: packed without bytes, reported by a round
    assert packed.unreadable_count == 1 and packed.unreadable[0][0] == str(tmp_path / "missing.png")

    twice = str(tmp_path / "twice.csv")
    with open(twice, "w") as f:  # one file, written two ways: the same image, as raysal prepare sees it
        f.write(f"uri\n{root}/a/rgb.jpg\n{root}/b/../a/rgb.jpg\n")
    with pytest.raises(pack.BadInput, match="lists 1 image more than once"):
        pack.pack(twice, str(tmp_path / "other"))
    assert not (tmp_path / "other").exists()


def test_a_uri_no_filesystem_reads_is_packed_without_bytes_and_reported(image_folder, tmp_path, capsys):
    root, _ = image_folder
    manifest = tmp_path / "pool.csv"
    manifest.write_text(f"uri\nhttp://x/a.jpg\nfoo://a\n{root}/a/rgb.jpg\n")
    out = str(tmp_path / "packed")
    assert cli.main(["pack", str(manifest), "--out", out]) == EXIT_OK
    assert "note: 2 files could not be read (e.g. http://x/a.jpg: " in capsys.readouterr().out
    table = pa.concat_tables(_shard_rows(out))
    assert table["uri"].to_pylist() == ["http://x/a.jpg", "foo://a", f"{root}/a/rgb.jpg"]
    assert [b is None for b in table["image_bytes"].to_pylist()] == [True, True, False]


def _pack_killed_at(point: str, *args: str) -> subprocess.CompletedProcess:
    """``raysal pack ARGS`` in a process group of its own, killed (SIGKILL, no clean-up) at the
    failpoint ``point`` (``pack:shard-staged``: once a shard is written; ``pack:named``: once the
    pointer names the new pack, before the earlier one is removed)."""
    main = "import sys; from raysal.cli import pack; sys.exit(pack.main(sys.argv[1:]))"
    env = {**os.environ, faults.KILL_AT_ENV: point}
    killed = subprocess.run([sys.executable, "-c", main, *args], env=env, cwd=REPO, start_new_session=True,
                            capture_output=True, text=True, timeout=90)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    return killed


def _files(out: str) -> dict[str, bytes]:
    """Every file under the folder or prefix ``out``, by its path inside it, with its bytes."""
    fs, inner = storage.resolve(out)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(inner, recursive=True, allow_not_found=True))
    return {os.path.relpath(i.path, inner): storage.read_bytes(storage.join(out, os.path.relpath(i.path, inner)))
            for i in infos if i.type == pyarrow.fs.FileType.File}


def _pool(out: str) -> tuple[list[str], dict[int, tuple]]:
    """What a round reads of the pool in ``out``: its shards (paths inside ``out``), and each image
    (id: uri, label, bytes)."""
    fs, inner = storage.resolve(out)
    shards = [os.path.relpath(f, inner) for f in open_manifest(out, "data.pool").files]
    table = read_manifest_table(out, CLASSES, "data.pool")
    rows = zip(*(table[c].to_pylist() for c in ("image_id", "uri", "label", "image_bytes")), strict=True)
    return shards, {image_id: (uri, label, data) for image_id, uri, label, data in rows}


def test_a_killed_pack_leaves_no_pool_and_the_next_pack_starts_clean(image_folder, tmp_path):
    root, _ = image_folder
    out = tmp_path / "packed"
    _pack_killed_at("pack:shard-staged", root, "--out", str(out), "--rows-per-shard", "4")
    (started,) = os.listdir(out)  # its folder, with its first shard, and no pointer
    assert pack.PACK_FOLDER.fullmatch(started) and os.listdir(out / started) == ["part-00000.parquet"]
    with pytest.raises(sources.SourceError, match=r"holds no Parquet file \(.*\), only the shards of a raysal pack "
                                                  rf"that did not finish \({started}\): run raysal pack again"):
        open_manifest(str(out), "data.pool")  # no pool of 4 of the 9 images

    assert cli.main(["pack", root, "--out", str(out), "--rows-per-shard", "4"]) == EXIT_OK  # not refused
    assert len(_shards(out)) == 3 and started not in os.listdir(out)  # what the killed pack left is gone


def _write_as_before_pointers(out: Path) -> None:
    """Turn the pack in ``out`` into the layout raysal pack wrote before its pointer:
    part-NNNNN.parquet directly in ``out``."""
    for path in _shards(out):
        shutil.move(path, out / os.path.basename(path))
    shutil.rmtree(Path(_shards_folder(out)))
    (out / PACK_POINTER).unlink()


def _shards_folder(out: Path) -> str:
    return str(out / json.loads((out / PACK_POINTER).read_text())["shards"][0].split("/")[0])


@pytest.mark.parametrize("where", ["local", "local, packed before pointers", "s3"])
def test_a_forced_pack_killed_at_any_point_leaves_one_whole_pack_to_read(image_folder, tmp_path, request, where):
    """Killed while its shards are written, ``pack --force`` leaves the earlier pack whole and read,
    file for file; killed once its pointer is written, the new pack whole and read, the earlier
    one's files not yet removed; never a mix. The next ``pack --force`` leaves its own alone."""
    root, _ = image_folder
    if where == "s3":
        request.getfixturevalue("s3")
        out = "s3://raysal-test/forced"  # conftest's s3 fixture makes the bucket
    else:
        out = str(tmp_path / "packed")
    pack.pack(root, out, rows_per_shard=4)
    if where == "local, packed before pointers":
        _write_as_before_pointers(Path(out))
    earlier_files = _files(out)
    earlier_shards, earlier = _pool(out)
    assert len(earlier_shards) == 3 and len(earlier) == 9

    force = [root, "--out", out, "--rows-per-shard", "2", "--force", "--no-labels"]  # 5 shards, no label
    _pack_killed_at("pack:shard-staged", *force)
    begun = {name: data for name, data in _files(out).items() if name not in earlier_files}
    assert [name.split("/")[1] for name in begun] == ["part-00000.parquet"]  # the new pack's first shard, written
    assert _pool(out) == (earlier_shards, earlier)  # the earlier pack, whole: the same shards, ids, labels, bytes
    assert {name: data for name, data in _files(out).items() if name in earlier_files} == earlier_files  # untouched

    _pack_killed_at("pack:named", *force)
    shards, images = _pool(out)
    assert len(shards) == 5 and len({s.split("/")[0] for s in shards}) == 1 and not set(shards) & set(earlier_shards)
    assert images == {i: (uri, None, data) for i, (uri, _, data) in earlier.items()}  # the new pack, whole
    assert set(earlier_shards) <= set(_files(out))  # the earlier pack's files are still there: only the pointer moved

    assert cli.main(["pack", *force]) == EXIT_OK
    pointer = json.loads(storage.read_bytes(storage.join(out, PACK_POINTER)))
    folder = pointer["shards"][0].split("/")[0]
    assert sorted(_files(out)) == [PACK_POINTER, *pointer["shards"]]  # its own pack alone: the others removed
    assert [s.split("/") for s in pointer["shards"]] == [[folder, f"part-{i:05d}.parquet"] for i in range(5)]
    assert _pool(out) == (pointer["shards"], images)
    assert "label" not in pq.read_table(storage.join(out, pointer["shards"][4])).column_names


def test_a_pointer_that_pack_did_not_write_is_refused_naming_it(image_folder, tmp_path, capsys):
    root, _ = image_folder
    out = tmp_path / "packed"
    pack.pack(root, str(out))
    pointer = out / PACK_POINTER
    for text, message in [("{not json", "is not the pointer raysal pack writes"),
                          ('{"shards": ["../elsewhere/part-00000.parquet"]}', "names no shards of a pack folder")]:
        pointer.write_text(text)
        with pytest.raises(sources.SourceError, match=rf"^data.pool: manifest folder {out}: {pointer} {message}"):
            open_manifest(str(out), "data.pool")
        assert cli.main(["pack", root, "--out", str(out), "--force"]) == EXIT_CONFIG  # not overwritten unread
        assert f"error: {pointer} {message}" in capsys.readouterr().err and pointer.read_text() == text


def test_force_replaces_only_the_shards_pack_wrote(image_folder, tmp_path, capsys):
    """A run's split manifests beside the shards would be read as part of the pool: refused, kept."""
    root, _ = image_folder
    run = tmp_path / "run"
    run.mkdir()
    pool = pa.table({"image_id": [1, 2], "uri": ["x.png", "y.png"], "label": ["a", "b"]})
    pq.write_table(pool, run / "pool.parquet")  # as raysal prepare writes it
    (run / "_SUCCESS").write_bytes(b"")  # a marker, not a shard: no reader takes it for one
    for extra in ([], ["--force"]):
        assert cli.main(["pack", root, "--out", str(run), *extra]) == EXIT_CONFIG
        assert "holds 1 Parquet file that pack did not write, e.g. pool.parquet" in capsys.readouterr().err
        assert sorted(os.listdir(run)) == ["_SUCCESS", "pool.parquet"]  # nothing deleted, nothing written
    assert pq.read_table(run / "pool.parquet").equals(pool)
    assert cli.main(["pack", root, "--out", str(run / "pool-packed")]) == EXIT_OK
    assert cli.main(["pack", root, "--out", str(run / "pool-packed"), "--force"]) == EXIT_OK
    assert sorted(os.listdir(run)) == ["_SUCCESS", "pool-packed", "pool.parquet"]


def test_packed_labels_read_back_as_the_source_s(tmp_path):
    """A CSV's labels are class names, as raysal prepare reads them: a round finds the same class in
    the packed pool as in prepare's manifests of the same CSV. A Parquet manifest's labels read back
    as that manifest's own."""
    labels = [" 10", "2 ", "7"] * 4  # numbers, in names' clothing: "10" sorts before "2"
    csv = tmp_path / "labelled.csv"
    csv.write_text("uri,label\n" + "".join(f"img{i}.png,{label}\n" for i, label in enumerate(labels)))
    plan = prepare.prepare(prepare.PrepareConfig(str(csv), out=str(tmp_path / "run"), labelled_size=3, val_size=3,
                                                 test_size=3))
    assert plan.classes == ("10", "2", "7")
    prepared = pa.concat_tables(read_manifest_table(str(tmp_path / "run" / f"{split}.parquet"), plan.classes,
                                                            "data.pool") for split in prepare.SPLITS)
    packed = pack.pack(str(csv), str(tmp_path / "packed"))
    assert packed.unreadable_count == 12  # the files need not exist to be named
    read = read_manifest_table(str(tmp_path / "packed"), plan.classes, "data.pool")
    assert dict(zip(read["image_id"].to_pylist(), read["label"].to_pylist(), strict=True)) == dict(
        zip(prepared["image_id"].to_pylist(), prepared["label"].to_pylist(), strict=True))
    assert sorted(read["label"].to_pylist()) == [0] * 4 + [1] * 4 + [2] * 4

    manifest = tmp_path / "indices.parquet"  # pandas writes an integer column with gaps as float
    pq.write_table(pa.table({"image_id": [5, 6, 7], "uri": ["p.png", "q.png", "r.png"], "label": [2.0, None, 0.0]}),
                   manifest)
    pack.pack(str(manifest), str(tmp_path / "packed-indices"))
    assert (read_manifest_table(str(tmp_path / "packed-indices"), CLASSES, "data.pool")["label"].to_pylist()
            == read_manifest_table(str(manifest), CLASSES, "data.pool")["label"].to_pylist()
            == [2, None, 0])


def test_a_source_without_images_is_refused(image_folder, tmp_path, capsys):
    root, _ = image_folder
    empty = tmp_path / "empty.csv"
    empty.write_text("uri,label\n")
    out = tmp_path / "packed"
    assert cli.main(["pack", str(empty), "--out", str(out)]) == EXIT_CONFIG
    assert "empty.csv holds no images" in capsys.readouterr().err
    (tmp_path / "nothing").mkdir()
    assert cli.main(["pack", str(tmp_path / "nothing"), "--out", str(out)]) == EXIT_CONFIG
    assert "nothing holds no images" in capsys.readouterr().err
    assert not out.exists()

    assert cli.main(["pack", root, "--out", str(out)]) == EXIT_OK
    assert cli.main(["pack", str(out), "--out", str(tmp_path / "again")]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert re.search(r"holds no images .* but 1 Parquet file, e.g. pack-[^/]+/part-00000.parquet: it looks packed "
                     "already", err), err
    assert not (tmp_path / "again").exists()


def _pool_config(path: str, rows: str = ""):
    return load_config("demo", {"data.classes": CLASSES, "data.pool.kind": "manifest", "data.pool.path": path,
                                "data.pool.rows": rows, "model.input_size": 16, "score.batch_size": 4})


def _score(cfg, checkpoint: str):
    ds, size = sources.read_source_with_size(cfg.data.pool, cfg.data.classes, "")
    return scoring.score(decoding.decode(ds, cfg), checkpoint, cfg), size


def test_packed_pool_scores_as_its_folder_and_reports_its_broken_images(ray_session, image_folder, tiny_checkpoint,
                                                                        tmp_path):
    root, expected = image_folder
    out = str(tmp_path / "packed")
    pack.pack(root, out, rows_per_shard=3)
    cfg = _pool_config(out)
    scored, size = _score(cfg, tiny_checkpoint)
    assert size == 9  # from the shards' metadata
    out_scores = str(tmp_path / "scores")
    scoring.write_scores(scored, out_scores, size)  # as a round does; read back below
    rows = {int(r["image_id"]): r for r in pq.read_table(out_scores).to_pylist()}

    assert {os.path.relpath(r["uri"], root) for r in rows.values()} == set(expected) - {"c/notes.txt"}
    model, _, _ = models.load_checkpoint(tiny_checkpoint)
    criterion = criteria.get_criterion(cfg.select.criterion, cfg.seed)
    for image_id, row in rows.items():  # as one process scores the original file
        outcome = expected[os.path.relpath(row["uri"], root)]
        if outcome != "ok":
            assert outcome in row["error"] and np.isnan(row["score"]), row
            continue
        with open(row["uri"], "rb") as f:
            probs = models.predict_probs(model, decode_image(f.read(), 16)[None])  # [1, 3]
        np.testing.assert_allclose(row["score"], criterion(probs, np.array([image_id]))[0], atol=1e-5)
        assert row["label"] == CLASSES.index(os.path.relpath(row["uri"], root).split("/")[0])

    selection = distributed.select_top_k(out_scores, 2)
    bad = sorted(rel for rel, outcome in expected.items() if outcome != "ok" and not rel.endswith(".txt"))
    assert sorted(os.path.relpath(u, root) for u in selection.skipped["uri"]) == bad  # the original files, named
    assert all(selection.skipped["reason"])
    good = {i: r["score"] for i, r in rows.items() if r["error"] == ""}
    assert list(selection.rows["image_id"]) == sorted(good, key=lambda i: (-good[i], i))[:2]


def test_slice_of_a_packed_pool_is_read_in_ray_tasks_in_order(ray_session, tiny_checkpoint, tmp_path):
    """Rows without a uri are named by their shard; one without bytes is skipped by that name."""
    ids = np.arange(100, 112)
    images = [_png(i * 20) for i in range(12)]
    images[7] = None  # neither bytes nor a uri: unreadable, reported
    folder = tmp_path / "pool"
    folder.mkdir()
    for shard, (lo, hi) in enumerate([(0, 5), (5, 12)]):
        pq.write_table(pa.table({"image_id": ids[lo:hi], "image_bytes": pa.array(images[lo:hi], pa.binary())}),
                       folder / f"part-{shard}.parquet", row_group_size=2)
    cfg = _pool_config(str(folder), rows="3:10")
    ds, size = sources.read_source_with_size(cfg.data.pool, cfg.data.classes, "")
    assert size == 7
    assert sorted(ds.take_all(), key=lambda r: r["image_id"])[0]["image_bytes"] == images[3]
    scored = scoring.score(decoding.decode(ds, cfg), tiny_checkpoint, cfg).take_all()
    assert sorted(int(r["image_id"]) for r in scored) == list(ids[3:10])
    by_id = {int(r["image_id"]): r for r in scored}
    assert by_id[107]["uri"] == f"{folder}/part-1.parquet#image_id=107"
    assert by_id[107]["error"].startswith("unreadable") and np.isnan(by_id[107]["score"])
    assert all(r["error"] == "" for i, r in by_id.items() if i != 107)


def test_preflight_refuses_repeated_ids_across_shards(ray_session, tmp_path):
    folder = tmp_path / "pool"
    folder.mkdir()
    for shard, shard_ids in enumerate([[1, 2, 3], [4, 2]]):
        pq.write_table(pa.table({"image_id": shard_ids, "image_bytes": [b"x"] * len(shard_ids)}),
                       folder / f"part-{shard}.parquet")
    cfg = load_config("demo", {"data.root": str(tmp_path), "data.pool.kind": "manifest", "data.pool.path": "pool",
                               "data.pool.rows": ""})
    with pytest.raises(preflight.Refused, match=r"data.pool: manifest .*pool repeats image_id values, e.g. \[2\]"):
        preflight.check_cluster(cfg, str(tmp_path / "state"))


def test_pack_onto_object_storage_and_read_the_shards_by_folder_and_glob(s3, image_folder):
    root, _ = image_folder
    out = "s3://raysal-test/packed"  # conftest's s3 fixture makes the bucket
    packed = pack.pack(root, out, rows_per_shard=4)
    folder = packed.shards[0].rsplit("/", 2)[1]
    assert packed.shards == [f"{out}/{folder}/part-{i:05d}.parquet" for i in range(3)]
    fs, inner = storage.resolve(out)
    listed = sorted(i.path for i in fs.get_file_info(pyarrow.fs.FileSelector(inner, recursive=True))
                    if i.type == pyarrow.fs.FileType.File)
    assert listed == [f"{inner}/{PACK_POINTER}", *(f"{inner}/{folder}/part-{i:05d}.parquet" for i in range(3))]
    table = read_manifest_table(out, CLASSES, "data.pool")
    assert read_manifest_table(f"{out}/pack-*/part-*.parquet", CLASSES, "data.pool").equals(table)
    folder = sources.list_folder(root, CLASSES, "data.pool")
    files = {u: i for u, i in zip(folder["uri"].to_pylist(), folder["image_id"].to_pylist(), strict=True)
             if not u.endswith(".txt")}
    assert dict(zip(table["uri"].to_pylist(), table["image_id"].to_pylist(), strict=True)) == files
    for uri, data in zip(table["uri"].to_pylist(), table["image_bytes"].to_pylist(), strict=True):
        with open(uri, "rb") as f:
            assert data == f.read()
