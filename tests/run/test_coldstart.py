"""A cold start: a pool and class names, no labels. ``raysal prepare`` writes the run, its round 0
selects typical images for people, and their labels become the seed set, val and test.

The rules (the split, the config, prepare) are tested here without Ray; the whole path, through
the CLI with a real Ray and real training, in ``test_a_cold_start_through_the_cli``.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from raysal.cli.prepare import main as prepare_main
from raysal.config import ConfigError, config_from_dict, load_config
from raysal.errors import LabelFileError
from raysal.run.coldstart import split_seed

CLASSES = ("a", "b", "c", "d")
SEEDED = {"data.labelled": {"kind": "seed"}, "data.val": {"kind": "seed"}, "data.test": {"kind": "seed"}}


# --- the split of round 0's labels ----------------------------------------------------------------

def test_the_split_puts_every_class_of_three_or_more_in_each_split_in_proportion() -> None:
    labels = np.repeat(np.arange(4), [40, 20, 10, 3])  # [73]
    split, notes = split_seed(labels, CLASSES, seed=0)
    for c, n in enumerate([40, 20, 10, 3]):
        mine = split[labels == c]
        assert {name: int((mine == name).sum()) > 0 for name in ("labelled", "val", "test")} == \
            {"labelled": True, "val": True, "test": True}, c
        assert len(mine) == n
    counts = {name: int((split == name).sum()) for name in ("labelled", "val", "test")}
    assert counts["test"] == 15 and counts["val"] == 7 and counts["labelled"] == 51  # a fifth, a tenth, the rest
    assert notes == []
    again, _ = split_seed(labels, CLASSES, seed=0)
    other, _ = split_seed(labels, CLASSES, seed=1)
    assert (again == split).all() and (other != split).any()  # seeded, as raysal prepare splits


def test_a_rare_class_trains_alone_and_a_missing_class_is_named() -> None:
    labels = np.array([0] * 10 + [1] * 9 + [2] * 2)  # d: none; c: 2
    split, notes = split_seed(labels, CLASSES, seed=0)
    assert (split[labels == 2] == "labelled").all()
    assert any("fewer than 3 labelled images" in note and "c (2)" in note for note in notes), notes
    assert any("no image of d was labelled" in note for note in notes), notes
    assert {"labelled", "val", "test"} <= set(split[labels == 0])


def test_labels_of_a_single_class_are_refused_naming_it() -> None:
    with pytest.raises(LabelFileError, match=r"name 1 class \(b\) of 4: a model needs at least 2"):
        split_seed(np.ones(30, np.int64), CLASSES, seed=0)


# --- the config -------------------------------------------------------------------------------

def test_a_cold_start_config_needs_every_split_seeded_and_a_seed_budget() -> None:
    cfg = load_config("demo", {**SEEDED, "select.seed_budget": 30})
    assert cfg.data.cold_start and cfg.select.seed_strategy == "typical"
    assert config_from_dict(cfg.to_dict()) == cfg  # round-trips, as a round stores it
    for overrides, message in (
            ({**SEEDED, "select.seed_budget": 29}, "at least 3 images per class, 30 for 10 classes, got 29"),
            ({"data.val": {"kind": "seed"}}, "data.val of kind 'seed' needs data.labelled, data.val and data.test"),
            ({"select.seed_budget": 30}, "select.seed_budget: is only read for a cold start"),
            ({"data.pool": {"kind": "seed"}}, "data.pool.kind: 'seed' names a split"),
            ({**SEEDED, "select.seed_budget": 30, "select.seed_strategy": "densest"},
             "select.seed_strategy: 'densest' is not one of"),
            ({**SEEDED, "select.seed_budget": 30, "data.test": {"kind": "seed", "path": "x.parquet"}},
             "data.test.path: is not read when kind = 'seed'")):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_config("demo", overrides)


# --- raysal prepare ---------------------------------------------------------------------------

def _pool(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def test_prepare_with_a_pool_and_classes_writes_a_cold_start(tmp_path, capsys) -> None:
    pool = _pool(tmp_path / "pool", 50)
    assert prepare_main(["--pool", str(pool), "--classes", "cat, dog,bird", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "a cold start: 50 unlabelled images" in out and "round 0 selects 9 typical images" in out
    table = tomllib.loads((tmp_path / "run" / "config.toml").read_text())
    cfg = config_from_dict(table)  # what a round loads
    assert cfg.data.cold_start and cfg.data.classes == ("cat", "dog", "bird") and cfg.label.mode == "human"
    assert cfg.select.seed_budget == 9  # a round's budget (5, a tenth of the pool), at least 3 per class
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.toml", "pool.parquet"]
    assert pq.read_table(tmp_path / "run" / "pool.parquet").num_rows == 50
    assert prepare_main(["--pool", str(pool), "--classes", "cat,dog", "--seed-budget", "20", "--out",
                         str(tmp_path / "run2")]) == 0
    assert config_from_dict(tomllib.loads((tmp_path / "run2" / "config.toml").read_text())).select.seed_budget == 20


@pytest.mark.parametrize("args, message", [
    (["--classes", "cat,dog"], "IMAGES: give labelled images, or for a cold start"),
    (["--pool", "POOL", "--classes", "cat"], "--classes: a cold start needs the names of at least 2 classes"),
    (["--pool", "POOL", "--classes", "cat,cat"], "--classes: ['cat'] given twice"),
    (["--pool", "POOL", "--classes", "cat,,dog"], "--classes: '' is not a class name"),
    (["--pool", "POOL", "--classes", "cat,dog", "--seed-budget", "5"], "--seed-budget: at least 3 images per class"),
    (["--pool", "POOL", "--classes", "cat,dog", "--seed-budget", "60"], "more than the pool's 50"),
    (["--pool", "POOL", "--classes", "cat,dog", "--test", "5"], "a cold start splits round 0's labels itself"),
    (["IMAGES", "--classes", "cat,dog"], "--classes: only for a cold start"),
])
def test_prepare_refuses_a_cold_start_it_cannot_make_with_2(tmp_path, capsys, args, message) -> None:
    pool = _pool(tmp_path / "pool", 50)
    images = tmp_path / "images"
    for name in ("cat", "dog"):
        _pool(images / name, 3)
    args = [str(pool) if a == "POOL" else str(images) if a == "IMAGES" else a for a in args]
    assert prepare_main([*args, "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing written


# --- TypiClust on Ray -----------------------------------------------------------------------------

@pytest.mark.timeout(300)
def test_typiclust_on_ray_selects_what_it_selects_in_memory(ray_session) -> None:
    """In 17 blocks, ids out of order: the ids the in-memory algorithm picks, one per blob."""
    from raysal.run import seeding
    from raysal.selection import typical

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (5, 40))
    labels = rng.integers(0, 5, 600)
    x = (centres[labels] + rng.normal(0, 1, (600, 40))).astype(np.float32)
    ids = rng.permutation(10_000)[:600].astype(np.int64) + 7
    rows = [{"image_id": int(i), seeding.FEATURE: row} for i, row in zip(ids, x, strict=True)]
    ds = ray_session.data.from_items(rows, override_num_blocks=17)
    pca = seeding.pca_fit(ds, dims=10)
    expected = typical.Pca.fit(*typical.moments(x), dims=10)
    assert np.allclose(np.abs(pca.components @ expected.components.T), np.eye(10), atol=1e-5)
    projected = pca.project(x)
    for budget in (5, 60):
        mine = seeding.typical_ids(seeding.project(ds, pca), budget, seed=2)
        assert mine.tolist() == ids[typical.typical_indices(projected, budget, 2, image_ids=ids)].tolist(), budget
    five = seeding.typical_ids(seeding.project(ds, pca), 5, seed=2)
    assert sorted(labels[[ids.tolist().index(i) for i in five]].tolist()) == [0, 1, 2, 3, 4]


# --- the whole path, through the CLI ------------------------------------------------------------

def _digits_pool(folder: Path, n: int) -> dict[str, int]:
    """The first ``n`` of scikit-learn's digits as PNG files in one flat folder (no labels in the
    layout); the truth by file name."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder.mkdir(parents=True)
    truth = {}
    for i in range(n):
        Image.fromarray((digits.images[i] * (255.0 / 16.0)).round().astype(np.uint8)).save(folder / f"{i:04d}.png")
        truth[f"{i:04d}.png"] = int(digits.target[i])
    return truth


@pytest.mark.timeout(600)
def test_a_cold_start_through_the_cli(ray_session, tmp_path, capsys) -> None:
    """prepare with no labels; round 0 selects typical images and waits (exit 5); labels of one
    class are refused with nothing changed; the real labels are split, the round-0 model is
    trained on the seed set and round 1 selects images round 0 never chose, and waits.

    The model is an ensemble of 3 heads trained on 2 Ray Train workers, and round 1 selects by
    ``bald`` over their disagreement: the path of ``model.heads`` through a real round."""
    import csv

    from _jobs import TWO_WORKERS, round_file, snapshot

    # In this process, as a notebook would call jobs/round.py's main with Ray already started
    # (the session's Ray, shared with the other tests): the job path of a round is tested in tests/test_jobs.py.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "jobs"))
    import round as round_job  # jobs/round.py

    truth = _digits_pool(tmp_path / "pool", 300)
    run = tmp_path / "run"
    assert prepare_main(["--pool", str(tmp_path / "pool"), "--classes", ",".join(map(str, range(10))),
                         "--seed-budget", "60", "--budget", "20", "--out", str(run)]) == 0
    state = run / "state"
    args = ["--config", str(run / "config.toml"), "--state", str(state), "--set", "train.finetune_epochs=3",
            "--set", "score.batch_size=16", "--set", "model.heads=3", "--set", 'select.criterion="bald"',
            *TWO_WORKERS, "--num-cpus", "2"]
    capsys.readouterr()
    assert round_job.main(args) == 5
    out = "".join(capsys.readouterr())
    assert "round 0 (cold start) is waiting for labels" in out and "Traceback" not in out, out[-3000:]
    with round_file(state, 0, "to_label.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 60 and len({r["image_id"] for r in rows}) == 60
    label_of = {int(r["image_id"]): truth[Path(r["uri"]).name] for r in rows}

    one_class = tmp_path / "one.csv"
    one_class.write_text("image_id,label\n" + "".join(f"{i},3\n" for i in label_of))
    before = snapshot(state, ignore=("train", "lease"))
    capsys.readouterr()
    assert round_job.main([*args, "--import-labels", str(one_class)]) == 2
    assert "round 0's labels name 1 class (3) of 10" in "".join(capsys.readouterr())
    assert snapshot(state, ignore=("train", "lease")) == before  # nothing applied

    good = tmp_path / "labels.csv"
    good.write_text("image_id,label\n" + "".join(f"{i},{c}\n" for i, c in label_of.items()))
    assert round_job.main([*args, "--import-labels", str(good)]) == 5
    out = "".join(capsys.readouterr())
    assert re.search(r"round 0 \(cold start\): selected 60 of 300 pool images \(typical, over pixels\), 60 labelled: "
                     r"\d+ in the seed set, \d+ in val, \d+ in test", out), out[-3000:]
    assert "round 1 is waiting for labels" in out and "Traceback" not in out
    split = pq.read_table(round_file(state, 0, "seed_split.parquet")).to_pydict()
    assert dict(zip(split["image_id"], split["label"], strict=True)) == label_of
    assert set(split["split"]) == {"labelled", "val", "test"}
    round1 = set(pq.read_table(round_file(state, 1, "selection.parquet"))["image_id"].to_pylist())
    assert len(round1) == 20 and not round1 & set(label_of)  # no image selected twice
    seed_size = split["split"].count("labelled")
    model = json.loads((state / "models" / "0000" / "model.json").read_text())  # trained on the seed set
    assert model["model"]["heads"] == 3
    scores = pq.read_table(round_file(state, 1, "selection.parquet"))["score"].to_numpy()
    assert ((0 <= scores) & (scores <= np.log(10))).all()  # mutual information, in nats, of 10 classes

    capsys.readouterr()
    assert round_job.main(["--state", str(state), "--status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(r["round"], r["state"]) for r in report["rounds"]] == [(0, "done"), (1, "waiting for labels")]
    assert report["rounds"][0]["split"]["labelled"] == seed_size and report["rounds"][0]["cold_start"]
    assert round_job.main(["--state", str(state), "--status"]) == 0
    assert "round 0: done, selected 60 by typical (cold start), 60 labelled" in capsys.readouterr().out
