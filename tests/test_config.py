"""Tests for raysal.config: presets, overrides, refusals that name the field, round trips."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from raysal.config import (
    Config,
    ConfigError,
    ModelConfig,
    ScoreConfig,
    SelectConfig,
    SourceConfig,
    TrainConfig,
    config_from_dict,
    load_config,
    parse_override,
    preset_names,
    row_slice,
)

MINIMAL_TOML = """\
name = "tiny"
seed = 7

[data]
classes = ["cat", "dog"]

[data.labelled]
kind = "manifest"
path = "labelled.csv"

[data.val]
kind = "folder"
path = "val"

[data.test]
kind = "folder"
path = "test"

[data.pool]
kind = "manifest"
path = "pool.csv"
rows = ":1000"

[select]
budget = 25
criterion = "entropy"
"""


def test_presets_are_listed() -> None:
    assert preset_names() == ["demo", "flowers"]


def test_demo_preset_loads() -> None:
    cfg = load_config("demo")
    assert cfg.name == "demo"
    assert cfg.data.classes == tuple(str(d) for d in range(10))
    splits = (cfg.data.labelled, cfg.data.val, cfg.data.test, cfg.data.pool)
    assert [(s.kind, s.path, s.rows) for s in splits] == [
        ("digits", "digits", "0:300"), ("digits", "digits", "300:500"),
        ("digits", "digits", "500:900"), ("digits", "digits", "900:")]
    assert [s.where for s in splits] == ["data.labelled", "data.val", "data.test", "data.pool"]
    assert cfg.model.kind == "small_cnn"
    assert cfg.train.head_epochs == 0  # no pretrained backbone to freeze
    assert cfg.select.criterion == "least_confidence"


def test_flowers_preset_loads() -> None:
    cfg = load_config("flowers")
    assert cfg.name == "flowers"
    assert cfg.data.classes == ("dandelion", "daisy", "tulips", "sunflowers", "roses")
    assert cfg.data.pool.kind == "tfds"
    assert cfg.data.pool.tfds_split == "train[2500:]"
    assert (cfg.model.kind, cfg.model.input_size) == ("hub", 299)
    assert (cfg.train.head_epochs, cfg.train.finetune_epochs) == (3, 2)
    assert cfg.select == SelectConfig(budget=500, criterion="least_confidence")


def test_default_preset_is_demo() -> None:
    assert load_config() == load_config("demo")


@pytest.mark.parametrize("preset", ["demo", "flowers"])
def test_round_trip_through_dict(preset: str) -> None:
    cfg = load_config(preset)
    table = cfg.to_dict()
    assert config_from_dict(table) == cfg
    assert table["data"]["classes"] == list(cfg.data.classes)  # tuples become lists, as in TOML
    assert "where" not in table["data"]["pool"]  # the loader's bookkeeping does not leak out


@pytest.mark.parametrize(
    ("overrides", "read", "expected"),
    [
        ({"select.budget": 7}, lambda c: c.select.budget, 7),
        ({"select.criterion": "random", "seed": 3}, lambda c: (c.select.criterion, c.seed), ("random", 3)),
        ({"data.pool.rows": "900:950"}, lambda c: c.data.pool.rows, "900:950"),
        ({"train.cpus_per_worker": 1}, lambda c: c.train.cpus_per_worker, 1.0),  # int is fine for a float
        ({"model.kind": "inception_v3", "model.input_size": 75}, lambda c: c.model.input_size, 75),
        ({"data.root": "/tmp/data"}, lambda c: c.data.root, "/tmp/data"),
    ],
)
def test_overrides_apply(overrides: dict[str, Any], read: Any, expected: Any) -> None:
    cfg = load_config("demo", overrides)
    assert read(cfg) == expected
    untouched = load_config("demo")
    assert cfg.data.classes == untouched.data.classes
    assert cfg.train.batch_size == untouched.train.batch_size


def test_override_does_not_leak_into_the_next_load() -> None:
    baseline = load_config("demo").select.budget
    assert load_config("demo", {"select.budget": baseline + 1}).select.budget == baseline + 1
    assert load_config("demo").select.budget == baseline


def test_float_field_stored_as_float() -> None:
    cfg = load_config("demo", {"train.cpus_per_worker": 2})
    assert type(cfg.train.cpus_per_worker) is float


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("select.budget=100", ("select.budget", 100)),
        ("  select.budget = 100  ", ("select.budget", 100)),
        ("train.head_learning_rate=0.001", ("train.head_learning_rate", 0.001)),
        ("train.head_learning_rate=1e-3", ("train.head_learning_rate", 0.001)),
        ("score.batch_size=-5", ("score.batch_size", -5)),
        ("flag=true", ("flag", True)),
        ("flag=false", ("flag", False)),
        ("flag=False", ("flag", "False")),  # TOML booleans are lower case; anything else is a string
        ("select.criterion=entropy", ("select.criterion", "entropy")),
        ("select.criterion = entropy ", ("select.criterion", "entropy")),  # not TOML, kept as a trimmed string
        ("name = hello world", ("name", "hello world")),
        ('name="quoted"', ("name", "quoted")),
        ('name="123"', ("name", "123")),
        ("data.pool.rows=900:", ("data.pool.rows", "900:")),
        ("name=a=b", ("name", "a=b")),
        ("name=", ("name", "")),
        ('data.classes=["a", "b"]', ("data.classes", ["a", "b"])),
    ],
)
def test_parse_override(assignment: str, expected: tuple[str, Any]) -> None:
    key, value = parse_override(assignment)
    assert (key, value) == expected
    assert type(value) is type(expected[1])  # 1 == 1.0 == True, so check the type too


@pytest.mark.parametrize("assignment", ["select.budget", "=5", " =5", ""])
def test_parse_override_refuses_assignments_without_a_key(assignment: str) -> None:
    with pytest.raises(ConfigError, match="--set: .* is not of the form key=value"):
        parse_override(assignment)


def test_parsed_override_feeds_load_config() -> None:
    cfg = load_config("demo", dict([parse_override("select.budget=42"), parse_override("select.criterion=entropy")]))
    assert cfg.select == SelectConfig(budget=42, criterion="entropy")


# --- refusals: every message names the field -------------------------------------------------------

BAD_OVERRIDES = [
    pytest.param({"budget": 5}, r"^budget: unknown key", id="unknown-top-level-key"),
    pytest.param({"select.budgte": 5},
                 r"^select\.budgte: unknown key; SelectConfig has \['beta', 'budget', 'candidates', 'criterion', "
                 r"'mc_samples', 'seed_budget', 'seed_strategy', 'stop_kappa', 'strategy'\]",
                 id="unknown-nested-key"),
    pytest.param({"data.pool.row": "1:2"}, r"^data\.pool\.row: unknown key", id="unknown-deeply-nested-key"),
    pytest.param({"select.budget": 0}, r"^select\.budget: must be >= 1, got 0", id="budget-zero"),
    pytest.param({"select.budget": -3}, r"^select\.budget: must be >= 1, got -3", id="budget-negative"),
    pytest.param({"select.criterion": "margin"}, r"^select\.criterion: 'margin' is not one of", id="unknown-criterion"),
    pytest.param({"model.kind": "inception_v3", "model.input_size": 74}, r"^model\.input_size: InceptionV3 needs >= 75",
                 id="inception-too-small"),
    pytest.param({"model.input_size": 4}, r"^model\.input_size: 4 is outside \[8, 1024\]", id="input-size-range"),
    pytest.param({"model.kind": "resnet"}, r"^model\.kind: 'resnet' is not one of", id="unknown-model-kind"),
    pytest.param({"model.kind": "hub"}, r"^model\.handle: is required", id="hub-without-handle"),
    pytest.param({"model.dropout": 1.0}, r"^model\.dropout: 1\.0 is outside \[0, 1\)", id="dropout-one"),
    pytest.param({"model.dropout": math.nan}, r"^model\.dropout: must be a finite number, got nan", id="dropout-nan"),
    pytest.param({"data.pool.rows": "5:2"}, r"^data\.pool\.rows: '5:2' is empty", id="rows-reversed"),
    pytest.param({"data.pool.rows": "5:5"}, r"^data\.pool\.rows: '5:5' is empty", id="rows-empty"),
    pytest.param({"data.val.rows": "-1:"}, r"^data\.val\.rows: '-1:' has a negative bound", id="rows-negative"),
    pytest.param({"data.test.rows": "a:b"}, r"^data\.test\.rows: 'a:b' has a bound that is not an integer",
                 id="rows-not-int"),
    pytest.param({"data.labelled.rows": "1:2:3"}, r"^data\.labelled\.rows: '1:2:3' is not of the form",
                 id="rows-three-parts"),
    pytest.param({"data.pool.kind": "s3"}, r"^data\.pool\.kind: 's3' is not one of", id="unknown-source-kind"),
    pytest.param({"data.pool.kind": "tfds"}, r"^data\.pool\.tfds_name: is required", id="tfds-without-name"),
    pytest.param({"data.pool.path": ""}, r"^data\.pool\.path: is required", id="source-without-path"),
    pytest.param({"select.budget": "100"}, r"^select\.budget: must be an integer, got '100'", id="string-for-int"),
    pytest.param({"select.budget": 1.5}, r"^select\.budget: must be an integer, got 1\.5", id="float-for-int"),
    pytest.param({"select.budget": True}, r"^select\.budget: must be an integer, got True", id="bool-for-int"),
    pytest.param({"train.cpus_per_worker": "1"}, r"^train\.cpus_per_worker: must be a finite number",
                 id="string-for-float"),
    pytest.param({"train.cpus_per_worker": False}, r"^train\.cpus_per_worker: must be a finite number",
                 id="bool-for-float"),
    pytest.param({"name": 3}, r"^name: must be a string, got 3", id="int-for-string"),
    pytest.param({"data.classes": "ab"}, r"^data\.classes: must be a list of strings", id="string-for-list"),
    pytest.param({"data.classes": ["a", 1]}, r"^data\.classes: must be a list of strings", id="mixed-list"),
    pytest.param({"data.classes": ["a", "b", "a"]}, r"^data\.classes: duplicate class names \['a'\]",
                 id="duplicate-class"),
    pytest.param({"data.classes": ["only"]}, r"^data\.classes: needs at least 2 classes", id="one-class"),
    pytest.param({"select": 5}, r"^select: must be a table, got 5", id="scalar-for-table"),
    pytest.param({"select.budget.x": 5}, r"^select\.budget\.x: 'budget' is not a table", id="override-through-scalar"),
    pytest.param({"score.min_actors": 3, "score.max_actors": 2}, r"^score\.max_actors: 2 is below score\.min_actors",
                 id="actors-inverted"),
    pytest.param({"train.head_epochs": 0, "train.finetune_epochs": 0}, r"^train: head_epochs \+ finetune_epochs",
                 id="no-epochs"),
    pytest.param({"select.mc_samples": 1}, r"^select\.mc_samples: must be in \[2, 1000\], got 1", id="mc-samples-one"),
    pytest.param({"select.criterion": "bald", "model.dropout": 0.0},
                 r"^select\.criterion: 'bald' needs model\.dropout > 0 .* or model\.heads > 1",
                 id="bald-without-dropout"),
    pytest.param({"select.criterion": "bald", "model.kind": "keras", "model.path": "m.keras",
                  "model.use": "classifier"}, r"^select\.criterion: 'bald' needs model\.use = 'backbone'",
                 id="bald-on-a-classifier"),
    pytest.param({"model.heads": 0}, r"^model\.heads: 0 is outside \[1, 32\]", id="no-heads"),
    pytest.param({"model.heads": 33}, r"^model\.heads: 33 is outside \[1, 32\]", id="too-many-heads"),
    pytest.param({"model.heads": 2, "model.kind": "keras", "model.path": "m.keras", "model.use": "classifier"},
                 r"^model\.heads: > 1 needs model\.use = 'backbone' \(new heads on its features\), not 'classifier'",
                 id="heads-on-a-classifier"),
    pytest.param({"train.finetune_learning_rate": 1.0}, r"^train\.finetune_learning_rate: 1\.0 is outside \(0, 1\)",
                 id="learning-rate-one"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_OVERRIDES)
def test_bad_config_is_refused_naming_the_field(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("demo", overrides)


def test_bald_samples_an_ensembles_members_without_dropout() -> None:
    cfg = load_config("demo", {"select.criterion": "bald", "model.dropout": 0.0, "model.heads": 3})
    assert (cfg.model.heads, cfg.model.dropout) == (3, 0.0)
    assert load_config("demo").model.heads == 1  # one head unless asked: the model as before


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        pytest.param(("data", "pool"), r"^data\.pool: is required but missing", id="missing-data-pool"),
        pytest.param(("data", "classes"), r"^data\.classes: is required but missing", id="missing-classes"),
        pytest.param(("data",), r"^data: is required but missing", id="missing-data"),
    ],
)
def test_missing_required_field_is_refused(drop: tuple[str, ...], message: str) -> None:
    table = load_config("demo").to_dict()
    *parents, leaf = drop
    node = table
    for part in parents:
        node = node[part]
    del node[leaf]
    with pytest.raises(ConfigError, match=message):
        config_from_dict(table)


@pytest.mark.parametrize(
    "name_or_path",
    ["nope", "demo.toml", "/nonexistent/dir/config.toml", "/etc/hostname"],
)
def test_unknown_preset_or_missing_file_is_refused(name_or_path: str) -> None:
    with pytest.raises(ConfigError, match=r"^config: .* is neither a preset \(demo, flowers\) nor an existing"):
        load_config(name_or_path)


def test_file_without_toml_suffix_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.cfg"
    path.write_text(MINIMAL_TOML)
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config(str(path))


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[select\nbudget = 5\n", id="unclosed-table"),
        pytest.param("name = \n", id="missing-value"),
        pytest.param("name = 'a'\nname = 'b'\n", id="duplicate-key"),
        pytest.param("\x00\x01 binary junk", id="junk"),
    ],
)
def test_invalid_toml_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"^config: '.*broken\.toml' is not valid TOML"):
        load_config(str(path))


def test_toml_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text(MINIMAL_TOML)
    cfg = load_config(str(path))
    assert cfg.name == "tiny"
    assert cfg.seed == 7
    assert cfg.data.classes == ("cat", "dog")
    assert cfg.data.labelled == SourceConfig(kind="manifest", path="labelled.csv", where="data.labelled")
    assert cfg.data.pool.rows == ":1000"
    assert cfg.select == SelectConfig(budget=25, criterion="entropy")
    assert (cfg.model, cfg.train, cfg.score) == (ModelConfig(), TrainConfig(), ScoreConfig())  # defaults
    assert config_from_dict(cfg.to_dict()) == cfg


def test_toml_file_with_overrides(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text(MINIMAL_TOML)
    cfg = load_config(str(path), {"select.budget": 3, "model.input_size": 64})
    assert (cfg.select.budget, cfg.model.input_size) == (3, 64)


def test_toml_file_error_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text(MINIMAL_TOML.replace("budget = 25", "budget = 0"))
    with pytest.raises(ConfigError, match=r"^select\.budget: must be >= 1, got 0"):
        load_config(str(path))


def test_configs_are_frozen() -> None:
    cfg = load_config("demo")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.select.budget = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [("0:300", slice(0, 300)), ("900:", slice(900, None)), (":5", slice(None, 5)), (":", slice(None, None)),
     (" 3 : 9 ", slice(3, 9))],
)
def test_row_slice(rows: str, expected: slice) -> None:
    assert row_slice(rows) == expected


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seed_outside_what_the_seeded_code_accepts_is_refused(seed: int) -> None:
    with pytest.raises(ConfigError, match=r"^seed: "):
        load_config("demo", {"seed": seed})


def test_config_requires_data() -> None:
    with pytest.raises(TypeError):
        Config()  # type: ignore[call-arg]


def test_a_small_training_set_gets_fewer_workers():
    from raysal.config import TrainConfig
    from raysal.model.train import workers_for

    t = TrainConfig(num_workers=4, images_per_worker=2000)
    assert [workers_for(t, n) for n in (0, 1, 2000, 2001, 7999, 100_000)] == [1, 1, 1, 2, 4, 4]
    assert workers_for(TrainConfig(num_workers=4, images_per_worker=0), 10) == 4  # 0: always num_workers
    with pytest.raises(ConfigError, match="train.images_per_worker"):
        TrainConfig(images_per_worker=-1)
