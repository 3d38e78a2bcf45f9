"""cluster.yaml validated offline with Ray's own cluster-launcher schema and checks."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


def load() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_passes_rays_validation():
    config = load()
    validate_config(prepare_config(copy.deepcopy(config)))
    assert config["docker"]["image"] == "rayproject/ray:2.60.0-py311-gpu"
    head, worker = (config["available_node_types"][n] for n in ("head", "gpu_worker"))
    assert head["resources"] == {"CPU": 0}  # nothing scheduled on the head
    assert worker["min_workers"] == 0 and worker["max_workers"] == config["max_workers"] == 8
    assert any("tensorflow[and-cuda]==2.21.0" in c for c in config["setup_commands"])


def _typo_top_level(config: dict) -> None:
    config["max_worker"] = config.pop("max_workers")


def _typo_in_node_type(config: dict) -> None:
    config["available_node_types"]["gpu_worker"]["min_worker"] = 0


def _unknown_head_type(config: dict) -> None:
    config["head_node_type"] = "head_node"


def _bad_docker_key(config: dict) -> None:
    config["docker"]["imagee"] = config["docker"].pop("image")


@pytest.mark.parametrize(("breakage", "error", "match"), [
    (_typo_top_level, jsonschema.ValidationError, "'max_worker' was unexpected"),
    (_typo_in_node_type, jsonschema.ValidationError, "'min_worker' was unexpected"),
    (_unknown_head_type, ValueError, "head_node_type"),
    (_bad_docker_key, AssertionError, "Must provide a container & image name"),  # Ray's docker check
])
def test_broken_copies_are_rejected(breakage, error, match):
    config = load()
    breakage(config)
    with pytest.raises(error, match=match):
        validate_config(prepare_config(config))
