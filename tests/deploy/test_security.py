"""deploy/ is closed by default: Ray's token from a Secret in every Ray container and submitter, a
NetworkPolicy around each cluster, a restricted securityContext on every container, images pinned
by digest, and the core Kubernetes objects valid for the Kubernetes version docs/clusters.md names.

KubeRay's RayCluster and RayJob have no schema in kubernetes-validate: their pod templates are
validated as the Pods KubeRay makes of them (the head's with the autoscaler container it adds).
"""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import replace
from typing import Callable

import kubernetes_validate
import pytest
import yaml

from _deploy import (
    DEPLOY,
    Project,
    changed,
    cluster_containers,
    clusters,
    containers,
    instructions,
    load_project,
    load_script,
    pod_templates,
    rayjob_submitter,
    round_container,
    submit_container,
)

PIN = load_script(DEPLOY / "pin_images.py", "pin_images")
RAY_UID = 1000  # the user ray of the rayproject/ray images deploy/Dockerfile builds on
TOKEN_KEY = "auth_token"  # the key KubeRay reads from authOptions.secretName
JOB_API, GCS, CLIENT, WORKER_PORT = 8265, 6379, 10001, 10002
RESTRICTED = {  # the fields of the restricted Pod Security Standard, and a read-only root
    "runAsNonRoot": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True, "seccompProfile": {"type": "RuntimeDefault"},
}
# The KubeRay operator's pod, as its Helm chart labels it, in a namespace of its own.
OPERATOR = ({"app.kubernetes.io/name": "kuberay-operator"}, {"kubernetes.io/metadata.name": "kuberay-system"})
OWN_NAMESPACE = {"kubernetes.io/metadata.name": "raysal"}


def kubernetes_version(p: Project) -> str | None:
    match = re.search(r"validated\s+against\s+the\s+API\s+of\s+Kubernetes\s+(\d+\.\d+)", p.readme)
    return match[1] if match else None


# --- Ray's token ---

def token_problems(p: Project) -> list[str]:
    """Every Ray container and every job client takes RAY_AUTH_TOKEN from its cluster's token Secret."""
    problems = []
    clients = {"the RayCluster": [("deploy/cronjob.yaml's submitter", submit_container(p.cronjob))],
               "the RayJob's cluster": [("the RayJob's submitter", c)
                                        for c in rayjob_submitter(p)["spec"]["containers"]]}
    for where, spec in clusters(p):
        auth = spec.get("authOptions", {})
        secret = auth.get("secretName")
        if auth.get("mode") != "token" or not secret:
            problems.append(f"{where}: authOptions {auth} is not mode token with our secretName "
                            "(KubeRay gives that token to the containers it adds and to its dashboard client)")
        for name, container in [*((c["name"], c) for c in cluster_containers(spec)), *clients[where]]:
            env = {}
            for variable in container.get("env", []):
                if variable["name"] in env:
                    problems.append(f"{where}: {name} sets {variable['name']} twice")
                env[variable["name"]] = variable
            if env.get("RAY_AUTH_MODE", {}).get("value") != "token":
                problems.append(f"{where}: {name} does not set RAY_AUTH_MODE=token")
            token = env.get("RAY_AUTH_TOKEN", {})
            if "value" in token:
                problems.append(f"{where}: {name} has its RAY_AUTH_TOKEN written into the manifest")
            ref = token.get("valueFrom", {}).get("secretKeyRef", {})
            if (ref.get("name"), ref.get("key")) != (secret, TOKEN_KEY):
                problems.append(f"{where}: {name} takes RAY_AUTH_TOKEN from {ref or 'nowhere'}, "
                                f"not the cluster's Secret {secret} key {TOKEN_KEY}")
    for secret in sorted({spec.get("authOptions", {}).get("secretName") for _, spec in clusters(p)} - {None}):
        if f"kubectl create secret generic {secret} --from-literal={TOKEN_KEY}=" not in p.readme:
            problems.append(f"docs/clusters.md does not show how to create the Secret {secret} (key {TOKEN_KEY})")
    documents = [d for text in p.texts.values() for d in yaml.safe_load_all(text)] + [p.rayjob]
    if secrets := [d["metadata"]["name"] for d in documents if d["kind"] == "Secret"]:
        problems.append(f"Secrets written into deploy/: {secrets}; a credential stays out of the repository")
    return problems


# --- the NetworkPolicies ---

def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def admits(policy: dict, labels: dict, port: int, namespace: dict | None = None) -> bool:
    """Whether a pod with ``labels`` may connect on TCP ``port``: a pod of the policy's namespace, or of one
    labelled ``namespace``."""
    for rule in policy["spec"].get("ingress", []):
        if rule.get("ports") and not any(p.get("protocol", "TCP") == "TCP" and (
                not isinstance(p.get("port"), int)  # a named port may be any: count it as this one
                or p["port"] <= port <= p.get("endPort", p["port"])) for p in rule["ports"]):
            continue
        if not rule.get("from"):
            return True  # no peers: from anywhere
        for peer in rule["from"]:
            if "ipBlock" in peer:
                return True  # an address range may hold any pod
            in_namespace = namespace is None if "namespaceSelector" not in peer else selects(
                peer["namespaceSelector"], namespace or OWN_NAMESPACE)
            if in_namespace and selects(peer.get("podSelector", {}), labels):
                return True
    return False


def cluster_pods(spec: dict, cluster_name: str) -> dict[str, dict]:
    """The labels of a RayClusterSpec's pods, by group: KubeRay's (labelPod in pod.go), then the template's."""
    def labels(template: dict) -> dict:
        return {"ray.io/cluster": cluster_name, "app.kubernetes.io/name": "kuberay",
                **template.get("metadata", {}).get("labels", {})}

    return {"the head's pods": labels(spec["headGroupSpec"]["template"]),
            **{f"the {g['groupName']} workers' pods": labels(g["template"]) for g in spec["workerGroupSpecs"]}}


def network_problems(p: Project) -> list[str]:
    """Each cluster's pods take connections from each other on every port, and the job API from its clients only."""
    standing, rounds = p.raycluster["spec"], p.rayjob["spec"]["rayClusterSpec"]
    cases = [  # policy, the cluster's pods, the clients that must reach its job API
        ("deploy/raycluster.yaml's NetworkPolicy", p.network_policy,
         cluster_pods(standing, p.raycluster["metadata"]["name"]),
         {"deploy/cronjob.yaml's pod": (p.cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"],
                                        None)}),
        ("deploy/rayjob-cronjob.yaml's NetworkPolicy", p.rounds["NetworkPolicy"],
         cluster_pods(rounds, "raysal-round-x7k2p-9zq4m"),  # KubeRay names the cluster after the RayJob
         {"the RayJob's submitter": (rayjob_submitter(p)["metadata"]["labels"], None),
          "the KubeRay operator": OPERATOR}),
    ]
    strangers = {"a pod of the namespace": ({"app": "notebook"}, None),
                 "a pod of another namespace": ({}, {"kubernetes.io/metadata.name": "elsewhere"}),
                 "the KubeRay operator": OPERATOR}
    problems = []
    for where, policy, pods, clients in cases:
        spec = policy["spec"]
        if "Ingress" not in spec.get("policyTypes", []):
            problems.append(f"{where} does not restrict ingress")
        if "matchExpressions" in repr(policy):
            problems.append(f"{where} uses matchExpressions, which this check does not read")
        problems += [f"{where} does not select the cluster's pods: {name}, labelled {labels}"
                     for name, labels in pods.items() if not selects(spec["podSelector"], labels)]
        problems += [f"{where}: {name} cannot reach the cluster on port {port}"
                     for name, labels in pods.items() for port in (GCS, JOB_API, CLIENT, WORKER_PORT)
                     if not admits(policy, labels, port)]
        problems += [f"{where}: {name} cannot reach the job API ({JOB_API})"
                     for name, (labels, namespace) in clients.items() if not admits(policy, labels, JOB_API, namespace)]
        problems += [f"{where}: {name} reaches port {port}"
                     for name, (labels, namespace) in {**strangers, **clients}.items()
                     for port in (GCS, JOB_API, CLIENT, WORKER_PORT)
                     if admits(policy, labels, port, namespace) and not (name in clients and port == JOB_API)]
    return problems


# --- securityContext, volumes ---

def autoscaler_pod(spec: dict) -> dict:
    """The head's pod template with the autoscaler container KubeRay adds (pod.go: BuildAutoscalerContainer,
    then mergeAutoscalerOverrides with autoscalerOptions)."""
    template = copy.deepcopy(spec["headGroupSpec"]["template"])
    options = spec.get("autoscalerOptions", {})
    container = {"name": "autoscaler", "image": options.get("image", containers(spec["headGroupSpec"])[0]["image"])}
    container.update({k: copy.deepcopy(options[k]) for k in ("env", "envFrom", "resources", "securityContext",
                                                              "volumeMounts") if k in options})
    template["spec"]["containers"].append(container)
    return template


def all_pods(p: Project) -> list[tuple[str, dict]]:
    """Every pod template, the heads with their autoscaler."""
    heads = {f"{where}'s head": autoscaler_pod(spec) for where, spec in clusters(p)}
    return [(where, heads.get(where, template)) for where, template in pod_templates(p)]


def security_context_problems(p: Project) -> list[str]:
    """Every container runs restricted on a read-only root, with emptyDirs where it writes. KubeRay's
    wait-gcs-ready init container copies its worker's securityContext and mounts (pod.go)."""
    problems = []
    ray_image = containers(p.raycluster["spec"]["headGroupSpec"])[0]["image"]
    ray_nodes = tuple(f"{where}'s " for where, _ in clusters(p))  # their first container runs Ray (KubeRay's index 0)
    for where, template in all_pods(p):
        pod = template["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        if hosted := [k for k in ("hostNetwork", "hostPID", "hostIPC") if pod.get(k)] + [
                v["name"] for v in volumes.values() if "hostPath" in v]:
            problems.append(f"{where}: shares the node's {hosted}")
        # The heads' autoscaler and the pod that runs as a ServiceAccount of its own call the API; no other.
        calls_api = "autoscaler" in {c["name"] for c in pod["containers"]} or "serviceAccountName" in pod
        if not calls_api and pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: mounts a ServiceAccount token, yet nothing in it calls the Kubernetes API")
        for container in pod.get("initContainers", []) + pod["containers"]:
            name, context = f"{where}: container {container['name']}", container.get("securityContext", {})
            problems += [f"{name}: securityContext {field} is {context.get(field)}, not {wanted}"
                         for field, wanted in RESTRICTED.items() if context.get(field) != wanted]
            if context.get("privileged") or context.get("capabilities", {}).get("add"):
                problems.append(f"{name}: is privileged or adds capabilities")
            user = context.get("runAsUser")
            if not isinstance(user, int) or user <= 0 or (container["image"] == ray_image and user != RAY_UID):
                problems.append(f"{name}: runAsUser {user} is not the image's user "
                                f"({RAY_UID} for the Ray image, any non-root uid otherwise)")
            mounts = {m["mountPath"]: volumes.get(m["name"], {}) for m in container.get("volumeMounts", [])}
            if missing := [m["name"] for m in container.get("volumeMounts", []) if m["name"] not in volumes]:
                problems.append(f"{name}: mounts volumes {missing} the pod does not have")
            if "emptyDir" not in mounts.get("/tmp", {}):
                problems.append(f"{name}: /tmp is not an emptyDir, and the root file system is read-only")
            if where.startswith(ray_nodes) and container is pod["containers"][0] and mounts.get(
                    "/dev/shm", {}).get("emptyDir", {}).get("medium") != "Memory":
                problems.append(f"{name}: /dev/shm (Ray's object store) is not an emptyDir in Memory")
    return problems


# --- digests ---

def images_in(document: object) -> list[str]:
    """Every ``image`` value in a parsed manifest."""
    if isinstance(document, dict):
        return [v for k, v in document.items() if k == "image" and isinstance(v, str)] + [
            image for v in document.values() for image in images_in(v)]
    if isinstance(document, list):
        return [image for v in document for image in images_in(v)]
    return []


def digest_problems(p: Project) -> list[str]:
    """Every image deploy/ refers to is pinned by digest, and deploy/pin_images.py rewrites each of them."""
    documents = [p.raycluster, p.network_policy, p.cronjob, *p.rounds.values(), p.rayjob]
    images = [image for d in documents for image in images_in(d)] + [
        args.split()[-1] for keyword, args in instructions(p.dockerfile) if keyword == "FROM"]
    problems = [f"the image {image} is not pinned by digest (REPO[:TAG]@sha256:<64 hex digits>)"
                for image in images if not re.fullmatch(r"[^@\s]+@sha256:[0-9a-f]{64}", image)]
    digests: dict[str, set[str]] = {}
    for image in map(PIN.parse_image, images):
        digests.setdefault(image.repo, set()).add(image.digest)
    problems += [f"the image {repo} is pinned to several digests: {sorted(found)}"
                 for repo, found in digests.items() if len(found) > 1]
    seen = sorted(str(image) for text in (*p.texts.values(), p.dockerfile) for image in PIN.image_references(text))
    if seen != sorted(images):
        problems.append(f"deploy/pin_images.py finds {seen}, the manifests use {sorted(images)}")
    if "python deploy/pin_images.py --check" not in p.readme:
        problems.append("docs/clusters.md does not show deploy/pin_images.py --check before kubectl apply")
    return problems


# --- schemas ---

def as_pod(where: str, template: dict) -> dict:
    name = re.sub(r"[^a-z0-9]+", "-", where.lower()).strip("-")
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {**template.get("metadata", {}), "name": name},
            "spec": template["spec"]}


def core_objects(p: Project) -> list[tuple[str, dict]]:
    """The Kubernetes objects of deploy/, and the Pods KubeRay makes of the RayCluster's and RayJob's templates."""
    objects = [(f"deploy/{name}'s {d['kind']} {d['metadata']['name']}", d)
               for name, text in p.texts.items() for d in yaml.safe_load_all(text)
               if not d["apiVersion"].startswith("ray.io/")]
    templates = {where: t for where, t in all_pods(p) if where.startswith(("the RayCluster", "the RayJob"))}
    return objects + [(f"{where} (as a Pod)", as_pod(where, template)) for where, template in templates.items()]


def schema_problems(p: Project) -> list[str]:
    version = kubernetes_version(p)
    if version is None:
        return ["docs/clusters.md does not say which Kubernetes version the manifests are validated against"]
    problems = []
    kubectl = re.search(r":v?(\d+\.\d+)\.\d+", round_container(p)["image"])
    if not kubectl or kubectl[1] != version:
        problems.append(f"the kubectl image {round_container(p)['image']} is not for Kubernetes {version}")
    return problems + [f"{where}: {problem}" for where, obj in core_objects(p)
                       if (problem := schema_problem(json.dumps(obj, sort_keys=True), version))]


@functools.cache  # most objects are the same in every broken copy; kubernetes-validate reads its schemas each call
def schema_problem(obj_json: str, version: str) -> str | None:
    try:
        kubernetes_validate.validate(json.loads(obj_json), version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return f"{'.'.join(map(str, error.path))}: {error.message}"
    except kubernetes_validate.SchemaNotFoundError as error:
        return error.message
    return None


CHECKS: list[Callable[[Project], list[str]]] = [
    token_problems, network_problems, security_context_problems, digest_problems, schema_problems,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_deploy_is_closed(check):
    assert check(load_project()) == []


# --- broken copies: each must be reported ---

def _standing(change: Callable[[dict], None]) -> Callable[[Project], Project]:
    return lambda p: changed(p, "raycluster", lambda r: change(r["spec"]))


def _rayjob(change: Callable[[dict], None]) -> Callable[[Project], Project]:
    return lambda p: changed(p, "rayjob", lambda r: change(r["spec"]))


def _rounds(change: Callable[[dict], None]) -> Callable[[Project], Project]:
    return lambda p: changed(p, "rounds", change)


def _submitter(change: Callable[[dict], None]) -> Callable[[Project], Project]:
    """A change to deploy/cronjob.yaml's pod template."""
    return lambda p: changed(p, "cronjob", lambda c: change(c["spec"]["jobTemplate"]["spec"]["template"]))


def _policy(change: Callable[[dict], None]) -> Callable[[Project], Project]:
    return lambda p: changed(p, "network_policy", lambda policy: change(policy["spec"]))


def _text(name: str, old: str, new: str) -> Callable[[Project], Project]:
    def change(p: Project) -> Project:
        assert old in p.texts[name]
        return replace(p, texts={**p.texts, name: p.texts[name].replace(old, new, 1)})
    return change


def _readme(old: str, new: str) -> Callable[[Project], Project]:
    return lambda p: replace(p, readme=p.readme.replace(old, new))


def _head(spec: dict) -> dict:
    return containers(spec["headGroupSpec"])[0]


def _worker(spec: dict) -> dict:
    return containers(spec["workerGroupSpecs"][0])[0]


def _job_submitter(spec: dict) -> dict:
    return spec["submitterPodTemplate"]["spec"]["containers"][0]


def _kubectl(rounds: dict) -> dict:
    (container,) = containers(rounds["CronJob"]["spec"]["jobTemplate"]["spec"])
    return container


def _env(container: dict, name: str) -> dict:
    return next(e for e in container["env"] if e["name"] == name)


SECRET_DOCUMENT = "apiVersion: v1\nkind: Secret\nmetadata: {name: raysal-ray-token}\n---\n"
ZEROS = "0" * 64

BREAKAGES = [
    ("no_auth_options", _standing(lambda s: s.pop("authOptions")), "is not mode token"),
    ("generated_token", _standing(lambda s: s["authOptions"].pop("secretName")), "is not mode token"),
    ("worker_without_token", _standing(lambda s: _worker(s)["env"].pop()),
     "ray-worker takes RAY_AUTH_TOKEN from nowhere"),
    ("head_token_inline", _standing(lambda s: _env(_head(s), "RAY_AUTH_TOKEN").update(value="hunter2")),
     "ray-head has its RAY_AUTH_TOKEN written into the manifest"),
    ("rayjob_head_auth_off", _rayjob(lambda s: _env(_head(s["rayClusterSpec"]), "RAY_AUTH_MODE").update(
        value="disabled")), "ray-head does not set RAY_AUTH_MODE=token"),
    ("submitter_other_secret", _submitter(lambda t: _env(t["spec"]["containers"][0], "RAY_AUTH_TOKEN")
                                          ["valueFrom"]["secretKeyRef"].update(name="raysal")),
     "deploy/cronjob.yaml's submitter takes RAY_AUTH_TOKEN from"),
    ("rayjob_submitter_without_token", _rayjob(lambda s: _job_submitter(s).pop("env")),
     "the RayJob's submitter takes RAY_AUTH_TOKEN from nowhere"),
    ("secret_in_deploy", _text("cronjob.yaml", "apiVersion: batch/v1", SECRET_DOCUMENT + "apiVersion: batch/v1"),
     "Secrets written into deploy/: ['raysal-ray-token']"),
    ("docs_without_secret", _readme("kubectl create secret generic raysal-ray-token", "kubectl create secret"),
     "does not show how to create the Secret raysal-ray-token"),

    ("policy_open_to_namespace", _policy(lambda s: s["ingress"][1]["from"].append({"podSelector": {}})),
     "a pod of the namespace reaches port 8265"),
    ("policy_all_ports_to_submitter", _policy(lambda s: s["ingress"][1].pop("ports")),
     "deploy/cronjob.yaml's pod reaches port 6379"),
    ("policy_other_cluster", _policy(lambda s: s["podSelector"]["matchLabels"].update({"ray.io/cluster": "other"})),
     "does not select the cluster's pods"),
    ("policy_without_ingress", _policy(lambda s: s.update(policyTypes=["Egress"])), "does not restrict ingress"),
    ("policy_ip_block", _policy(lambda s: s["ingress"].append({"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})),
     "a pod of another namespace reaches port 6379"),
    ("submitter_relabelled", _submitter(lambda t: t["metadata"]["labels"].update({"app.kubernetes.io/component": "x"})),
     "deploy/cronjob.yaml's pod cannot reach the job API"),
    ("rounds_policy_without_operator", _rounds(lambda r: r["NetworkPolicy"]["spec"]["ingress"][1]["from"].pop()),
     "the KubeRay operator cannot reach the job API"),
    ("rounds_policy_misses_workers", _rayjob(lambda s: s["rayClusterSpec"]["workerGroupSpecs"][0]["template"]
                                             .pop("metadata")),
     "deploy/rayjob-cronjob.yaml's NetworkPolicy does not select the cluster's pods"),

    ("head_as_root", _standing(lambda s: _head(s)["securityContext"].update(runAsUser=0)), "runAsUser 0"),
    ("worker_writable_root", _standing(lambda s: _worker(s)["securityContext"].pop("readOnlyRootFilesystem")),
     "ray-worker: securityContext readOnlyRootFilesystem is None"),
    ("autoscaler_escalates", _standing(lambda s: s["autoscalerOptions"]["securityContext"].update(
        allowPrivilegeEscalation=True)), "container autoscaler: securityContext allowPrivilegeEscalation is True"),
    ("rayjob_submitter_capabilities", _rayjob(lambda s: _job_submitter(s)["securityContext"].update(
        capabilities={"add": ["NET_ADMIN"]})), "is privileged or adds capabilities"),
    ("kubectl_unconfined", _rounds(lambda r: _kubectl(r)["securityContext"].pop("seccompProfile")),
     "container round: securityContext seccompProfile is None"),
    ("init_container_as_root", _standing(lambda s: s["workerGroupSpecs"][0]["template"]["spec"].update(
        initContainers=[{"name": "setup", "image": "busybox@sha256:" + "1" * 64}])),
     "container setup: securityContext"),
    ("shm_on_disk", _standing(lambda s: s["headGroupSpec"]["template"]["spec"]["volumes"][1]["emptyDir"].pop(
        "medium")), "/dev/shm (Ray's object store) is not an emptyDir in Memory"),
    ("no_tmp", _rayjob(lambda s: _job_submitter(s).pop("volumeMounts")), "ray-job-submitter: /tmp is not an emptyDir"),
    ("worker_with_api_token", _standing(lambda s: s["workerGroupSpecs"][0]["template"]["spec"].pop(
        "automountServiceAccountToken")), "mounts a ServiceAccount token"),
    ("host_network", _standing(lambda s: s["headGroupSpec"]["template"]["spec"].update(hostNetwork=True)),
     "shares the node's ['hostNetwork']"),

    ("kubectl_by_tag", _rounds(lambda r: _kubectl(r).update(image="alpine/k8s:1.33.4")),
     "the image alpine/k8s:1.33.4 is not pinned by digest"),
    ("base_by_tag", lambda p: replace(p, dockerfile=p.dockerfile.replace("@sha256:" + ZEROS, "")),
     "the image rayproject/ray:2.60.0-py311-gpu is not pinned by digest"),
    ("short_digest", _standing(lambda s: _worker(s).update(image=_worker(s)["image"][:-1])), "is not pinned by digest"),
    ("two_builds", _standing(lambda s: _worker(s).update(image=_worker(s)["image"][:-1] + "1")),
     "the image your-registry/raysal is pinned to several digests"),
    ("image_pin_script_misses", _text("cronjob.yaml", "  image: your-registry", '  "image": your-registry'),
     "deploy/pin_images.py finds"),
    ("docs_without_check", _readme("pin_images.py --check", "pin_images.py"),
     "does not show deploy/pin_images.py --check"),

    ("misspelt_security_field", _standing(lambda s: _head(s)["securityContext"].update(
        runAsNonroot=_head(s)["securityContext"].pop("runAsNonRoot"))),
     "the RayCluster's head (as a Pod): spec.containers.0.securityContext: Additional properties"),
    ("policy_misspelt_field", _text("rayjob-cronjob.yaml", "{port: 8265, protocol: TCP}", "{port: 8265, protocl: TCP}"),
     "NetworkPolicy raysal-rounds: spec.ingress.1.ports.0: Additional properties"),
    ("docs_without_version", _readme("validated against the API of", "for"), "does not say which Kubernetes version"),
    ("kubectl_other_version", _rounds(lambda r: _kubectl(r).update(
        image=_kubectl(r)["image"].replace(":1.33.", ":1.29."))), "is not for Kubernetes 1.33"),
]


@pytest.mark.parametrize(("breakage", "match"), [pytest.param(b, m, id=name) for name, b, m in BREAKAGES])
def test_broken_copies_are_reported(breakage, match):
    broken = breakage(load_project())
    found = [problem for check in CHECKS for problem in check(broken)]
    assert any(match in problem for problem in found), found
