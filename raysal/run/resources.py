"""What a round asks of the cluster: planned from the config, checked before any work, and
waited for visibly and for a bounded time.

``plan`` lists each stage's asks (scoring actors, the decode tasks beside them, Ray Train
workers). ``check`` refuses (``Refused``, exit 2) what no node of the cluster, nor any node type
its autoscaler can add, could ever host: Ray itself would wait for it forever without a word.
``wait_for`` waits for what the cluster could host but has not free now (another job holds the
GPUs, the autoscaler is adding a node), with a line at least every ``WAIT_LINE_S`` seconds, and
raises ``ResourceTimeout`` (exit 3) after the stage's ``resource_timeout_s``.

A stage's asks are placed together: a scoring actor and a decode task on a two-CPU node, or
two 0.5-GPU actors on one GPU. Only the driver, which holds no Ray resources, is not planned.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass

import ray

from raysal.config import Config
from raysal.errors import Refused, ResourceTimeout

log = logging.getLogger(__name__)

STAGES = ("score", "train")
WAIT_LINE_S = 30.0  # a waiting line at least this often
FIRST_LINE_S = 2.0  # the first one once a wait has lasted this long: most waits end sooner, unseen
EPS = 1e-6  # Ray's resources are fixed-point (1e-4); fractions like 3 x 1/3 GPU must still fit


@dataclass(frozen=True)
class Ask:
    """One kind of Ray worker a stage starts: ``count`` of them at once, each with these resources."""

    stage: str  # score | train
    what: str  # "scoring actor", "decode task", "Ray Train worker"
    count: int  # needed at once for the stage to start
    cpus: float
    gpus: float
    cpu_field: str  # the config fields that set them, for the messages
    gpu_field: str = ""
    count_field: str = ""
    most: int = 0  # up to this many (an actor pool grows to score.max_actors); 0: count

    def each(self) -> str:
        """``0.5 CPU + 1 GPU each``."""
        parts = [f"{_num(self.cpus)} CPU"] + ([f"{_num(self.gpus)} GPU"] if self.gpus else [])
        return " + ".join(parts) + " each"

    def counted(self) -> str:
        """``2 scoring actors``; ``1-4 scoring actors`` for a pool that grows; ``1+ decode tasks``."""
        if self.what == "decode task":
            return "1+ decode tasks"
        count = f"{self.count}-{self.most}" if self.most > self.count else str(self.count)
        return f"{count} {self.what}{'s' if self.count != 1 or self.most > 1 else ''}"

    def bundle(self) -> dict[str, float]:
        return {"CPU": self.cpus, **({"GPU": self.gpus} if self.gpus else {})}


@dataclass(frozen=True)
class Node:
    """A node of the cluster, or a node type the autoscaler can add (``most`` of them, -1: no limit)."""

    name: str
    cpus: float
    gpus: float
    free_cpus: float = 0.0
    free_gpus: float = 0.0
    most: int = 0  # a node type: how many the autoscaler may have; 0: a live node

    def hosts(self, cpus: float, gpus: float) -> int:
        """How many workers of (cpus, gpus) fit here at once, on all of its resources."""
        fits = math.floor(min(self.cpus / cpus, 10**9) + EPS) if cpus > 0 else 10**9  # a type of unknown size: inf
        if gpus > 0:
            fits = min(fits, math.floor(min(self.gpus / gpus, 10**9) + EPS))
        return max(0, fits)

    def shape(self) -> str:
        if math.isinf(self.cpus):
            return "CPUs and GPUs unknown"
        return f"{_amount(self.cpus, 'CPU')}, {_amount(self.gpus, 'GPU')}"


def _num(value: float) -> str:
    return f"{value:g}"


def _amount(value: float, unit: str) -> str:
    """``0 GPUs``, ``0.5 GPU``, ``1 GPU``, ``2 GPUs``."""
    return f"{_num(value)} {unit}{'s' if value > 1 or value == 0 else ''}"


def decode_fused(cfg: Config) -> bool:
    """Whether Ray Data runs decoding inside the scoring actors: it fuses two map stages whose
    resources are the same (the CPU shape with score.decode_cpus = score.cpus_per_actor). GPU
    actors never are: their decode tasks run beside them on CPUs, and the actors only infer."""
    return cfg.score.decode_cpus == cfg.score.cpus_per_actor and not cfg.score.gpus_per_actor


def plan(cfg: Config, train_workers: int | None = None) -> list[Ask]:
    """Every stage's asks. Training asks for ``train.num_workers`` (the most it starts: a small
    training set starts fewer, ``train.images_per_worker``), or for ``train_workers``."""
    s, t = cfg.score, cfg.train
    asks = [Ask("score", "scoring actor", s.min_actors, s.cpus_per_actor, s.gpus_per_actor, "score.cpus_per_actor",
                "score.gpus_per_actor", "score.min_actors", most=s.max_actors)]
    if not decode_fused(cfg):  # at least one must run beside the actors, or no image ever reaches them
        asks.append(Ask("score", "decode task", 1, s.decode_cpus, 0.0, "score.decode_cpus"))
    asks.append(Ask("train", "Ray Train worker", t.num_workers if train_workers is None else train_workers,
                    t.cpus_per_worker, t.gpus_per_worker, "train.cpus_per_worker", "train.gpus_per_worker",
                    "train.num_workers"))
    return asks


def stage_asks(cfg: Config, stage: str, train_workers: int | None = None) -> list[Ask]:
    return [a for a in plan(cfg, train_workers) if a.stage == stage]


# --- the cluster ---------------------------------------------------------------------------------


def live_nodes() -> list[Node]:
    """The cluster's live nodes, with their free resources now."""
    from ray._private import state as ray_state

    from raysal.run.cluster import alive_nodes

    free = ray_state.available_resources_per_node()
    nodes = []
    for node in alive_nodes():
        total, now = node.get("Resources", {}), free.get(node["NodeID"], {})
        nodes.append(Node(f"{node['NodeManagerAddress']} (node {node['NodeID'][:8]})", total.get("CPU", 0.0),
                          total.get("GPU", 0.0), now.get("CPU", 0.0), now.get("GPU", 0.0)))
    return nodes


BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"  # where `ray up` puts the cluster's config on its head


def node_types() -> list[Node]:
    """The node types the cluster's autoscaler can add (empty without one): as the autoscaler
    reported them to Ray's GCS (what Ray Train reads too), else from the config ``ray up`` leaves
    on the head, where a round's driver runs. A type whose resources that file leaves to be
    detected counts as able to host anything: raysal cannot know, so it refuses nothing for it."""
    from ray._private import state as ray_state

    try:
        config = ray_state.state.get_cluster_config()
    except Exception:  # noqa: BLE001  (an older GCS, or none reported: try the launcher's file)
        config = None
    if config is not None and config.node_group_configs:
        return [Node(f"node type {group.name}", group.resources.get("CPU", 0.0), group.resources.get("GPU", 0.0),
                     most=group.max_count) for group in config.node_group_configs if group.max_count != 0]
    return bootstrap_node_types(os.path.expanduser(BOOTSTRAP_CONFIG))


def bootstrap_node_types(path: str) -> list[Node]:
    """The worker node types of a cluster launcher config (``cluster.yaml`` as ``ray up`` fills it in)."""
    import yaml

    try:
        with open(path) as f:
            config = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return []
    head = config.get("head_node_type")
    types = []
    for name, spec in (config.get("available_node_types") or {}).items():
        cap = int(config.get("max_workers", 0) or 0)  # the cluster's, over all types
        most = min(int(spec.get("max_workers", cap) or 0), cap)
        if name == head or most <= 0:
            continue
        found = spec.get("resources") or {}
        if "CPU" not in found:  # detected when the node starts: unknown here
            types.append(Node(f"node type {name} (resources detected at start)", math.inf, math.inf, most=most))
        else:
            types.append(Node(f"node type {name}", float(found.get("CPU", 0)), float(found.get("GPU", 0)), most=most))
    return types


def autoscaler_line() -> str:
    """What the autoscaler is adding now: ``autoscaler: 1 g5.xlarge pending``; ``no autoscaler``."""
    try:
        from ray.autoscaler.v2.sdk import get_cluster_status

        status = get_cluster_status(ray.get_runtime_context().gcs_address, timeout=5)
    except Exception:  # noqa: BLE001  (a courtesy in a waiting line: never fail the wait over it)
        return "autoscaler: unknown"
    pending = [f"{launch.count} {launch.instance_type_name or launch.ray_node_type_name}"
               for launch in status.pending_launches]
    pending += [f"1 {node.instance_type_name or node.ray_node_type_name} starting" for node in status.pending_nodes]
    failed = [f"{launch.count} {launch.instance_type_name or launch.ray_node_type_name}"
              for launch in status.failed_launches]
    if not node_types():
        return "no autoscaler"
    line = f"autoscaler: {', '.join(pending)} pending" if pending else "autoscaler: nothing pending"
    return line + (f", failed to launch {', '.join(failed)}" if failed else "")


def _largest(nodes: list[Node]) -> str:
    if not nodes:
        return "no nodes with resources"
    big = max(nodes, key=lambda n: (n.gpus, n.cpus))
    return f"largest: {big.shape()}"


def _capacity(nodes: list[Node], cpus: float, gpus: float, wanted: int) -> int:
    """How many workers of (cpus, gpus) the nodes and node types can host at once (capped at ``wanted``)."""
    total = 0
    for node in nodes:
        each = node.hosts(cpus, gpus)
        total += each * (wanted if node.most < 0 else max(node.most, 1))
    return min(total, wanted)


def _packs(asks: list[Ask], nodes: list[Node]) -> bool:
    """Whether every ask's workers fit at once, first-fit by size over the nodes (node types
    counted as many times as the autoscaler may add them)."""
    room = []
    for node in nodes:
        copies = 1 if not node.most else (sum(a.count for a in asks) if node.most < 0 else node.most)
        room += [[node.cpus, node.gpus] for _ in range(copies)]
    for ask in sorted(asks, key=lambda a: (a.gpus, a.cpus), reverse=True):
        for _ in range(ask.count):
            spot = next((r for r in room if r[0] + EPS >= ask.cpus and r[1] + EPS >= ask.gpus), None)
            if spot is None:
                return False
            spot[0] -= ask.cpus
            spot[1] -= ask.gpus
    return True


def problems(asks: list[Ask], nodes: list[Node]) -> list[str]:
    """Why the asks can never be placed on these nodes (live ones, and node types): one message
    per problem, naming the stage, the config fields and the largest node; empty when they fit."""
    found = []
    where = "this cluster" if not any(n.most for n in nodes) else "this cluster, or any node type its autoscaler adds,"
    shapes = ", ".join(sorted({n.shape() for n in nodes})) or "none"
    for ask in asks:
        prefix = f"stage {ask.stage}: "
        if ask.gpus and not any(n.gpus for n in nodes):
            found.append(f"{prefix}{ask.gpu_field} = {_num(ask.gpus)} but no node of {where} has a GPU "
                         f"({_largest(nodes)}); set {ask.gpu_field} = 0 or add GPU nodes")
            continue
        if ask.gpus and not any(n.gpus + EPS >= ask.gpus for n in nodes):
            most = max(n.gpus for n in nodes)
            found.append(f"{prefix}{ask.gpu_field} = {_num(ask.gpus)} but no node of {where} has that many GPUs "
                         f"({_largest(nodes)}); set {ask.gpu_field} <= {_num(most)} or add nodes with "
                         f"{_num(ask.gpus)} GPUs")
            continue
        if not any(n.cpus + EPS >= ask.cpus for n in nodes):
            found.append(f"{prefix}{ask.cpu_field} = {_num(ask.cpus)} but no node of {where} has that many CPUs "
                         f"({_largest(nodes)}); set {ask.cpu_field} <= {_num(max((n.cpus for n in nodes), default=0))}"
                         " or add larger nodes")
            continue
        if not any(n.hosts(ask.cpus, ask.gpus) for n in nodes):
            found.append(f"{prefix}a {ask.what} asks for {ask.each().removesuffix(' each')} ({ask.cpu_field}, "
                         f"{ask.gpu_field}) but no node of {where} has both (nodes: {shapes})")
            continue
        can = _capacity(nodes, ask.cpus, ask.gpus, ask.count)
        if can < ask.count:
            need = (f"{_num(ask.count * ask.gpus)} GPUs" if ask.gpus and sum(n.gpus for n in nodes if not n.most)
                    < ask.count * ask.gpus else f"{_num(ask.count * ask.cpus)} CPUs")
            found.append(f"{prefix}{ask.count_field} = {ask.count} {ask.what}s at {ask.each()} need {need} at once, "
                         f"but {where} can host {can} (nodes: {shapes}); set {ask.count_field} = {max(can, 1)}, "
                         f"lower {ask.gpu_field if ask.gpus else ask.cpu_field}, or add "
                         f"{'GPU ' if ask.gpus else ''}nodes")
    if not found:
        for stage in STAGES:
            together = [a for a in asks if a.stage == stage]
            if len(together) > 1 and not _packs(together, nodes):
                found.append(f"stage {stage}: {' and '.join(f'{a.counted()} ({a.each()})' for a in together)} "
                             f"do not fit at once on {where} (nodes: {shapes}): the first would hold the CPUs "
                             f"the others need and the stage would never progress; lower "
                             f"{', '.join(sorted({a.cpu_field for a in together}))}")
    return found


def cluster_nodes() -> list[Node]:
    """The live nodes and the node types the autoscaler can add."""
    return live_nodes() + node_types()


def check(cfg: Config) -> None:
    """Raise ``Refused`` naming every ask of the round that no node could ever host (call after
    ``init_ray``, before the lease and before anything is written)."""
    found = problems(plan(cfg), cluster_nodes())
    if found:
        raise Refused("; ".join(found))


def describe_plan(cfg: Config) -> tuple[str, bool]:
    """The plan as ``raysal round --plan`` prints it, and whether it fits."""
    nodes = live_nodes()
    types = node_types()
    asks = plan(cfg)
    lines = [f"cluster: {len(nodes)} node{'s' if len(nodes) != 1 else ''}"
             + (f" and {len(types)} node type{'s' if len(types) != 1 else ''} its autoscaler can add" if types
                else "; no autoscaler")]
    lines += [f"  {n.name}: {n.shape()}; free now: {_amount(n.free_cpus, 'CPU')}, {_amount(n.free_gpus, 'GPU')}"
              for n in nodes]
    lines += [f"  {t.name}: {t.shape()}, up to {'any number' if t.most < 0 else t.most}" for t in types]
    for stage in STAGES:
        lines.append(f"stage {stage}:")
        for ask in (a for a in asks if a.stage == stage):
            hosts = [f"{n.name} (up to {n.hosts(ask.cpus, ask.gpus)})" for n in nodes + types
                     if n.hosts(ask.cpus, ask.gpus)]
            extra = ""
            if ask.what == "decode task":
                extra = ", as many as the free CPUs allow, beside the actors (the actors only infer)"
            lines.append(f"  {ask.counted()}, {ask.each()}{extra}: "
                         f"{'can run on ' + ', '.join(hosts) if hosts else 'no node can host one'}")
        if stage == "score" and decode_fused(cfg):
            lines.append("  decoding runs inside the scoring actors (score.decode_cpus = score.cpus_per_actor, "
                         "no GPUs): Ray Data fuses the two")
    lines.append("driver: this process, outside Ray's resources: it holds the lease and writes the state")
    found = problems(asks, nodes + types)
    lines += [f"refused: {p}" for p in found] if found else ["fits: every stage can be placed on this cluster"]
    return "\n".join(lines), not found


# --- waiting ------------------------------------------------------------------------------------


def _free_line() -> str:
    total, free = ray.cluster_resources(), ray.available_resources()
    parts = [f"{_num(round(free.get(k, 0.0), 4))} of {_amount(total.get(k, 0.0), k)} free" for k in ("GPU", "CPU")]
    return f"cluster: {', '.join(parts)}; {autoscaler_line()}"


def _awaited(asks: list[Ask]) -> str:
    return " and ".join(f"{a.count} {a.what}{'s' if a.count != 1 else ''} ({a.each()})" for a in asks)


def wait_for(stage: str, asks: list[Ask], timeout_s: float, timeout_field: str) -> None:
    """Return once the cluster has the stage's asks free at once; until then log a waiting line
    at least every ``WAIT_LINE_S`` s. Raise ``ResourceTimeout`` after ``timeout_s`` (0: never).

    When the live nodes' free resources hold the asks now, it returns at once. Otherwise the
    resources are reserved by a placement group (which also tells an autoscaler what to add) and
    released as soon as granted, for the stage's own workers to take. Ctrl-C ends the wait.
    """
    from ray.util.placement_group import placement_group, remove_placement_group

    asks = [a for a in asks if a.count > 0]
    if not asks or _packs(asks, [Node(n.name, n.free_cpus, n.free_gpus) for n in live_nodes()]):
        return  # the common case: no placement group to make and remove (~0.25 s a pass on 2 cores)
    pg = placement_group([a.bundle() for a in asks for _ in range(a.count)], strategy="PACK")
    started = time.monotonic()
    next_line = started + FIRST_LINE_S
    try:
        ready = pg.ready()
        while not ray.wait([ready], timeout=1.0)[0]:
            waited = time.monotonic() - started
            if timeout_s and waited >= timeout_s:
                raise ResourceTimeout(
                    f"stage {stage}: the cluster did not free {_awaited(asks)} within {timeout_field} = "
                    f"{_num(timeout_s)} s ({_free_line()}). Free them (another job may hold them), let the "
                    f"autoscaler add nodes, or raise {timeout_field} (0 waits forever)")
            if time.monotonic() >= next_line:
                log.info("stage %s: waiting for resources: %s not placed yet, %d s so far (%s); %s", stage,
                         _awaited(asks), waited, _free_line(),
                         f"stops after {timeout_field} = {_num(timeout_s)} s" if timeout_s else
                         f"waits forever ({timeout_field} = 0)")
                next_line = time.monotonic() + WAIT_LINE_S
    finally:
        remove_placement_group(pg)
    if time.monotonic() - started >= FIRST_LINE_S:
        log.info("stage %s: resources free after %.0f s", stage, time.monotonic() - started)
