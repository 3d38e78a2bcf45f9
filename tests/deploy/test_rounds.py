"""deploy/rayjob-cronjob.yaml's CronJob: it creates one RayJob per firing and waits for it, with a
ServiceAccount and Role that allow exactly what its script does. The RayJob itself: test_manifests.py.
"""

from __future__ import annotations

import re
from typing import Callable

import pytest

from _deploy import Project, changed, containers, load_project, option, round_container

# RayJobStatus's fields and JobDeploymentStatus's values (rayjob_types.go). A RayJob is done when
# its deployment status is Complete or Failed (IsJobDeploymentTerminal); an app that failed ends
# Failed, one that was stopped ends Complete with jobStatus STOPPED (rayjob_controller.go).
RAYJOB_STATUS_FIELDS = {"dashboardURL", "endTime", "failed", "jobDeploymentStatus", "jobId", "jobStatus",
                        "lastScheduleTime", "message", "observedGeneration", "rayClusterName", "rayClusterStatus",
                        "rayJobInfo", "reason", "startTime", "succeeded"}
JOB_DEPLOYMENT_TERMINAL = {"Complete", "Failed"}
# What each kubectl command the round script runs needs on its resource.
KUBECTL_VERBS = {"create": "create", "delete": "delete", "get": "get"}  # get with a label selector: list


def round_script(p: Project) -> tuple[str, str]:
    """The script the round container runs, as ``(path, text)``: ``sh PATH`` with PATH in a ConfigMap volume."""
    command = round_container(p)["command"]
    path = command[-1]
    pod = p.rounds["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return path, configmap_file(p, pod, round_container(p), path) or ""


def configmap_file(p: Project, pod: dict, container: dict, path: str) -> str | None:
    """The text a container sees at ``path`` from the file's ConfigMap volume, if that is where it is."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        config_map = volumes.get(mount["name"], {}).get("configMap", {}).get("name")
        if path.startswith(prefix) and config_map == p.rounds["ConfigMap"]["metadata"]["name"]:
            return p.rounds["ConfigMap"]["data"].get(path[len(prefix):])
    return None


def kubectl_calls(script: str) -> list[list[str]]:
    """The words of each ``kubectl`` command in a shell script, up to the end of its command."""
    joined = re.sub(r"\\\n", " ", script)
    return [call.split() for call in re.findall(r"\bkubectl\s+([^|;&)\n]*)", joined)]


def kubectl_verbs(script: str) -> set[str]:
    """The API verbs the script's kubectl commands need: get with a label selector lists."""
    verbs = set()
    for call in kubectl_calls(script):
        if call[0] == "get" and any(w == "-l" or w.startswith(("-l=", "--selector")) for w in call):
            verbs.add("list")
        else:
            verbs.add(KUBECTL_VERBS.get(call[0], f"unknown kubectl {call[0]}"))
    return verbs




def rounds_problems(p: Project) -> list[str]:
    """deploy/rayjob-cronjob.yaml's CronJob, its script and its permissions."""
    where = "deploy/rayjob-cronjob.yaml"
    cronjob = p.rounds["CronJob"]
    job = cronjob["spec"]["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    problems = []
    if (cronjob["apiVersion"], cronjob["kind"]) != ("batch/v1", "CronJob"):
        problems.append(f"{where}: {cronjob['apiVersion']} {cronjob['kind']} is not a batch/v1 CronJob")
    if cronjob["spec"].get("concurrencyPolicy") != "Forbid":
        problems.append(f"{where}: concurrencyPolicy is {cronjob['spec'].get('concurrencyPolicy')}, not Forbid")
    if len(cronjob["spec"]["schedule"].split()) != 5:
        problems.append(f"{where}: schedule {cronjob['spec']['schedule']!r} is not a five-field cron expression")
    if (job.get("backoffLimit"), pod.get("restartPolicy")) != (0, "Never"):
        problems.append(f"{where}: the Job retries its pod (backoffLimit {job.get('backoffLimit')}, "
                        f"restartPolicy {pod.get('restartPolicy')}): a retry would create a second RayJob")
    image = round_container(p)["image"]
    if not re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?", image):  # the digest: test_security
        problems.append(f"{where}: the kubectl image {image} is not pinned to a version")

    account = pod.get("serviceAccountName")
    if account != p.rounds["ServiceAccount"]["metadata"]["name"]:
        problems.append(f"{where}: the pod runs as ServiceAccount {account}, "
                        f"not the file's ServiceAccount {p.rounds['ServiceAccount']['metadata']['name']}")
    binding = p.rounds["RoleBinding"]
    if {"kind": "ServiceAccount", "name": account} not in [{k: s.get(k) for k in ("kind", "name")}
                                                          for s in binding["subjects"]]:
        problems.append(f"{where}: the RoleBinding does not bind ServiceAccount {account}")
    if (binding["roleRef"]["kind"], binding["roleRef"]["name"]) != ("Role", p.rounds["Role"]["metadata"]["name"]):
        problems.append(f"{where}: the RoleBinding binds {binding['roleRef']}, not the file's Role")

    path, script = round_script(p)
    if not script:
        return problems + [f"{where}: the pod runs {path}, which is not a file of the ConfigMap it mounts"]
    rules = p.rounds["Role"]["rules"]
    allowed = {(group, resource, verb) for r in rules for group in r.get("apiGroups", [])
               for resource in r.get("resources", []) for verb in r.get("verbs", [])}
    used = {("ray.io", "rayjobs", verb) for verb in kubectl_verbs(script)}
    if allowed != used:
        problems.append(f"{where}: the Role allows {sorted(allowed)}, the script needs {sorted(used)}")
    files = [option(call, "-f") for call in kubectl_calls(script) if call[0] == "create"]
    if len(files) != 1 or not (files[0] or "").endswith("/rayjob.yaml") or configmap_file(
            p, pod, round_container(p), files[0]) is None:
        problems.append(f"{where}: the script creates {files}, not the ConfigMap's rayjob.yaml "
                        "(kubectl create, for generateName)")
    if not any(set(states.split("|")) == JOB_DEPLOYMENT_TERMINAL
               for states in re.findall(r"^\s*([A-Za-z|]+)\)\s*break", script, re.MULTILINE)):
        problems.append(f"{where}: the script does not wait for jobDeploymentStatus "
                        f"{' or '.join(sorted(JOB_DEPLOYMENT_TERMINAL))}, so Forbid would not cover the round")
    if unknown := set(re.findall(r"\.status\.(\w+)", script)) - RAYJOB_STATUS_FIELDS:
        problems.append(f"{where}: the script reads unknown RayJob status fields {sorted(unknown)}")
    labels = p.rayjob["metadata"].get("labels", {})
    for selector in re.findall(r"(?:-l\s+|selector=)[\"']?([\w./-]+=[\w.-]+(?:,[\w./-]+=[\w.-]+)*)", script):
        if not all(labels.get(k) == v for k, v in (pair.split("=", 1) for pair in selector.split(","))):
            problems.append(f"{where}: the script selects RayJobs by {selector}, which the RayJob's labels "
                            f"{labels} do not match")
    return problems




@pytest.mark.parametrize("check", [rounds_problems], ids=lambda check: check.__name__)
def test_rounds_files_agree(check):
    assert check(load_project()) == []


# --- broken copies: each must be reported ---

def _rounds(change: Callable[[dict], None]) -> Callable[[Project], Project]:
    return lambda p: changed(p, "rounds", change)


def _script(old: str, new: str) -> Callable[[Project], Project]:
    def change(rounds: dict) -> None:
        data = rounds["ConfigMap"]["data"]
        assert old in data["round.sh"]
        data["round.sh"] = data["round.sh"].replace(old, new)
    return _rounds(change)


def _round_pod(rounds: dict) -> dict:
    return rounds["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]


BREAKAGES = [
    ("rounds_concurrency_allowed", _rounds(lambda r: r["CronJob"]["spec"].update(concurrencyPolicy="Allow")),
     "deploy/rayjob-cronjob.yaml: concurrencyPolicy is Allow"),
    ("rounds_pod_retried", _rounds(lambda r: r["CronJob"]["spec"]["jobTemplate"]["spec"].update(backoffLimit=3)),
     "a retry would create a second RayJob"),
    ("rounds_kubectl_latest", _rounds(lambda r: containers(r["CronJob"]["spec"]["jobTemplate"]["spec"])[0]
                                      .update(image="alpine/k8s:latest")),
     "the kubectl image alpine/k8s:latest is not pinned"),
    ("rounds_default_service_account", _rounds(lambda r: _round_pod(r).update(serviceAccountName="default")),
     "the pod runs as ServiceAccount default"),
    ("rounds_binding_elsewhere", _rounds(lambda r: r["RoleBinding"]["subjects"][0].update(name="other")),
     "the RoleBinding does not bind ServiceAccount raysal-rounds"),
    ("role_without_delete", _rounds(lambda r: r["Role"]["rules"][0]["verbs"].remove("delete")), "the Role allows"),
    ("role_with_more", _rounds(lambda r: r["Role"]["rules"][0]["verbs"].append("patch")), "the Role allows"),
    ("script_applies", _script("kubectl create -f", "kubectl apply -f"), "the script creates []"),
    ("script_waits_for_other_states", _script("Complete|Failed)", "Succeeded|Failed)"),
     "the script does not wait for jobDeploymentStatus Complete or Failed"),
    ("script_reads_unknown_status", _script(".status.jobStatus", ".status.rayJobStatus"),
     "unknown RayJob status fields ['rayJobStatus']"),
    ("script_selects_other_run", _script("app.kubernetes.io/instance=flowers", "app.kubernetes.io/instance=demo"),
     "which the RayJob's labels"),
    ("script_not_mounted", _rounds(lambda r: r["ConfigMap"]["data"].pop("round.sh")),
     "which is not a file of the ConfigMap"),
]


@pytest.mark.parametrize(("breakage", "match"), [pytest.param(b, m, id=name) for name, b, m in BREAKAGES])
def test_broken_copies_are_reported(breakage, match):
    found = rounds_problems(breakage(load_project()))
    assert any(match in problem for problem in found), found
