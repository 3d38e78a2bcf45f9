"""deploy/pin_images.py: it writes digests into the image references of deploy/ and refuses what is not pinned.

No registry is reached: the digests are made up, as `docker inspect` would print them.
"""

from __future__ import annotations

import shutil

import pytest
import yaml

from _deploy import DEPLOY, MANIFESTS, load_script

PIN = load_script(DEPLOY / "pin_images.py", "pin_images")
ZEROS = "sha256:" + "0" * 64
RAYSAL = "sha256:" + "a1" * 32
KUBECTL = "sha256:" + "b2" * 32
RAY = "sha256:" + "c3" * 32

MANIFEST = f"""\
spec:
  containers:
    - name: a
      image: your-registry/raysal:0.1.0@{ZEROS}
    - image: "alpine/k8s:1.33.4"  # kubectl
      name: b
  data:
    rayjob.yaml: |
      image: your-registry/raysal:0.1.0
"""


@pytest.mark.parametrize(("reference", "repo", "tag", "digest"), [
    ("alpine/k8s:1.33.4", "alpine/k8s", "1.33.4", ""),
    (f"your-registry/raysal@{RAYSAL}", "your-registry/raysal", "", RAYSAL),
    (f"registry.example.com:5000/team/raysal:0.1.0@{RAYSAL}", "registry.example.com:5000/team/raysal", "0.1.0",
     RAYSAL),
    ("registry.example.com:5000/raysal", "registry.example.com:5000/raysal", "", ""),
])
def test_a_reference_splits_into_repository_tag_and_digest(reference, repo, tag, digest):
    image = PIN.parse_image(reference)
    assert (image.repo, image.tag, image.digest) == (repo, tag, digest)
    assert str(image) == reference


def test_pinning_rewrites_every_reference_to_the_repository_and_keeps_its_tag():
    text, count = PIN.pin(MANIFEST, PIN.parse_image(f"your-registry/raysal@{RAYSAL}"))
    assert count == 2  # the container's and the one inside the block scalar
    document = yaml.safe_load(text)
    assert document["spec"]["containers"][0]["image"] == f"your-registry/raysal:0.1.0@{RAYSAL}"
    assert yaml.safe_load(document["spec"]["data"]["rayjob.yaml"])["image"] == f"your-registry/raysal:0.1.0@{RAYSAL}"
    assert document["spec"]["containers"][1]["image"] == "alpine/k8s:1.33.4"  # another repository: left alone

    text, count = PIN.pin(text, PIN.parse_image(f"alpine/k8s:1.33.5@{KUBECTL}"))  # a tag given: it replaces the file's
    assert count == 1
    assert f'image: "alpine/k8s:1.33.5@{KUBECTL}"  # kubectl' in text  # quotes and comment kept


def test_a_reference_without_a_real_digest_is_refused():
    assert PIN.unpinned(MANIFEST) == [f"your-registry/raysal:0.1.0@{ZEROS}", "alpine/k8s:1.33.4",
                                      "your-registry/raysal:0.1.0"]
    assert PIN.unpinned(f"FROM rayproject/ray:2.60.0-py311-gpu@{RAY} AS base\n") == []
    assert PIN.unpinned(f"image: x/y:1@{RAY[:-1]}\n") == [f"x/y:1@{RAY[:-1]}"]


@pytest.fixture
def deploy_copy(tmp_path):
    for name in (*MANIFESTS, "Dockerfile"):
        shutil.copy(DEPLOY / name, tmp_path / name)
    return tmp_path


def test_the_repository_ships_placeholders_that_check_refuses(deploy_copy, capsys):
    assert PIN.main(["--check", "--dir", str(deploy_copy)]) == 1
    refused = capsys.readouterr().err
    assert f"raycluster.yaml: your-registry/raysal:0.1.0@{ZEROS}" in refused
    assert f"rayjob-cronjob.yaml: alpine/k8s:1.33.4@{ZEROS}" in refused
    assert f"Dockerfile: rayproject/ray:2.60.0-py311-gpu@{ZEROS}" in refused


def test_pinning_the_three_images_makes_deploy_pass_the_check(deploy_copy, capsys):
    before = {name: (deploy_copy / name).read_text() for name in (*MANIFESTS, "Dockerfile")}
    assert PIN.main([f"rayproject/ray@{RAY}", f"alpine/k8s@{KUBECTL}", "--dir", str(deploy_copy)]) == 0
    assert PIN.main([f"your-registry/raysal@{RAYSAL}", "--check", "--dir", str(deploy_copy)]) == 0
    out = capsys.readouterr().out
    assert f"your-registry/raysal: 6 references pinned to {RAYSAL}" in out  # 2 + 1 + the RayJob's 3
    after = {name: (deploy_copy / name).read_text() for name in before}
    assert f"FROM rayproject/ray:2.60.0-py311-gpu@{RAY}\n" in after["Dockerfile"]
    assert "docker build -f deploy/Dockerfile -t your-registry/raysal:0.1.0 ." in after["Dockerfile"]  # a tag to build
    for name in before:  # only the digests changed
        assert after[name].replace(RAYSAL, ZEROS).replace(KUBECTL, ZEROS).replace(RAY, ZEROS) == before[name]


def test_an_unknown_repository_writes_nothing(deploy_copy, capsys):
    before = (deploy_copy / "raycluster.yaml").read_text()
    assert PIN.main([f"your-registry/raysal@{RAYSAL}", f"your-registry/raysa@{RAYSAL}",
                     "--dir", str(deploy_copy)]) == 1
    assert "refers to your-registry/raysa: nothing written" in capsys.readouterr().err
    assert (deploy_copy / "raycluster.yaml").read_text() == before


@pytest.mark.parametrize("argument", ["your-registry/raysal:0.1.0", f"your-registry/raysal@{ZEROS}",
                                      f"your-registry/raysal@{RAYSAL[:-2]}"])
def test_an_argument_without_a_digest_is_refused(argument, deploy_copy):
    with pytest.raises(SystemExit) as exit_info:
        PIN.main([argument, "--dir", str(deploy_copy)])
    assert exit_info.value.code == 2
