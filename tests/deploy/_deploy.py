"""deploy/ read for the tests: the manifests, the Dockerfile, the project files they must agree with.

Every check in tests/deploy returns the problems it finds; the real files must have none, and each
broken copy a test module makes must be reported, so that no check passes whatever the files say.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import sys
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Callable

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
MANIFESTS = ("raycluster.yaml", "cronjob.yaml", "rayjob-cronjob.yaml")


@dataclass(frozen=True)
class Project:
    pyproject: dict
    constraints: dict[str, str]  # constraints.txt: the exact versions, by lower-case name
    cluster_yaml: dict
    dockerfile: str
    dockerignore: str
    raycluster: dict
    network_policy: dict  # deploy/raycluster.yaml's, around the standing cluster
    cronjob: dict
    rounds: dict[str, dict]  # deploy/rayjob-cronjob.yaml's objects by kind
    rayjob: dict  # the RayJob in its ConfigMap
    readme: str
    texts: dict[str, str]  # the manifests as written, by file name


def objects_by_kind(name: str, text: str) -> dict[str, dict]:
    objects = {}
    for document in yaml.safe_load_all(text):
        assert document["kind"] not in objects, f"two {document['kind']}s in deploy/{name}"
        objects[document["kind"]] = document
    return objects


def load_project() -> Project:
    texts = {name: (DEPLOY / name).read_text() for name in MANIFESTS}
    standing = objects_by_kind("raycluster.yaml", texts["raycluster.yaml"])
    assert set(standing) == {"RayCluster", "NetworkPolicy"}, f"deploy/raycluster.yaml holds {sorted(standing)}"
    (cronjob,) = yaml.safe_load_all(texts["cronjob.yaml"])
    rounds = objects_by_kind("rayjob-cronjob.yaml", texts["rayjob-cronjob.yaml"])
    return Project(
        pyproject=tomllib.loads((REPO / "pyproject.toml").read_text()),
        constraints=dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (REPO / "constraints.txt").read_text().lower(),
                                    re.M)),
        cluster_yaml=yaml.safe_load((REPO / "cluster.yaml").read_text()),
        dockerfile=(DEPLOY / "Dockerfile").read_text(),
        dockerignore=(DEPLOY / "Dockerfile.dockerignore").read_text(),
        raycluster=standing["RayCluster"],
        network_policy=standing["NetworkPolicy"],
        cronjob=cronjob,
        rounds=rounds,
        rayjob=yaml.safe_load(rounds["ConfigMap"]["data"]["rayjob.yaml"]),
        readme=(REPO / "docs" / "clusters.md").read_text(),  # the page that shows the deployment
        texts=texts,
    )


def load_script(path: Path, name: str) -> ModuleType:
    """A script that is no package module (jobs/round.py, deploy/pin_images.py), imported from its file."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # a dataclass in it looks its module up there
    spec.loader.exec_module(module)
    return module


def changed(p: Project, which: str, change: Callable[[dict], None]) -> Project:
    """A copy of the project with ``change`` applied to a copy of one of its objects."""
    document = copy.deepcopy(getattr(p, which))
    change(document)
    return replace(p, **{which: document})


def pins(p: Project) -> dict[str, str]:
    """``{"ray": "2.60.0", "tensorflow": "2.21.0", ...}``: the versions constraints.txt pins."""
    return p.constraints


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """``(KEYWORD, arguments)`` per instruction, continuation lines joined, comments dropped."""
    lines = [line for line in dockerfile.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    words = [line.split(None, 1) for line in joined.splitlines() if line.strip()]
    return [(keyword.upper(), rest.strip()) for keyword, rest in words]


def documented_image(dockerfile: str) -> str | None:
    """The image the Dockerfile says it builds: ``-t IMAGE`` in its ``docker build`` comment."""
    match = re.search(r"^#\s+docker build -f deploy/Dockerfile -t (\S+) \.$", dockerfile, re.MULTILINE)
    return match.group(1) if match else None


def containers(spec: dict) -> list[dict]:
    return spec["template"]["spec"]["containers"]


def ray_containers(raycluster: dict) -> list[dict]:
    return cluster_containers(raycluster["spec"])


def cluster_containers(spec: dict) -> list[dict]:
    """The containers of a RayClusterSpec: the head's, then the workers'."""
    return containers(spec["headGroupSpec"]) + [c for g in spec["workerGroupSpecs"] for c in containers(g)]


def rayjob_cluster(p: Project) -> dict:
    return p.rayjob["spec"]["rayClusterSpec"]


def submit_container(cronjob: dict) -> dict:
    (container,) = containers(cronjob["spec"]["jobTemplate"]["spec"])
    return container


def rayjob_submitter(p: Project) -> dict:
    """The RayJob's submitterPodTemplate: KubeRay's submitter Job runs its one container."""
    return p.rayjob["spec"]["submitterPodTemplate"]


def round_container(p: Project) -> dict:
    """The container of deploy/rayjob-cronjob.yaml's CronJob, which creates the RayJob and waits for it."""
    (container,) = containers(p.rounds["CronJob"]["spec"]["jobTemplate"]["spec"])
    return container


def clusters(p: Project) -> list[tuple[str, dict]]:
    """Each RayClusterSpec: the standing RayCluster's and the one each RayJob starts."""
    return [("the RayCluster", p.raycluster["spec"]), ("the RayJob's cluster", rayjob_cluster(p))]


def pod_templates(p: Project) -> list[tuple[str, dict]]:
    """Every pod template of deploy/, as ``(where, template)``: Ray nodes', submitters' and the kubectl pod's."""
    templates = []
    for where, spec in clusters(p):
        templates.append((f"{where}'s head", spec["headGroupSpec"]["template"]))
        templates += [(f"{where}'s {g['groupName']} workers", g["template"]) for g in spec["workerGroupSpecs"]]
    return templates + [
        ("deploy/cronjob.yaml's pod", p.cronjob["spec"]["jobTemplate"]["spec"]["template"]),
        ("the RayJob's submitter", rayjob_submitter(p)),
        ("deploy/rayjob-cronjob.yaml's pod", p.rounds["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]),
    ]


def option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None
