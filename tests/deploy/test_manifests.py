"""deploy/ (image, RayCluster, CronJob, RayJob) agrees with itself, with cluster.yaml and with the project.

The security of the same files (token, NetworkPolicies, securityContext, digests) is test_security.py's;
deploy/rayjob-cronjob.yaml's CronJob and its permissions are test_rounds.py's.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import replace
from typing import Any, Callable

import pytest
from packaging.specifiers import SpecifierSet

from raysal import config as config_lib
from raysal.run import schedule

from _deploy import (
    REPO,
    Project,
    changed,
    cluster_containers,
    containers,
    documented_image,
    instructions,
    load_project,
    load_script,
    option,
    pins,
    ray_containers,
    rayjob_cluster,
    submit_container,
)

# Field names of the objects the manifests write, so that a misspelt field is caught here and not
# silently dropped by the API server. batch/v1 CronJobSpec, JobSpec: the Kubernetes API reference;
# RayClusterSpec, HeadGroupSpec, WorkerGroupSpec, AutoscalerOptions, AuthOptions: KubeRay's
# ray-operator/apis/ray/v1/raycluster_types.go and its CRD (helm-chart/kuberay-operator/crds);
# RayJobSpec: rayjob_types.go (deletionPolicy in older releases, deletionStrategy and schedule in
# newer); PolicyRule: rbac.authorization.k8s.io/v1.
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
    "RayJob.spec": {"activeDeadlineSeconds", "backoffLimit", "clusterSelector", "deletionPolicy", "deletionStrategy",
                    "entrypoint", "entrypointNumCpus", "entrypointNumGpus", "entrypointResources", "jobId",
                    "managedBy", "metadata", "rayClusterSpec", "runtimeEnvYAML", "schedule", "shutdownAfterJobFinishes",
                    "submissionMode", "submitterConfig", "submitterPodTemplate", "suspend", "ttlSecondsAfterFinished"},
    "PolicyRule": {"apiGroups", "nonResourceURLs", "resourceNames", "resources", "verbs"},
}


def submit_command(cronjob: dict) -> tuple[list[str], list[str]]:
    """The CronJob's command split at ``--``: jobs/submit.py's part, and jobs/round.py's arguments."""
    command = submit_container(cronjob)["command"]
    split = command.index("--") if "--" in command else len(command)
    return command[:split], command[split + 1:]


def load_round_job() -> Any:
    return load_script(REPO / "jobs" / "round.py", "round_job")


# --- the checks: each returns what it finds wrong ---

def base_image_problems(p: Project) -> list[str]:
    froms = [args for keyword, args in instructions(p.dockerfile) if keyword == "FROM"]
    if len(froms) != 1:
        return [f"the Dockerfile has {len(froms)} FROM instructions, expected 1"]
    image = froms[0].split("@")[0]  # the digest: test_security
    problems = []
    if image != p.cluster_yaml["docker"]["image"]:
        problems.append(f"FROM {image} is not cluster.yaml's image {p.cluster_yaml['docker']['image']}")
    match = re.fullmatch(r"rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py3(?P<minor>\d+)-gpu", image)
    if not match:
        return problems + [f"FROM {image} is not a rayproject/ray:<version>-py3XX-gpu image"]
    if match["ray"] != pins(p)["ray"]:
        problems.append(f"FROM has Ray {match['ray']}, constraints.txt pins ray {pins(p)['ray']}")
    requires_python = p.pyproject["project"]["requires-python"]
    if f"3.{match['minor']}" not in SpecifierSet(requires_python):
        problems.append(f"FROM has Python 3.{match['minor']}, pyproject.toml requires {requires_python}")
    for where, spec in (("the RayCluster", p.raycluster["spec"]), ("the RayJob's cluster", rayjob_cluster(p))):
        if (ray_version := spec.get("rayVersion")) != match["ray"]:
            problems.append(f"{where}'s rayVersion {ray_version} is not the image's Ray {match['ray']}")
    return problems


def install_problems(p: Project) -> list[str]:
    installs = [shlex.split(args) for keyword, args in instructions(p.dockerfile)
                if keyword == "RUN" and "pip install" in args]
    words = [word for install in installs for word in install]
    problems = []
    if "." not in words:
        problems.append("the Dockerfile does not pip install the project (`pip install .`)")
    wanted = f"tensorflow[and-cuda]=={pins(p)['tensorflow']}"
    if wanted not in words:
        found = [w for w in words if w.startswith("tensorflow")]
        problems.append(f"the Dockerfile installs {found}, not {wanted} "
                        "(constraints.txt's TensorFlow with its CUDA libraries)")
    if not any(install[i:i + 2] == ["-c", "constraints.txt"] for install in installs for i in range(len(install))):
        problems.append("the Dockerfile installs the project without `-c constraints.txt`, the versions it is "
                        "tested with")
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
    used = [("the RayCluster", c) for c in ray_containers(p.raycluster)] + [
        ("deploy/cronjob.yaml", submit_container(p.cronjob))] + [
        ("the RayJob's cluster", c) for c in cluster_containers(rayjob_cluster(p))] + [
        ("the RayJob's submitter", c) for c in p.rayjob["spec"]["submitterPodTemplate"]["spec"]["containers"]]
    problems += [f"{where}: container {c['name']} runs {c['image']}, not the image deploy/Dockerfile builds ({image})"
                 for where, c in used if c["image"].split("@")[0] != image]  # the digest: test_security
    if f"docker build -f deploy/Dockerfile -t {image} ." not in p.readme:
        problems.append(f"docs/clusters.md does not show the build of {image}")
    return problems


def raycluster_problems(p: Project) -> list[str]:
    problems = []
    if (p.raycluster["apiVersion"], p.raycluster["kind"]) != ("ray.io/v1", "RayCluster"):
        problems.append(f"{p.raycluster['apiVersion']} {p.raycluster['kind']} is not a ray.io/v1 RayCluster")
    return problems + cluster_spec_problems(p, "the RayCluster", p.raycluster["spec"])


def cluster_spec_problems(p: Project, where: str, spec: dict) -> list[str]:
    """A RayClusterSpec (the standing RayCluster's, or the one each RayJob starts) has cluster.yaml's shape."""
    problems = []
    if spec["headGroupSpec"]["rayStartParams"].get("num-cpus") != "0":
        problems.append(f"{where}: the head advertises CPUs (rayStartParams num-cpus must be the string \"0\")")
    groups = spec["workerGroupSpecs"]
    scaled = [g["groupName"] for g in groups if "minReplicas" in g or "maxReplicas" in g]
    if scaled and spec.get("enableInTreeAutoscaling") is not True:
        problems.append(f"{where}: worker groups {scaled} give min/max replicas "
                        "but enableInTreeAutoscaling is not true")
    gpu_groups = [g for g in groups if any(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu") == 1
                                           for c in containers(g))]
    worker = p.cluster_yaml["available_node_types"]["gpu_worker"]
    if len(gpu_groups) != 1:
        problems.append(f"{where}: {len(gpu_groups)} worker groups with nvidia.com/gpu: 1, expected 1")
    elif (scale := (gpu_groups[0].get("minReplicas"), gpu_groups[0].get("maxReplicas"))) != (
            worker["min_workers"], worker["max_workers"]):
        problems.append(f"{where}: the GPU group scales {scale[0]}..{scale[1]}, "
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
    """The round's arguments, in deploy/cronjob.yaml and in the RayJob, are what jobs/round.py and the config accept."""
    problems = []
    for where, round_args in (("deploy/cronjob.yaml", submit_command(p.cronjob)[1]),
                              ("the RayJob", rayjob_entrypoint(p)[2:])):
        try:
            args = load_round_job().parse_args(round_args)
        except SystemExit:
            problems.append(f"{where}: jobs/round.py refuses {shlex.join(round_args)}")
            continue
        try:
            config_lib.load_config(args.config, dict(config_lib.parse_override(o) for o in args.overrides))
        except config_lib.ConfigError as exc:
            problems.append(f"{where}: bad config in the round's arguments: {exc}")
    return problems


def rayjob_entrypoint(p: Project) -> list[str]:
    return shlex.split(p.rayjob["spec"].get("entrypoint", ""))


def rayjob_problems(p: Project) -> list[str]:
    """The RayJob each firing creates: a new one each time, running cronjob.yaml's round on its own cluster."""
    rayjob, spec = p.rayjob, p.rayjob["spec"]
    problems = []
    if (rayjob["apiVersion"], rayjob["kind"]) != ("ray.io/v1", "RayJob"):
        problems.append(f"{rayjob['apiVersion']} {rayjob['kind']} is not a ray.io/v1 RayJob")
    if "name" in rayjob["metadata"] or not rayjob["metadata"].get("generateName"):
        problems.append("the RayJob has a fixed name, not a generateName: a RayJob runs once, under its name")
    entrypoint = rayjob_entrypoint(p)
    if entrypoint[:2] != ["python", "jobs/round.py"]:
        return problems + [f"the RayJob's entrypoint {spec.get('entrypoint')!r} does not run python jobs/round.py"]
    if (round_args := entrypoint[2:]) != submit_command(p.cronjob)[1]:
        problems.append(f"the RayJob's round arguments {shlex.join(round_args)!r} differ from deploy/cronjob.yaml's "
                        f"{shlex.join(submit_command(p.cronjob)[1])!r}")
    if (state := option(round_args, "--state")) is None or not state.startswith("s3://"):
        problems.append(f"the RayJob's --state {state} is not on S3, where every node sees it")
    if spec.get("shutdownAfterJobFinishes") is not True:
        problems.append("the RayJob's shutdownAfterJobFinishes is not true: its cluster would outlive the round")
    if not isinstance(spec.get("ttlSecondsAfterFinished", 0), int) or spec.get("ttlSecondsAfterFinished", 0) < 0:
        problems.append(f"the RayJob's ttlSecondsAfterFinished {spec['ttlSecondsAfterFinished']!r} is not seconds")
    if spec.get("backoffLimit", 0) != 0:
        problems.append(f"the RayJob's backoffLimit is {spec['backoffLimit']}: a round waiting for labels (exit 5) "
                        "would be retried on a new cluster at once")
    if "clusterSelector" in spec:
        problems.append("the RayJob has a clusterSelector: it would run on a standing cluster, not its own")
    problems += cluster_spec_problems(p, "the RayJob's cluster", rayjob_cluster(p))
    workdirs = [args for keyword, args in instructions(p.dockerfile) if keyword == "WORKDIR"]
    head = containers(rayjob_cluster(p)["headGroupSpec"])[0]
    if workdirs and head.get("workingDir", workdirs[-1]) != workdirs[-1]:
        problems.append(f"the RayJob's head runs in working directory {head['workingDir']}, not the image's WORKDIR "
                        f"{workdirs[-1]}, where the entrypoint finds jobs/round.py")
    return problems


def credentials_problems(p: Project) -> list[str]:
    """The S3 credentials, from one Secret in every container; the Ray token is test_security's."""
    problems = []
    all_containers = [*ray_containers(p.raycluster), submit_container(p.cronjob),
                      *cluster_containers(rayjob_cluster(p))]
    secrets = {tuple(sorted(e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e))
               for c in all_containers}
    if len(secrets) != 1 or not next(iter(secrets)):
        problems.append(f"the containers take S3 credentials from {secrets}, expected one Secret for all")
    literal = [e["name"] for c in all_containers for e in c.get("env", [])
               if e["name"].startswith("AWS_") and "value" in e]
    if literal:
        problems.append(f"credentials written into a manifest: {literal}")
    return problems


def field_problems(p: Project) -> list[str]:
    def cluster(spec: dict) -> list[tuple[str, dict]]:
        return [("RayCluster.spec", spec), ("headGroupSpec", spec["headGroupSpec"]),
                *(("workerGroupSpec", g) for g in spec["workerGroupSpecs"]),
                *((name, spec[name]) for name in ("autoscalerOptions", "authOptions") if name in spec)]

    def cronjob(document: dict) -> list[tuple[str, dict]]:
        return [("CronJob.spec", document["spec"]), ("Job.spec", document["spec"]["jobTemplate"]["spec"])]

    objects = [*(("deploy/cronjob.yaml", kind, obj) for kind, obj in cronjob(p.cronjob)),
               *(("deploy/raycluster.yaml", kind, obj) for kind, obj in cluster(p.raycluster["spec"])),
               *(("deploy/rayjob-cronjob.yaml", kind, obj) for kind, obj in cronjob(p.rounds["CronJob"])),
               *(("deploy/rayjob-cronjob.yaml", "PolicyRule", rule) for rule in p.rounds["Role"]["rules"]),
               ("the RayJob", "RayJob.spec", p.rayjob["spec"]),
               *(("the RayJob", kind, obj) for kind, obj in cluster(rayjob_cluster(p)))]
    return [f"{where}: {kind} has unknown fields {sorted(set(obj) - KNOWN_FIELDS[kind])}"
            for where, kind, obj in objects if set(obj) - KNOWN_FIELDS[kind]]


def readme_problems(p: Project) -> list[str]:
    return [f"docs/clusters.md does not mention {name}" for name in
            ("deploy/Dockerfile", "deploy/raycluster.yaml", "deploy/cronjob.yaml", "deploy/rayjob-cronjob.yaml",
             "kubectl apply -f deploy/raycluster.yaml -f deploy/cronjob.yaml",
             "kubectl apply -f deploy/rayjob-cronjob.yaml") if name not in p.readme]


CHECKS: list[Callable[[Project], list[str]]] = [
    base_image_problems, install_problems, image_problems, raycluster_problems, schedule_problems,
    round_arguments_problems, rayjob_problems, credentials_problems, field_problems, readme_problems,
]


def problems(p: Project) -> list[str]:
    return [problem for check in CHECKS for problem in check(p)]


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_deploy_files_agree(check):
    assert check(load_project()) == []


def _bump_ray_in_constraints(p: Project) -> Project:
    return replace(p, constraints={**p.constraints, "ray": "2.61.0"})


def _bump_tensorflow_in_constraints(p: Project) -> Project:
    return replace(p, constraints={**p.constraints, "tensorflow": "2.22.0"})


def _install_without_constraints(p: Project) -> Project:
    return replace(p, dockerfile=p.dockerfile.replace(" -c constraints.txt", ""))


def _python_310_image(p: Project) -> Project:
    return replace(p, dockerfile=p.dockerfile.replace("-py311-gpu", "-py310-gpu"))


def _tensorflow_without_cuda(p: Project) -> Project:
    return replace(p, dockerfile=p.dockerfile.replace("'tensorflow[and-cuda]==", "'tensorflow=="))


def _worker_on_stock_ray_image(p: Project) -> Project:
    def change(raycluster: dict) -> None:
        containers(raycluster["spec"]["workerGroupSpecs"][0])[0]["image"] = "rayproject/ray:2.60.0-py311-gpu"
    return changed(p, "raycluster", change)


def _concurrency_allowed(p: Project) -> Project:
    return changed(p, "cronjob", lambda cronjob: cronjob["spec"].update(concurrencyPolicy="Allow"))


def _no_autoscaling(p: Project) -> Project:
    return changed(p, "raycluster", lambda raycluster: raycluster["spec"].pop("enableInTreeAutoscaling"))


def _head_takes_work(p: Project) -> Project:
    return changed(p, "raycluster", lambda raycluster: raycluster["spec"]["headGroupSpec"].update(rayStartParams={}))


def _local_state(p: Project) -> Project:
    def change(cronjob: dict) -> None:
        command = submit_container(cronjob)["command"]
        command[command.index("--state") + 1] = "/data/runs/flowers"
    return changed(p, "cronjob", change)


def _no_wait(p: Project) -> Project:
    return changed(p, "cronjob", lambda cronjob: submit_container(cronjob)["command"].remove("--wait"))


def _unknown_config_key(p: Project) -> Project:
    def change(cronjob: dict) -> None:
        command = submit_container(cronjob)["command"]
        command[command.index("score.max_actors=8")] = "score.max_actor=8"
    return changed(p, "cronjob", change)


def _misspelt_field(p: Project) -> Project:
    def change(raycluster: dict) -> None:
        raycluster["spec"]["enableIntreeAutoscaling"] = raycluster["spec"].pop("enableInTreeAutoscaling")
    return changed(p, "raycluster", change)


def _readme_without_deploy(p: Project) -> Project:
    return replace(p, readme=p.readme.replace("deploy/cronjob.yaml", "a CronJob"))


# deploy/rayjob-cronjob.yaml: the RayJob in its ConfigMap, the CronJob, its script and permissions


def _rayjob(change: Callable[[dict], None]) -> Callable[[Project], Project]:
    return lambda p: changed(p, "rayjob", change)


def _set_round_arg(rayjob: dict, old: str, new: str) -> None:
    words = shlex.split(rayjob["spec"]["entrypoint"])
    rayjob["spec"]["entrypoint"] = shlex.join([new if w == old else w for w in words])


def _rayjob_cluster(rayjob: dict) -> dict:
    return rayjob["spec"]["rayClusterSpec"]


RAYJOB_BREAKAGES = [
    ("rayjob_worker_on_stock_ray_image", _rayjob(lambda r: containers(_rayjob_cluster(r)["workerGroupSpecs"][0])[0]
                                                 .update(image="rayproject/ray:2.60.0-py311-gpu")),
     "the RayJob's cluster: container ray-worker runs rayproject/ray:2.60.0-py311-gpu, not the image"),
    ("rayjob_old_ray", _rayjob(lambda r: _rayjob_cluster(r).update(rayVersion="2.59.0")),
     "the RayJob's cluster's rayVersion 2.59.0 is not the image's Ray"),
    ("rayjob_fixed_name", _rayjob(lambda r: r.update(metadata={"name": "raysal-round"})), "not a generateName"),
    ("rayjob_not_round", _rayjob(lambda r: r["spec"].update(entrypoint="python -m raysal.run.rounds")),
     "does not run python jobs/round.py"),
    ("rayjob_other_round_arguments", _rayjob(lambda r: _set_round_arg(r, "score.max_actors=8", "score.max_actors=4")),
     "differ from deploy/cronjob.yaml's"),
    ("rayjob_unknown_config_key", _rayjob(lambda r: _set_round_arg(r, "score.max_actors=8", "score.max_actor=8")),
     "the RayJob: bad config"),
    ("rayjob_local_state", _rayjob(lambda r: _set_round_arg(r, "s3://my-bucket/runs/flowers", "/data/runs/flowers")),
     "the RayJob's --state /data/runs/flowers is not on S3"),
    ("rayjob_cluster_kept", _rayjob(lambda r: r["spec"].update(shutdownAfterJobFinishes=False)),
     "shutdownAfterJobFinishes is not true"),
    ("rayjob_retried", _rayjob(lambda r: r["spec"].update(backoffLimit=2)), "the RayJob's backoffLimit is 2"),
    ("rayjob_on_standing_cluster", _rayjob(lambda r: r["spec"].update(clusterSelector={"ray.io/cluster": "raysal"})),
     "the RayJob has a clusterSelector"),
    ("rayjob_no_autoscaling", _rayjob(lambda r: _rayjob_cluster(r).pop("enableInTreeAutoscaling")),
     "the RayJob's cluster: worker groups ['gpu'] give min/max replicas but enableInTreeAutoscaling is not true"),
    ("rayjob_head_takes_work", _rayjob(lambda r: _rayjob_cluster(r)["headGroupSpec"].update(rayStartParams={})),
     "the RayJob's cluster: the head advertises CPUs"),
    ("rayjob_head_elsewhere", _rayjob(lambda r: containers(_rayjob_cluster(r)["headGroupSpec"])[0]
                                      .update(workingDir="/home/ray")),
     "working directory /home/ray, not the image's WORKDIR"),
    ("rayjob_head_without_credentials", _rayjob(lambda r: containers(_rayjob_cluster(r)["headGroupSpec"])[0]
                                                .pop("envFrom")),
     "expected one Secret for all"),
    ("rayjob_misspelt_field", _rayjob(lambda r: r["spec"].update(
        shutdownAfterJobFinished=r["spec"].pop("shutdownAfterJobFinishes"))),
     "the RayJob: RayJob.spec has unknown fields ['shutdownAfterJobFinished']"),
    ("role_misspelt_field", lambda p: changed(p, "rounds", lambda r: r["Role"]["rules"][0].update(
        verb=r["Role"]["rules"][0].pop("verbs"))),
     "PolicyRule has unknown fields ['verb']"),
    ("readme_without_rayjob_cronjob",
     lambda p: replace(p, readme=p.readme.replace("deploy/rayjob-cronjob.yaml", "a CronJob")),
     "does not mention deploy/rayjob-cronjob.yaml"),
]


BREAKAGES = [
    (_bump_ray_in_constraints, "constraints.txt pins ray 2.61.0"),
    (_bump_tensorflow_in_constraints, "not tensorflow[and-cuda]==2.22.0"),
    (_install_without_constraints, "without `-c constraints.txt`"),
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
                         [pytest.param(b, m, id=b.__name__.strip("_")) for b, m in BREAKAGES]
                         + [pytest.param(b, m, id=name) for name, b, m in RAYJOB_BREAKAGES])
def test_broken_copies_are_reported(breakage, match):
    found = problems(breakage(load_project()))
    assert any(match in problem for problem in found), found

