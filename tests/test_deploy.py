"""deploy/ (image, RayCluster, CronJob) agrees with itself, with cluster.yaml and with the project.

Every check returns the problems it finds; the real files must have none, and each broken copy
below must be reported, so that no check passes whatever the files say.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import shlex
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from raysal import config as config_lib
from raysal import schedule

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"

# Field names of the objects the manifests write, so that a misspelt field is caught here and not
# silently dropped by the API server. batch/v1 CronJobSpec, JobSpec: the Kubernetes API reference;
# RayClusterSpec, HeadGroupSpec, WorkerGroupSpec, AutoscalerOptions, AuthOptions: KubeRay's
# ray-operator/apis/ray/v1/raycluster_types.go and its CRD (helm-chart/kuberay-operator/crds).
KNOWN_FIELDS = {
    "CronJob.spec": {"concurrencyPolicy", "failedJobsHistoryLimit", "jobTemplate", "schedule",
                     "startingDeadlineSeconds", "successfulJobsHistoryLimit", "suspend", "timeZone"},
    "Job.spec": {"activeDeadlineSeconds", "backoffLimit", "backoffLimitPerIndex", "completionMode", "completions",
                 "managedBy", "manualSelector", "maxFailedIndexes", "parallelism", "podFailurePolicy",
                 "podReplacementPolicy", "selector", "successPolicy", "suspend", "template",
                 "ttlSecondsAfterFinished"},
    "RayCluster.spec": {"authOptions", "autoscalerOptions", "enableInTreeAutoscaling", "gcsFaultToleranceOptions",
                        "headGroupSpec", "headServiceAnnotations", "managedBy", "rayVersion", "suspend",
                        "workerGroupSpecs"},
    "headGroupSpec": {"enableIngress", "headService", "rayStartParams", "serviceType", "template"},
    "workerGroupSpec": {"groupName", "idleTimeoutSeconds", "maxReplicas", "minReplicas", "numOfHosts",
                        "rayStartParams", "replicas", "scaleStrategy", "suspend", "template"},
    "autoscalerOptions": {"env", "envFrom", "idleTimeoutSeconds", "image", "imagePullPolicy", "resources",
                          "securityContext", "upscalingMode", "volumeMounts"},
    "authOptions": {"enableK8sTokenAuth", "mode", "secretName"},
}


@dataclass(frozen=True)
class Project:
    pyproject: dict
    cluster_yaml: dict
    dockerfile: str
    dockerignore: str
    raycluster: dict
    cronjob: dict
    readme: str


def load_project() -> Project:
    def one_document(path: Path) -> dict:
        (document,) = yaml.safe_load_all(path.read_text())
        return document

    return Project(
        pyproject=tomllib.loads((REPO / "pyproject.toml").read_text()),
        cluster_yaml=yaml.safe_load((REPO / "cluster.yaml").read_text()),
        dockerfile=(DEPLOY / "Dockerfile").read_text(),
        dockerignore=(DEPLOY / "Dockerfile.dockerignore").read_text(),
        raycluster=one_document(DEPLOY / "raycluster.yaml"),
        cronjob=one_document(DEPLOY / "cronjob.yaml"),
        readme=(REPO / "README.md").read_text(),
    )


def pins(pyproject: dict) -> dict[str, str]:
    """``{"ray": "2.60.0", "tensorflow": "2.21.0", ...}`` from the ``name[extras]==version`` dependencies."""
    pinned = (re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", d) for d in pyproject["project"]["dependencies"])
    return {m.group(1).lower(): m.group(2) for m in pinned if m}


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
    spec = raycluster["spec"]
    return containers(spec["headGroupSpec"]) + [c for g in spec["workerGroupSpecs"] for c in containers(g)]


def submit_container(cronjob: dict) -> dict:
    (container,) = containers(cronjob["spec"]["jobTemplate"]["spec"])
    return container


def submit_command(cronjob: dict) -> tuple[list[str], list[str]]:
    """The CronJob's command split at ``--``: jobs/submit.py's part, and jobs/round.py's arguments."""
    command = submit_container(cronjob)["command"]
    split = command.index("--") if "--" in command else len(command)
    return command[:split], command[split + 1:]


def option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def load_round_job() -> Any:
    spec = importlib.util.spec_from_file_location("round_job", REPO / "jobs" / "round.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the checks: each returns what it finds wrong ---

def base_image_problems(p: Project) -> list[str]:
    froms = [args for keyword, args in instructions(p.dockerfile) if keyword == "FROM"]
    if len(froms) != 1:
        return [f"the Dockerfile has {len(froms)} FROM instructions, expected 1"]
    image = froms[0]
    problems = []
    if image != p.cluster_yaml["docker"]["image"]:
        problems.append(f"FROM {image} is not cluster.yaml's image {p.cluster_yaml['docker']['image']}")
    match = re.fullmatch(r"rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py3(?P<minor>\d+)-gpu", image)
    if not match:
        return problems + [f"FROM {image} is not a rayproject/ray:<version>-py3XX-gpu image"]
    if match["ray"] != pins(p.pyproject)["ray"]:
        problems.append(f"FROM has Ray {match['ray']}, pyproject.toml pins ray {pins(p.pyproject)['ray']}")
    requires_python = p.pyproject["project"]["requires-python"]
    if f"3.{match['minor']}" not in SpecifierSet(requires_python):
        problems.append(f"FROM has Python 3.{match['minor']}, pyproject.toml requires {requires_python}")
    ray_version = p.raycluster["spec"].get("rayVersion")
    if ray_version != match["ray"]:
        problems.append(f"the RayCluster's rayVersion {ray_version} is not the image's Ray {match['ray']}")
    return problems


def install_problems(p: Project) -> list[str]:
    installs = [shlex.split(args) for keyword, args in instructions(p.dockerfile)
                if keyword == "RUN" and "pip install" in args]
    words = [word for install in installs for word in install]
    problems = []
    if "." not in words:
        problems.append("the Dockerfile does not pip install the project (`pip install .`)")
    wanted = f"tensorflow[and-cuda]=={pins(p.pyproject)['tensorflow']}"
    if wanted not in words:
        found = [w for w in words if w.startswith("tensorflow")]
        problems.append(f"the Dockerfile installs {found}, not {wanted} "
                        "(pyproject.toml's TensorFlow with its CUDA libraries)")
    workdirs = [args for keyword, args in instructions(p.dockerfile) if keyword == "WORKDIR"]
    copies = [args.split() for keyword, args in instructions(p.dockerfile) if keyword == "COPY"]
    if not workdirs or not any(c[-2:] == [".", "."] for c in copies):
        problems.append("the repository is not copied into the WORKDIR, where `python jobs/round.py` runs")
    ignored = {line.strip() for line in p.dockerignore.splitlines() if line.strip() and not line.startswith("#")}
    for path in (".git", ".venv", ".raysal", "bench-results"):
        if path not in ignored:
            problems.append(f"deploy/Dockerfile.dockerignore does not exclude {path}")
    return problems


def image_problems(p: Project) -> list[str]:
    image = documented_image(p.dockerfile)
    if image is None:
        return ["the Dockerfile does not say which image it builds (docker build -f deploy/Dockerfile -t IMAGE .)"]
    problems = []
    if not image.endswith(":" + p.pyproject["project"]["version"]):
        problems.append(f"the image {image} is not tagged with raysal's version {p.pyproject['project']['version']}")
    used = [c["image"] for c in ray_containers(p.raycluster)] + [submit_container(p.cronjob)["image"]]
    problems += [f"a container runs {u}, not the image deploy/Dockerfile builds ({image})" for u in used if u != image]
    if f"docker build -f deploy/Dockerfile -t {image} ." not in p.readme:
        problems.append(f"the README does not show the build of {image}")
    return problems


def raycluster_problems(p: Project) -> list[str]:
    spec = p.raycluster["spec"]
    problems = []
    if (p.raycluster["apiVersion"], p.raycluster["kind"]) != ("ray.io/v1", "RayCluster"):
        problems.append(f"{p.raycluster['apiVersion']} {p.raycluster['kind']} is not a ray.io/v1 RayCluster")
    if spec["headGroupSpec"]["rayStartParams"].get("num-cpus") != "0":
        problems.append("the head advertises CPUs (rayStartParams num-cpus must be the string \"0\")")
    groups = spec["workerGroupSpecs"]
    scaled = [g["groupName"] for g in groups if "minReplicas" in g or "maxReplicas" in g]
    if scaled and spec.get("enableInTreeAutoscaling") is not True:
        problems.append(f"worker groups {scaled} give min/max replicas but enableInTreeAutoscaling is not true")
    gpu_groups = [g for g in groups if any(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu") == 1
                                           for c in containers(g))]
    worker = p.cluster_yaml["available_node_types"]["gpu_worker"]
    if len(gpu_groups) != 1:
        problems.append(f"{len(gpu_groups)} worker groups with nvidia.com/gpu: 1, expected 1")
    elif (scale := (gpu_groups[0].get("minReplicas"), gpu_groups[0].get("maxReplicas"))) != (
            worker["min_workers"], worker["max_workers"]):
        problems.append(f"the GPU group scales {scale[0]}..{scale[1]}, "
                        f"cluster.yaml {worker['min_workers']}..{worker['max_workers']}")
    return problems


def schedule_problems(p: Project) -> list[str]:
    problems = []
    if (p.cronjob["apiVersion"], p.cronjob["kind"]) != ("batch/v1", "CronJob"):
        problems.append(f"{p.cronjob['apiVersion']} {p.cronjob['kind']} is not a batch/v1 CronJob")
    if p.cronjob["spec"].get("concurrencyPolicy") != "Forbid":
        problems.append(f"concurrencyPolicy is {p.cronjob['spec'].get('concurrencyPolicy')}, not Forbid")
    if len(p.cronjob["spec"]["schedule"].split()) != 5:
        problems.append(f"schedule {p.cronjob['spec']['schedule']!r} is not a five-field cron expression")
    submit_args, round_args = submit_command(p.cronjob)
    if submit_args[:2] != ["python", "jobs/submit.py"]:
        return problems + [f"the CronJob runs {submit_args[:2]}, not python jobs/submit.py"]
    if "--wait" not in submit_args:  # without it the pod ends at submission and Forbid guards nothing
        problems.append("jobs/submit.py runs without --wait")
    head_service = f"http://{p.raycluster['metadata']['name']}-head-svc:8265"
    if (address := option(submit_args, "--address")) != head_service:
        problems.append(f"--address is {address}, not the RayCluster's head Service {head_service}")
    if option(submit_args, "--run") is None:
        problems.append("jobs/submit.py has no --run")
    entrypoint = schedule.entrypoint(round_args)
    if not entrypoint.startswith("python jobs/round.py ") or not (REPO / "jobs" / "round.py").is_file():
        problems.append(f"the Ray job's entrypoint {entrypoint!r} does not run jobs/round.py")
    if "--state" not in round_args:  # jobs/submit.py finds it as its own word
        return problems + ["the round's arguments have no --state"]
    if not round_args[round_args.index("--state") + 1].startswith("s3://"):
        problems.append(f"--state {round_args[round_args.index('--state') + 1]} is not on S3, where every node sees it")
    return problems


def round_arguments_problems(p: Project) -> list[str]:
    """The round's arguments are what jobs/round.py and the config accept."""
    _, round_args = submit_command(p.cronjob)
    try:
        args = load_round_job().parse_args(round_args)
    except SystemExit:
        return [f"jobs/round.py refuses {shlex.join(round_args)}"]
    try:
        config_lib.load_config(args.config, dict(config_lib.parse_override(o) for o in args.overrides))
    except config_lib.ConfigError as exc:
        return [f"bad config in the round's arguments: {exc}"]
    return []


def credentials_problems(p: Project) -> list[str]:
    problems = []
    all_containers = ray_containers(p.raycluster) + [submit_container(p.cronjob)]
    secrets = {tuple(sorted(e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e))
               for c in all_containers}
    if len(secrets) != 1 or not next(iter(secrets)):
        problems.append(f"the containers take S3 credentials from {secrets}, expected one Secret for all")
    literal = [e["name"] for c in all_containers for e in c.get("env", [])
               if e["name"].startswith("AWS_") and "value" in e]
    if literal:
        problems.append(f"credentials written into a manifest: {literal}")
    if p.raycluster["spec"].get("authOptions", {}).get("mode") == "token":
        env = {e["name"]: e for e in submit_container(p.cronjob).get("env", [])}
        token_ref = env.get("RAY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {})
        # KubeRay keeps a token-auth cluster's token in a Secret named after the cluster, key auth_token.
        if (token_ref.get("name"), token_ref.get("key")) != (p.raycluster["metadata"]["name"], "auth_token"):
            problems.append(f"the submitter's RAY_AUTH_TOKEN comes from {token_ref}, not the cluster's token Secret")
        if env.get("RAY_AUTH_MODE", {}).get("value") != "token":
            problems.append("the submitter does not set RAY_AUTH_MODE=token")
    return problems


def field_problems(p: Project) -> list[str]:
    spec = p.raycluster["spec"]
    objects = [("CronJob.spec", p.cronjob["spec"]), ("Job.spec", p.cronjob["spec"]["jobTemplate"]["spec"]),
               ("RayCluster.spec", spec), ("headGroupSpec", spec["headGroupSpec"]),
               *(("workerGroupSpec", g) for g in spec["workerGroupSpecs"]),
               *((name, spec[name]) for name in ("autoscalerOptions", "authOptions") if name in spec)]
    return [f"{where} has unknown fields {sorted(set(obj) - KNOWN_FIELDS[where])}"
            for where, obj in objects if set(obj) - KNOWN_FIELDS[where]]


def readme_problems(p: Project) -> list[str]:
    return [f"the README does not mention {name}" for name in
            ("deploy/Dockerfile", "deploy/raycluster.yaml", "deploy/cronjob.yaml") if name not in p.readme]


CHECKS: list[Callable[[Project], list[str]]] = [
    base_image_problems, install_problems, image_problems, raycluster_problems, schedule_problems,
    round_arguments_problems, credentials_problems, field_problems, readme_problems,
]


def problems(p: Project) -> list[str]:
    return [problem for check in CHECKS for problem in check(p)]


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_deploy_files_agree(check):
    assert check(load_project()) == []


# --- broken copies: each must be reported ---

def _with(p: Project, which: str, change: Callable[[dict], None]) -> Project:
    document = copy.deepcopy(getattr(p, which))
    change(document)
    return replace(p, **{which: document})


def _bump_ray_in_pyproject(p: Project) -> Project:
    def change(pyproject: dict) -> None:
        deps = pyproject["project"]["dependencies"]
        deps[:] = [re.sub(r"^ray\[(.*)\]==\S+$", r"ray[\1]==2.61.0", d) for d in deps]
    return _with(p, "pyproject", change)


def _bump_tensorflow_in_pyproject(p: Project) -> Project:
    def change(pyproject: dict) -> None:
        deps = pyproject["project"]["dependencies"]
        deps[:] = ["tensorflow==2.22.0" if d.startswith("tensorflow==") else d for d in deps]
    return _with(p, "pyproject", change)


def _python_310_image(p: Project) -> Project:
    return replace(p, dockerfile=p.dockerfile.replace("-py311-gpu", "-py310-gpu"))


def _tensorflow_without_cuda(p: Project) -> Project:
    return replace(p, dockerfile=p.dockerfile.replace("'tensorflow[and-cuda]==", "'tensorflow=="))


def _worker_on_stock_ray_image(p: Project) -> Project:
    def change(raycluster: dict) -> None:
        containers(raycluster["spec"]["workerGroupSpecs"][0])[0]["image"] = "rayproject/ray:2.60.0-py311-gpu"
    return _with(p, "raycluster", change)


def _concurrency_allowed(p: Project) -> Project:
    return _with(p, "cronjob", lambda cronjob: cronjob["spec"].update(concurrencyPolicy="Allow"))


def _no_autoscaling(p: Project) -> Project:
    return _with(p, "raycluster", lambda raycluster: raycluster["spec"].pop("enableInTreeAutoscaling"))


def _head_takes_work(p: Project) -> Project:
    return _with(p, "raycluster", lambda raycluster: raycluster["spec"]["headGroupSpec"].update(rayStartParams={}))


def _local_state(p: Project) -> Project:
    def change(cronjob: dict) -> None:
        command = submit_container(cronjob)["command"]
        command[command.index("--state") + 1] = "/data/runs/flowers"
    return _with(p, "cronjob", change)


def _no_wait(p: Project) -> Project:
    return _with(p, "cronjob", lambda cronjob: submit_container(cronjob)["command"].remove("--wait"))


def _unknown_config_key(p: Project) -> Project:
    def change(cronjob: dict) -> None:
        command = submit_container(cronjob)["command"]
        command[command.index("score.max_actors=8")] = "score.max_actor=8"
    return _with(p, "cronjob", change)


def _misspelt_field(p: Project) -> Project:
    def change(raycluster: dict) -> None:
        raycluster["spec"]["enableIntreeAutoscaling"] = raycluster["spec"].pop("enableInTreeAutoscaling")
    return _with(p, "raycluster", change)


def _readme_without_deploy(p: Project) -> Project:
    return replace(p, readme=p.readme.replace("deploy/cronjob.yaml", "a CronJob"))


BREAKAGES = [
    (_bump_ray_in_pyproject, "pyproject.toml pins ray 2.61.0"),
    (_bump_tensorflow_in_pyproject, "not tensorflow[and-cuda]==2.22.0"),
    (_python_310_image, "not cluster.yaml's image"),
    (_tensorflow_without_cuda, "not tensorflow[and-cuda]==2.21.0"),
    (_worker_on_stock_ray_image, "not the image deploy/Dockerfile builds"),
    (_concurrency_allowed, "concurrencyPolicy is Allow"),
    (_no_autoscaling, "enableInTreeAutoscaling is not true"),
    (_head_takes_work, "the head advertises CPUs"),
    (_local_state, "is not on S3"),
    (_no_wait, "without --wait"),
    (_unknown_config_key, "bad config"),
    (_misspelt_field, "unknown fields ['enableIntreeAutoscaling']"),
    (_readme_without_deploy, "does not mention deploy/cronjob.yaml"),
]


@pytest.mark.parametrize(("breakage", "match"),
                         [pytest.param(b, m, id=b.__name__.strip("_")) for b, m in BREAKAGES])
def test_broken_copies_are_reported(breakage, match):
    found = problems(breakage(load_project()))
    assert any(match in problem for problem in found), found
