"""Starting or joining Ray with the environment raysal's workers need, and what a cluster sees."""

from __future__ import annotations

import os
import uuid

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raysal.errors import Unavailable
from raysal.model import keras_env


def init_ray(num_cpus: int | None = None) -> None:
    """Join the cluster in ``RAY_ADDRESS`` (as under ``ray job submit``), else start a local one."""
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or None
    try:
        ray.init(address=address or "local", num_cpus=None if address else num_cpus,
                 runtime_env={"env_vars": keras_env.worker_env()}, log_to_driver=True)
    except ConnectionError as exc:  # a cluster that is down, or that wants a token this process lacks
        cause = str(exc.__cause__ or "")
        hint = ("; the cluster uses token authentication: give this process its token (RAY_AUTH_MODE=token with "
                "RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN)" if "AuthToken" in cause or "Authentication" in cause
                else "; is the cluster up, and RAY_ADDRESS its GCS address (host:6379)?")
        raise Unavailable(f"RAY_ADDRESS = {address}: {exc}{hint}") from None


def alive_nodes() -> list[dict]:
    """The cluster's live nodes, as ``ray.nodes()`` describes them."""
    return [node for node in ray.nodes() if node.get("Alive")]


def _path_mark(path: str) -> tuple[str, int]:
    """What a node sees at ``path``: ("file", size), ("dir", 0) or ("missing", 0)."""
    if os.path.isfile(path):
        return "file", os.path.getsize(path)
    return ("dir", 0) if os.path.isdir(path) else ("missing", 0)


@ray.remote(num_cpus=0)
def _marks_on_node(paths: list[str]) -> list[tuple[str, int]]:
    return [_path_mark(p) for p in paths]


def _nearest_existing_dir(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.isdir(path):
        path = os.path.dirname(path)
    return path


def paths_not_shared(paths: dict[str, str], timeout_s: float = 60.0) -> list[str]:
    """Which local paths some node of the cluster cannot see as the driver does.

    Args:
        paths: what each path is for (a config field, "--state") -> a local path on the driver.

    An existing file must have the same size on every node; a folder, or a path that does not
    exist yet (a new state folder), is checked through a probe file written in it or in its
    nearest existing folder and removed at once. One task per node, pinned there.

    Returns:
        one message per path that some node does not see, naming the node; empty on one node.
    """
    nodes = alive_nodes()
    if len(nodes) < 2:
        return []
    probes: dict[str, str] = {}
    checked: dict[str, str] = {}
    for field, path in paths.items():
        if os.path.isfile(path):
            checked[field] = path
            continue
        folder = _nearest_existing_dir(path)  # a folder of the same name may exist on every node: probe it
        probe = os.path.join(folder, f".raysal-probe-{uuid.uuid4().hex}")
        try:
            open(probe, "wb").close()
        except OSError:  # a read-only folder: compare what each node sees there
            checked[field] = path
            continue
        probes[field] = probe
        checked[field] = probe
    try:
        wanted = [_path_mark(p) for p in checked.values()]
        refs = [_marks_on_node.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                .remote(list(checked.values())) for node in nodes]
        seen = ray.get(refs, timeout=timeout_s)
    finally:
        for probe in probes.values():
            os.remove(probe)
    problems = []
    for i, field in enumerate(checked):
        blind = [f"{node['NodeManagerAddress']} (node {node['NodeID'][:8]})"
                 for node, marks in zip(nodes, seen, strict=True) if marks[i] != wanted[i]]
        if blind:
            original = paths[field]
            problems.append(f"{field}: {original} is a path on this machine's disk, and node(s) {', '.join(blind)} "
                            "of the cluster do not see it there")
    return problems


def cluster_cpus() -> int:
    """The cluster's CPUs (at least 1): how many plain tasks a pass over files fans out to."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
