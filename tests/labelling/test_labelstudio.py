"""Label Studio: the tasks a waiting round writes, the exports it imports, and a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysal.config import ConfigError, load_config
from raysal.labelling import labelstudio
from raysal.labelling.labels import LabelFileError, read_label_file, validate_labels
from raysal.model import embeddings
from raysal.run.state import RunState

from _jobs import FAST, REPO, copy_state, round_file, run_job

CLASSES = ["cat", "dog", 'fox & "wolf"']


def test_the_labeling_config_offers_every_class_once():
    view = ElementTree.fromstring(labelstudio.labeling_config(CLASSES))
    image, choices = view.find("Image"), view.find("Choices")
    assert image.get("name") == "image" and image.get("value") == "$image"
    assert choices.get("name") == "label" and choices.get("toName") == "image" and choices.get("choice") == "single"
    assert [c.get("value") for c in choices.findall("Choice")] == CLASSES


def test_image_urls_an_annotator_can_open(tmp_path, monkeypatch):
    root = tmp_path / "served"
    assert labelstudio.image_url(str(root / "a b" / "1.png"), str(root)) == "/data/local-files/?d=a%20b/1.png"
    assert labelstudio.image_url(f"file://{root}/x.png", str(root)) == "/data/local-files/?d=x.png"
    assert labelstudio.image_url("/data/x.png", "") == "/data/local-files/?d=data/x.png"  # root "/"
    assert labelstudio.image_url("https://cdn.example.com/x.jpg", "") == "https://cdn.example.com/x.jpg"
    with pytest.raises(ValueError, match=r"outside label.files_root .*LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"):
        labelstudio.image_url(str(tmp_path / "elsewhere.png"), str(root))
    with pytest.raises(ValueError, match="cannot show a gs:// image"):
        labelstudio.image_url("gs://bucket/x.png", "")
    assert labelstudio.image_url(str(root / "..cache" / "#1?.png"), str(root)) == \
        "/data/local-files/?d=..cache/%231%3F.png"  # a folder named "..", quoted characters
    with pytest.raises(ValueError, match=r"packed in a Parquet shard \(raysal pack\)"):
        labelstudio.image_url("/data/shard-0.parquet#image_id=5", "")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert labelstudio.image_url("s3://pool-bucket/images/7.jpg", "") == "s3://pool-bucket/images/7.jpg"  # unsigned
    signed = labelstudio.presign("s3://pool-bucket/images/7.jpg", 3600)  # as push signs it
    assert signed.startswith("http://127.0.0.1:9/pool-bucket/images/7.jpg?") and "X-Amz-Expires=3600" in signed
    export = [{"id": 1, "data": {"image": signed, "cdn": "https://cdn.example.com/7.jpg?v=2", "uri": "s3://b/7.jpg"}}]
    assert labelstudio.without_signatures(export) == [{"id": 1, "data": {
        "image": "http://127.0.0.1:9/pool-bucket/images/7.jpg", "cdn": "https://cdn.example.com/7.jpg?v=2",
        "uri": "s3://b/7.jpg"}}]


def test_tasks_carry_the_image_id_score_rank_and_a_pre_annotation():
    selection = pa.table({"image_id": [7, 3], "uri": ["/p/7.png", "/p/3.png"], "score": [0.9, 0.8],
                          "predicted": [1, -1], "rank": [1, 2], "probability": [0.45, None]})
    tasks = labelstudio.tasks(selection, CLASSES, "raysal models/0002", "/p")
    assert tasks[0] == {"data": {"image": "/data/local-files/?d=7.png", "image_id": 7, "uri": "/p/7.png", "score": 0.9,
                                 "rank": 1},
                        "predictions": [{"model_version": "raysal models/0002", "score": 0.45, "result": [
                            {"from_name": "label", "to_name": "image", "type": "choices",
                             "value": {"choices": ["dog"]}}]}]}
    assert "predictions" not in tasks[1]  # an image the model gave no class


def test_local_images_get_a_storage_per_folder_below_the_served_root():
    def task(path: str, root: str) -> dict:
        return {"data": {"image": labelstudio.image_url(path, root), "uri": path}}

    tasks = [task("/data/a/x/1.png", "/data"), task("/data/a/x/y/2.png", "/data"), task("/data/b/3.png", "/data"),
             task("https://cdn/4.png", "/data")]
    assert labelstudio.local_folders(tasks) == ["/data/a/x", "/data/b"]
    with pytest.raises(ValueError, match="directly in label.files_root"):
        labelstudio.local_folders([task("/data/5.png", "/data")])


def test_an_export_from_another_labeling_config_is_refused_naming_its_controls():
    other = [{"id": 1, "data": {"image_id": 10}, "annotations": [{"result": [
        {"from_name": "species", "to_name": "image", "type": "choices", "value": {"choices": ["cat"]}}]}]}]
    with pytest.raises(labelstudio.AnnotationError, match=r"task 1: its annotation chose in \['species'\]"):
        labelstudio.annotation_rows(other)
    with pytest.raises(labelstudio.AnnotationError, match=r"task 2 has no 'label' field but \['species'\]"):
        labelstudio.annotation_rows([{"id": 2, "image_id": 10, "species": "cat", "annotator": 1}])
    # a submitted annotation that chose nothing is unlabelled, not an error
    assert labelstudio.annotation_rows([{"id": 3, "image_id": 10, "annotator": 1, "lead_time": 2.5}]) == [(10, None)]


def _annotation(choice: str | None, cancelled: bool = False) -> dict:
    result = [] if choice is None else [{"from_name": "label", "to_name": "image", "type": "choices",
                                         "value": {"choices": [choice]}}]
    return {"id": 1, "result": result, "was_cancelled": cancelled}


def test_json_and_json_min_exports_become_annotation_rows():
    export = [{"id": 1, "data": {"image_id": 10}, "annotations": [_annotation("cat")]},
              {"id": 2, "data": {"image_id": 11}, "annotations": [_annotation(None, cancelled=True)]},
              {"id": 3, "data": {"image_id": 12}, "annotations": []},
              {"id": 4, "data": {"image_id": 13}, "annotations": [_annotation("dog"), _annotation("dog"),
                                                                   _annotation("cat")]}]
    assert labelstudio.annotation_rows(export) == [(10, "cat"), (11, None), (12, None), (13, "dog"), (13, "dog"),
                                                   (13, "cat")]
    flat = [{"image": "x", "image_id": 10, "label": "cat", "id": 1}, {"image_id": "11", "label": ""}]
    assert labelstudio.annotation_rows(flat) == [(10, "cat"), (11, None)]
    with pytest.raises(labelstudio.AnnotationError, match="task 5 has no image_id"):
        labelstudio.annotation_rows([{"id": 5, "data": {"image": "x"}, "annotations": []}])
    with pytest.raises(labelstudio.AnnotationError, match="expected a list of tasks"):
        labelstudio.annotation_rows({"tasks": []})


@pytest.mark.parametrize(("export", "said"), [
    ([{"id": 7, "data": True}], r"task 7: data: True is not of type 'object', 'null'"),
    ([{"data": {"image_id": 1}, "annotations": [{"result": [{"value": {"choices": 5}}]}]}],
     r"task 0: annotations\[0\]\.result\[0\]\.value\.choices: 5 is not of type 'array'"),
    ([{"data": {"image_id": 1}, "annotations": "cat"}], r"task 0: annotations: 'cat' is not of type"),
    ([{"image_id": 1, "label": 3}], r"task 0: label: 3 is not valid"),
    ([{"image_id": 1.5, "label": "cat"}], r"task 0: image_id: 1.5 is not of type"),
    ([{"data": {"image_id": 1}}, None], "task 1: the task: None is not of type 'object'"),
])
def test_an_export_of_another_shape_is_refused_naming_where(export, said):
    with pytest.raises(labelstudio.AnnotationError, match=said):
        labelstudio.annotation_rows(export)


SELECTED = np.array([10, 11, 12, 13])
POOL = np.arange(10, 20)


def _table(rows: list[tuple[int, str | None]]) -> pa.Table:
    return pa.table({"image_id": pa.array([r[0] for r in rows], pa.int64()),
                     "label": pa.array([r[1] for r in rows], pa.string())})


def test_skipped_images_stay_unlabelled_and_several_annotations_take_the_majority():
    rows = [(10, "cat"), (11, None), (13, "dog"), (13, "dog"), (13, "cat"), (12, "cat"), (12, "dog")]
    taken = validate_labels(_table(rows), SELECTED, POOL, CLASSES, 2, min_labelled=0.5)
    labelled = taken.table.to_pydict()
    assert dict(zip(labelled["image_id"], labelled["label"], strict=True)) == {10: 0, 13: 1}
    assert taken.unlabelled.tolist() == [11, 12] and taken.ties.tolist() == [12]  # 12: one cat, one dog
    with pytest.raises(LabelFileError, match=r"2 of 4 selected images are labelled, fewer than the 4 that "
                                             r"label.min_labelled = 0.9 asks; without a label: \[11, 12\] \(1 with "
                                             r"tied annotations"):
        validate_labels(_table(rows), SELECTED, POOL, CLASSES, 2, min_labelled=0.9)
    with pytest.raises(LabelFileError, match=r"image_ids labelled more than once \[12, 13\] \(label.multiple = "
                                             r"'refuse'"):
        validate_labels(_table(rows), SELECTED, POOL, CLASSES, 2, min_labelled=0.5, multiple="refuse")
    # what stays refused whatever the fraction: an unknown id or class, an empty id
    for bad, message in (((99, "cat"), "unknown image_ids [99]"), ((14, "cat"), "not selected in round 2: [14]"),
                         ((10, "zebra"), "unknown classes ['zebra']")):
        with pytest.raises(LabelFileError, match="nothing applied") as error:
            validate_labels(_table([*rows, bad]), SELECTED, POOL, CLASSES, 2, min_labelled=0.5)
        assert message in str(error.value)
    exactly = [(i, "cat") for i in range(7)]  # 7 of 100 at 0.07: enough, though 0.07 x 100 > 7 in floats
    assert len(validate_labels(_table(exactly), np.arange(100), np.arange(100), CLASSES, 2, 0.07).table) == 7
    empty_id = pa.table({"image_id": pa.array([10, None], pa.int64()), "label": ["cat", "dog"]})
    with pytest.raises(LabelFileError, match="1 rows with an empty image_id"):
        validate_labels(empty_id, SELECTED, POOL, CLASSES, 2, min_labelled=0.1)


def test_label_studio_exports_are_read_from_json_and_csv_files(tmp_path):
    export = [{"id": 1, "data": {"image_id": 10}, "annotations": [_annotation("cat")]},
              {"id": 2, "data": {"image_id": 11}, "annotations": [_annotation(None, cancelled=True)]}]
    (tmp_path / "export.json").write_text(json.dumps(export))
    assert read_label_file(str(tmp_path / "export.json")).to_pylist() == [{"image_id": 10, "label": "cat"},
                                                                         {"image_id": 11, "label": None}]
    (tmp_path / "export.csv").write_text('"annotation_id","annotator","id","image","image_id","label"\r\n'
                                         '3,"1",3,"/data/local-files/?d=x.png",10,"dog"\r\n'
                                         '4,"1",4,"/data/local-files/?d=y.png",11,""\r\n'
                                         '5,"1",5,"/data/local-files/?d=z,1.png",12,"NA"\r\n')
    assert read_label_file(str(tmp_path / "export.csv")).select(["image_id", "label"]).to_pylist() == [
        {"image_id": 10, "label": "dog"}, {"image_id": 11, "label": None}, {"image_id": 12, "label": "NA"}]
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(LabelFileError, match="broken.json is not JSON"):
        read_label_file(str(tmp_path / "broken.json"))
    (tmp_path / "no_ids.json").write_text(json.dumps([{"id": 9, "data": {}, "annotations": []}]))
    with pytest.raises(LabelFileError, match="nothing applied: .*task 9 has no image_id"):
        read_label_file(str(tmp_path / "no_ids.json"))


def test_bad_label_settings_are_refused_naming_the_field():
    for key, value, message in (("label.min_labelled", 0.0, "must be in (0, 1]"),
                                ("label.multiple", "first", "'first' is not one of"),
                                ("label.presign_expiry_s", 10**6, "7 days")):
        with pytest.raises(ConfigError, match=f"{key}: .*") as error:
            load_config("demo", {key: value})
        assert message in str(error.value)


def test_a_waiting_round_writes_label_studio_tasks(waiting_state):
    state = RunState(str(waiting_state))
    tasks = json.loads(round_file(waiting_state, 1, labelstudio.TASKS_FILE).read_text())
    selection = pq.read_table(round_file(waiting_state, 1, "selection.parquet")).to_pylist()
    assert [t["data"]["image_id"] for t in tasks] == [row["image_id"] for row in selection]
    assert [t["data"]["rank"] for t in tasks] == list(range(1, 41))
    scores = pq.read_table(round_file(waiting_state, 1, "scores"), columns=["image_id", "top_probs"])
    top = dict(zip(scores["image_id"].to_pylist(), embeddings.column_matrix(scores["top_probs"])[:, 0], strict=True))
    classes = load_config("demo").data.classes
    for task, row in zip(tasks, selection, strict=True):
        assert task["data"]["image"] == "/data/local-files/?d=" + row["uri"].lstrip("/")  # files_root "/"
        assert task["data"]["score"] == pytest.approx(row["score"])
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == "raysal models/0000"
        assert prediction["result"][0]["value"]["choices"] == [classes[row["predicted"]]]
        assert prediction["score"] == pytest.approx(float(top[row["image_id"]]))
    view = ElementTree.fromstring(round_file(waiting_state, 1, labelstudio.CONFIG_FILE).read_text())
    assert [c.get("value") for c in view.iter("Choice")] == list(classes)
    assert state.stage_done(1, "label") is None


def _raysal(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    raysal = Path(sys.executable).parent / "raysal"  # the command the project installs
    return subprocess.run([str(raysal), *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **env}, timeout=120)


@pytest.mark.parametrize(("args", "said"), [
    (["push", "--url", "http://127.0.0.1:9"], "is waiting for labels: run a round with label.mode = 'human' first"),
    (["pull"], "is waiting for labels: run a round with label.mode = 'human' first"),
    (["push"], "--url (or $LABEL_STUDIO_URL) is needed to push"),
])
def test_labelstudio_refusals_exit_2_without_asking_a_server(tmp_path, monkeypatch, capsys, args, said):
    """Refused (raysal.errors, exit 2) before any request: no server answers at port 9."""
    from raysal import cli

    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    (tmp_path / "state").mkdir()
    assert cli.main(["labelstudio", *args, "--state", str(tmp_path / "state")]) == 2
    assert said in capsys.readouterr().err


def _move_to_s3(state_dir: Path, count: int) -> dict[int, str]:
    """The waiting round's last ``count`` tasks as if their images were on S3 (the moto bucket):
    the images uploaded, and the tasks naming their ``s3://`` URIs, as a round whose pool is on S3
    writes them."""
    import boto3

    path = round_file(state_dir, 1, labelstudio.TASKS_FILE)
    tasks = json.loads(path.read_text())
    moved = {}
    for task in tasks[-count:]:
        key = f"ls-images/{task['data']['image_id']}.png"
        boto3.client("s3").upload_file(task["data"]["uri"], "raysal-test", key)
        task["data"]["uri"] = task["data"]["image"] = moved[task["data"]["image_id"]] = f"s3://raysal-test/{key}"
    path.write_text(json.dumps(tasks))
    return moved


@pytest.mark.timeout(900)
def test_a_round_goes_through_a_real_label_studio_server(waiting_state, tmp_path, s3):
    """Push a waiting round's tasks to a real Label Studio, annotate them through its API as
    annotators would (most once, one three times, two skipped, one never opened), pull the
    annotations and finish the round with them: the skipped images go back to the pool. Images
    on S3 are signed as they are pushed, and no signed URL is left in the state."""
    import requests

    from _labelstudio import start

    state_dir = copy_state(waiting_state, tmp_path / "state", keep_rounds=True)
    manifest = pq.read_table(state_dir / "data" / "digits" / "manifest.parquet").to_pydict()
    truth = dict(zip(manifest["image_id"], manifest["label"], strict=True))
    on_s3 = _move_to_s3(state_dir, 2)
    server = start(tmp_path / "label-studio", files_root="/")
    try:
        env = {"LABEL_STUDIO_API_KEY": server.token}
        pushed = _raysal("labelstudio", "push", "--state", str(state_dir), "--url", server.url, env=env)
        assert pushed.returncode == 0, pushed.stderr
        project = json.loads((state_dir / "rounds" / "0001" / labelstudio.PROJECT_FILE).read_text())
        assert project["tasks"] == 40 and f"/projects/{project['project']}" in pushed.stdout
        again = _raysal("labelstudio", "push", "--state", str(state_dir), "--url", server.url, env=env)
        assert again.returncode == 2 and "already in project" in again.stderr

        headers = {"Authorization": f"Bearer {_access(server)}"}
        tasks = requests.get(f"{server.url}/api/tasks", params={"project": project["project"], "page_size": 100},
                             headers=headers, timeout=30).json()["tasks"]
        assert len(tasks) == 40
        for task in tasks:  # an S3 image by a URL signed at push time, a local one through Label Studio
            if task["data"]["image_id"] in on_s3:
                assert task["data"]["image"].startswith(f"{s3['AWS_ENDPOINT_URL']}/raysal-test/ls-images/")
                assert "X-Amz-Signature=" in task["data"]["image"]
                signed = requests.get(task["data"]["image"], timeout=30)  # what a browser shows
                assert signed.status_code == 200 and signed.content[:8] == b"\x89PNG\r\n\x1a\n"
            else:
                assert task["data"]["image"].startswith("/data/local-files/?d=")
        image = server.session.get(server.url + tasks[0]["data"]["image"], timeout=30)  # what a browser shows
        assert image.status_code == 200 and image.content[:8] == b"\x89PNG\r\n\x1a\n"
        classes = load_config("demo").data.classes
        by_rank = sorted(tasks, key=lambda t: t["data"]["rank"])
        skipped = [t["data"]["image_id"] for t in by_rank[:2]]
        unopened = by_rank[2]["data"]["image_id"]
        voted = by_rank[3]
        for task in by_rank[2:]:
            if task["data"]["image_id"] == unopened:
                continue
            votes = [truth[task["data"]["image_id"]]] * (2 if task is voted else 1)
            votes += [(truth[task["data"]["image_id"]] + 1) % 10] if task is voted else []  # outvoted
            for label in votes:
                _annotate(server, headers, task["id"], {"choices": [classes[label]]})
        for task in by_rank[:2]:
            _annotate(server, headers, task["id"], None)  # "Skip"

        pulled = _raysal("labelstudio", "pull", "--state", str(state_dir), env=env)
        assert pulled.returncode == 0, pulled.stderr
        assert "annotations of 37 images saved" in pulled.stdout and "(3 skipped or not annotated)" in pulled.stdout
        export = state_dir / "rounds" / "0001" / labelstudio.EXPORT_FILE
        selected = np.array([t["data"]["image_id"] for t in tasks])
        pool_ids = pq.read_table(round_file(state_dir, 1, "scores"), columns=["image_id"])["image_id"].to_numpy()
        from_json = validate_labels(read_label_file(str(export)), selected, pool_ids, classes, 1)
        by_json = dict(zip(*from_json.table.to_pydict().values(), strict=True))
        assert by_json == {t["data"]["image_id"]: truth[t["data"]["image_id"]] for t in by_rank[3:]}
        assert sorted(from_json.unlabelled.tolist()) == sorted([*skipped, unopened])
        for kind in ("JSON_MIN", "CSV"):  # the other exports a team may download from the UI read the same
            data = requests.get(f"{server.url}/api/projects/{project['project']}/export",
                                params={"exportType": kind, "download_all_tasks": "true"}, headers=headers, timeout=60)
            path = tmp_path / ("export-min.json" if kind == "JSON_MIN" else "export.csv")
            path.write_bytes(data.content)
            taken = validate_labels(read_label_file(str(path)), selected, pool_ids, classes, 1)
            # JSON-MIN and CSV hold one annotation per task: the voted image may come with either label
            assert set(taken.table["image_id"].to_pylist()) | set(taken.ties.tolist()) == set(by_json)
            vote = voted["data"]["image_id"]
            pairs = zip(*taken.table.to_pydict().values(), strict=True)
            assert {i: v for i, v in pairs if i != vote} == {i: v for i, v in by_json.items() if i != vote}
    finally:
        server.stop()

    code, out = run_job("--state", str(state_dir), *FAST, "--import-labels", str(export))
    assert code == 0, out[-3000:]
    assert "3 selected images got no label (skipped, missing or tied): back to the pool for later rounds" in out
    labels = pq.read_table(round_file(state_dir, 1, "labels.parquet")).to_pydict()
    expected = {t["data"]["image_id"]: truth[t["data"]["image_id"]] for t in by_rank[3:]}  # the majority, for `voted`
    assert dict(zip(labels["image_id"], labels["label"], strict=True)) == expected
    excluded = set(RunState(str(state_dir)).excluded_ids(before=2).tolist())
    assert excluded == set(labels["image_id"]) and not excluded & {*skipped, unopened}
    signed = [str(p) for p in state_dir.rglob("*") if p.is_file() and b"X-Amz-Signature" in p.read_bytes()]
    assert signed == [] and on_s3  # the export held signed URLs; pulled, it holds the S3 URIs' addresses


def _access(server) -> str:
    import requests

    response = requests.post(f"{server.url}/api/token/refresh", json={"refresh": server.token}, timeout=30)
    response.raise_for_status()
    return response.json()["access"]


def _annotate(server, headers: dict, task: int, value: dict | None) -> None:
    import requests

    body = {"result": [], "was_cancelled": True} if value is None else {
        "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": value}]}
    response = requests.post(f"{server.url}/api/tasks/{task}/annotations", json=body, headers=headers, timeout=30)
    assert response.status_code == 201, response.text
