"""Label Studio's formats: the tasks a waiting round hands out, and the annotations that come back.

A round waiting for human labels writes, beside ``to_label.csv``, ``labelstudio/tasks.json`` in
Label Studio's import format and ``labelstudio/labeling_config.xml`` (one ``Choices`` named
``label`` over ``data.classes``) to create the project with. Each task shows the image by a URL
an annotator's browser can open (a local file through Label Studio's local-files serving; an
``s3://`` image by its URI, turned into a presigned URL only as ``push`` imports it, so that no
signed URL is stored in the state), carries ``image_id``, the uncertainty score and the rank in
``data``, and the model's top class as a pre-annotation (``predictions``).

Annotations come back as Label Studio's JSON, JSON-MIN or CSV export (``read_annotations``): one
row per annotation, ``image_id`` and ``label`` (None where the annotator skipped the task).
``raysal.labelling.labels`` decides what the round takes.

``raysal labelstudio push`` creates a project for a waiting round and imports its tasks;
``raysal labelstudio pull`` saves the project's export in the round, to import with
``--import-labels`` (``Client``, ``main``). No Ray, no TensorFlow; boto3 only to presign,
requests only to talk to a server.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Iterable, Sequence
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit
from xml.sax.saxutils import quoteattr

import jsonschema
import pyarrow as pa

from raysal.errors import AnnotationError, Refused, ServerError  # noqa: F401  (raised here; importable from here too)

FROM_NAME = "label"  # the Choices control: its name is the column of the JSON-MIN and CSV exports
TO_NAME = "image"  # the Image object, and the task's data key holding the URL
TASKS_FILE = "labelstudio/tasks.json"
CONFIG_FILE = "labelstudio/labeling_config.xml"
LOCAL_FILES_URL = "/data/local-files/?d="  # Label Studio's local-files serving
TASK_FIELDS = {TO_NAME, "image_id", "uri", "score", "rank"}  # a task's data (``tasks``)
MIN_EXPORT_FIELDS = {"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "agreement"}
PACKED_MARK = "#image_id="  # in the name of a row packed in a shard (sources: "<shard>#image_id=<id>")


def labeling_config(classes: Sequence[str]) -> str:
    """The labeling interface: the image, and one single choice among ``classes``."""
    choices = "\n".join(f"    <Choice value={quoteattr(name)}/>" for name in classes)
    return (f'<View>\n  <Image name="{TO_NAME}" value="${TO_NAME}"/>\n'
            f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">\n'
            f"{choices}\n  </Choices>\n</View>\n")


def image_url(uri: str, files_root: str) -> str:
    """What a task shows for ``uri``: Label Studio's local-files URL (relative to ``files_root``,
    its LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT) for a local path; an ``http(s)://`` URL, and an
    ``s3://`` URI, as they are. An ``s3://`` image is signed only as it is pushed (``presign``),
    so that no signed URL, a credential for its lifetime, is ever stored in the run's state.

    Raises:
        Refused: a local file outside ``files_root``, or a scheme a browser cannot open.
    """
    if PACKED_MARK in uri:
        raise Refused(f"{uri} is an image packed in a Parquet shard (raysal pack), which Label Studio cannot open: "
                         "label from the images' own files (a manifest with their uris)")
    if uri.startswith(("http://", "https://", "s3://")):
        return uri
    if "://" in uri and not uri.startswith("file://"):
        raise Refused(f"{uri}: Label Studio cannot show a {uri.split('://')[0]}:// image; serve it over http(s)")
    path = os.path.abspath(uri.removeprefix("file://"))
    root = os.path.abspath(files_root or os.sep)
    relative = os.path.relpath(path, root)
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        raise Refused(f"{uri} is outside label.files_root {root}, the folder Label Studio serves local files "
                         "from (its LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT): set label.files_root to a folder "
                         "above the images")
    return LOCAL_FILES_URL + quote(relative)


def presign(uri: str, expiry_s: int) -> str:
    """A presigned GET URL for an ``s3://bucket/key`` object, valid ``expiry_s`` seconds or until
    the credentials that signed it expire (a role's session: often hours); the endpoint, region
    and credentials are boto3's (``AWS_ENDPOINT_URL`` for an S3-compatible store)."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    try:
        client = _s3_client(os.environ.get("AWS_ENDPOINT_URL") or None)
        return client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expiry_s)
    except (BotoCoreError, ClientError) as exc:  # no credentials, a bad endpoint
        raise Refused(f"{uri}: cannot make a presigned URL: {exc}") from None


_SIGNATURE_FIELDS = ("x-amz-signature", "x-amz-credential", "x-amz-security-token", "signature", "awsaccesskeyid",
                     "x-goog-signature", "sig")  # what marks a query string as a signature (S3, GCS, Azure)


def without_signatures(value: Any) -> Any:
    """``value`` (a Label Studio export, say) with the query string cut from every signed URL in
    it: a presigned URL is a credential for its lifetime, and the export is stored in the state."""
    if isinstance(value, dict):
        return {key: without_signatures(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_signatures(item) for item in value]
    if isinstance(value, str) and value.startswith(("http://", "https://")) and "?" in value:
        url = urlsplit(value)
        if any(name.lower() in _SIGNATURE_FIELDS for name, _ in parse_qsl(url.query, keep_blank_values=True)):
            return urlunsplit(url._replace(query=""))
    return value


@functools.cache
def _s3_client(endpoint: str | None) -> Any:
    """One client per endpoint, not one per image."""
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client("s3", endpoint_url=endpoint, config=BotoConfig(signature_version="s3v4"))  # SigV4: 7 days


def tasks(selection: pa.Table, classes: Sequence[str], model_version: str, files_root: str) -> list[dict[str, Any]]:
    """Label Studio tasks for a selection (``image_id``, ``uri``, ``score``, ``predicted``,
    ``rank``, and ``probability`` of the predicted class when known), in rank order."""
    made = []
    for row in selection.to_pylist():
        task: dict[str, Any] = {"data": {TO_NAME: image_url(row["uri"], files_root),
                                         "image_id": int(row["image_id"]), "uri": row["uri"],
                                         "score": row["score"], "rank": int(row["rank"])}}
        predicted = row.get("predicted")
        if predicted is not None and 0 <= predicted < len(classes):
            task["predictions"] = [{
                "model_version": model_version, "score": row.get("probability"),
                "result": [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
                            "value": {"choices": [classes[predicted]]}}]}]
        made.append(task)
    return made


# The shape of an export, as far as raysal reads it (Label Studio's JSON and JSON-MIN formats):
# a file of any other shape is refused naming where it differs, never read half-way.
_IMAGE_ID = {"type": ["integer", "string", "null"]}
_CHOICES = {"type": "array", "items": {"type": "string"}}
_RESULT = {"type": ["array", "null"], "items": {"type": "object", "properties": {
    "type": {"type": "string"}, "from_name": {"type": "string"},
    "value": {"type": ["object", "null"], "properties": {"choices": _CHOICES}}}}}
_JSON_TASK = {"properties": {
    "data": {"type": ["object", "null"], "properties": {"image_id": _IMAGE_ID}},
    "annotations": {"type": ["array", "null"], "items": {"type": "object", "properties": {"result": _RESULT}}}}}
_MIN_TASK = {"properties": {"image_id": _IMAGE_ID, FROM_NAME: {"anyOf": [
    {"type": ["string", "null"]}, _CHOICES, {"type": "object", "properties": {"choices": _CHOICES}}]}}}
EXPORT_SCHEMA = {"type": "array", "items": {
    "type": "object", "if": {"anyOf": [{"required": ["data"]}, {"required": ["annotations"]}]},
    "then": _JSON_TASK, "else": _MIN_TASK}}


def check_export(export: Any) -> None:
    """Refuse an export whose shape raysal does not read, naming the first place it differs
    (``task 3: annotations[0].result: 5 is not of type 'array', 'null'``).

    Raises:
        AnnotationError: the export is not a list of tasks of the JSON or JSON-MIN format.
    """
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(EXPORT_SCHEMA).iter_errors(export))
    if error is None:
        return
    where = list(error.absolute_path)
    if not where:
        raise AnnotationError("expected a list of tasks (Label Studio's JSON or JSON-MIN export)")
    task = export[where[0]]
    name = task.get("id", where[0]) if isinstance(task, dict) else where[0]
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in where[1:]).lstrip(".")
    raise AnnotationError(f"task {name}: {path or 'the task'}: {error.message[:200]}")


def _choice(result: Iterable[dict[str, Any]], where: str) -> str | None:
    """The class an annotation's result chose in the ``label`` control, or None (nothing chosen).

    Raises:
        AnnotationError: the result has choices, but of other controls: a project whose labeling
            config is not raysal's.
    """
    others = set()
    for item in result or []:
        if item.get("type", "choices") != "choices":
            continue
        if item.get("from_name", FROM_NAME) != FROM_NAME:
            others.add(str(item.get("from_name")))
            continue
        choices = (item.get("value") or {}).get("choices") or []
        if choices:
            return choices[0]
    if others:
        raise AnnotationError(f"{where}: its annotation chose in {sorted(others)}, not in a control named "
                              f"{FROM_NAME!r}: make the project with raysal's labeling_config.xml")
    return None


def _image_id(data: dict[str, Any], where: str) -> int:
    value = data.get("image_id")
    if value is None:
        raise AnnotationError(f"{where} has no image_id in its data: export the project raysal's tasks.json "
                              "created (its tasks carry image_id)")
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise AnnotationError(f"{where}: image_id {value!r} is not an integer") from None


def annotation_rows(export: Any) -> list[tuple[int, str | None]]:
    """(image_id, label) per annotation of a parsed JSON or JSON-MIN export; label None for a
    skipped or cancelled annotation, and for a task with none at all (each counts as unlabelled).

    Raises:
        AnnotationError: not an export of that shape (``check_export``), or a task without an
            ``image_id``.
    """
    check_export(export)
    rows: list[tuple[int, str | None]] = []
    for n, task in enumerate(export):
        where = f"task {task.get('id', n)}"
        if "annotations" in task or "data" in task:  # the JSON export: the task's data and its annotations
            image_id = _image_id(task.get("data") or {}, where)
            annotations = task.get("annotations") or []
            if not annotations:
                rows.append((image_id, None))
            for annotation in annotations:
                cancelled = annotation.get("was_cancelled") or annotation.get("skipped")
                rows.append((image_id, None if cancelled else _choice(annotation.get("result"), where)))
        else:  # JSON-MIN: the data's fields and each control's value, flat
            unknown = set(task) - TASK_FIELDS - MIN_EXPORT_FIELDS - {FROM_NAME}
            if FROM_NAME not in task and unknown:  # another control's answer, under its own name
                raise AnnotationError(f"{where} has no {FROM_NAME!r} field but {sorted(unknown)}: make the project "
                                      "with raysal's labeling_config.xml")
            value = task.get(FROM_NAME)
            if isinstance(value, dict):  # {"choices": [...]}
                value = (value.get("choices") or [None])[0]
            elif isinstance(value, list):
                value = value[0] if value else None
            rows.append((_image_id(task, where), value or None))
    return rows


def read_annotations_json(data: bytes, path: str) -> pa.Table:
    """``image_id`` (int64), ``label`` (string, null = unlabelled) of a JSON or JSON-MIN export."""
    try:
        export = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path} is not JSON: {exc}") from None
    try:
        rows = annotation_rows(export)
    except AnnotationError as exc:
        raise AnnotationError(f"{path}: {exc}") from None
    return pa.table({"image_id": pa.array([i for i, _ in rows], pa.int64()),
                     "label": pa.array([label for _, label in rows], pa.string())})


# --- sync with a Label Studio server -----------------------------------------------------------
# Label Studio's REST API, through requests. (label-studio-sdk 2.x needs numpy < 2.3, older than
# raysal's pin, and 1.x installs opencv-python beside opencv-python-headless: neither fits the
# project's environment, and the few calls below need neither.)

TOKEN_ENV = "LABEL_STUDIO_API_KEY"  # the token's environment variable, as label-studio-sdk's
PROJECT_FILE = "labelstudio/project.json"  # in a round: the project its tasks were pushed to
EXPORT_FILE = "labelstudio/annotations.json"  # in a round: the project's JSON export, pulled


class Client:
    """A Label Studio server at ``url``, with a personal access token (a JWT refresh token,
    Label Studio 1.23's default: exchanged for short-lived access tokens at ``/api/token/refresh``)
    or a legacy API token (sent as it is)."""

    def __init__(self, url: str, token: str, timeout_s: float = 60.0) -> None:
        import requests

        if not token:
            raise ServerError(f"no Label Studio token: set {TOKEN_ENV} to a personal access token "
                              "(Label Studio: Account & Settings > Personal Access Token)")
        self.url, self.token, self.timeout_s = url.rstrip("/"), token, timeout_s
        self.session = requests.Session()
        self.personal = token.count(".") == 2  # a JWT
        self._access = ""

    def _authorization(self, renew: bool = False) -> str:
        if not self.personal:
            return f"Token {self.token}"
        if renew or not self._access:
            answer = self._json("POST", "/api/token/refresh", body={"refresh": self.token}, auth=False)
            if not isinstance(answer, dict) or "access" not in answer:
                raise ServerError(f"Label Studio at {self.url} gave no access token for the personal access token: "
                                  f"{str(answer)[:200]}")
            self._access = answer["access"]
        return f"Bearer {self._access}"

    def _json(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None,
              auth: bool = True) -> Any:
        """The JSON answer to ``method path`` (a JSON ``body``, a ``query``); ServerError if none."""
        import requests

        for attempt in range(2):
            headers = {"Authorization": self._authorization(renew=attempt > 0)} if auth else {}
            try:
                response = self.session.request(method, self.url + path, json=body, params=query, headers=headers,
                                                timeout=self.timeout_s)
            except requests.RequestException as exc:
                raise ServerError(f"Label Studio at {self.url} did not answer {method} {path}: {exc}") from None
            if response.status_code == 401 and auth and self.personal and attempt == 0:
                continue  # the access token expired: renew it once
            if response.status_code == 401 and auth and not self.personal:
                raise ServerError(f"Label Studio at {self.url} refused the token: it is a legacy token, which Label "
                                  "Studio 1.23 turns off by default; use a personal access token")
            if not response.ok:
                raise ServerError(f"Label Studio at {self.url}: {method} {path} answered {response.status_code}: "
                                  f"{response.text[:500]}")
            try:
                return response.json() if response.content else None
            except ValueError:
                raise ServerError(f"Label Studio at {self.url}: {method} {path} answered with no JSON: "
                                  f"{response.text[:200]}") from None
        raise AssertionError("unreachable")

    def _field(self, answer: Any, name: str, what: str) -> Any:
        if not isinstance(answer, dict) or name not in answer:
            raise ServerError(f"Label Studio at {self.url}: {what} answered without {name!r}: {str(answer)[:200]}")
        return answer[name]

    def create_project(self, title: str, label_config: str) -> int:
        answer = self._json("POST", "/api/projects", body={"title": title, "label_config": label_config})
        return int(self._field(answer, "id", "creating a project"))

    def connect_local_files(self, project: int, folder: str) -> None:
        """Let ``project`` show the local files below ``folder``: Label Studio serves a local file
        only to a project with a local-files storage above it (one that is never synced: the
        tasks come from raysal)."""
        self._json("POST", "/api/storages/localfiles/", body={"project": project, "path": folder,
                                                              "title": "raysal images", "use_blob_urls": True})

    def import_tasks(self, project: int, tasks: list[dict[str, Any]]) -> int:
        """Import ``tasks`` (with their predictions); the number Label Studio created."""
        answer = self._json("POST", f"/api/projects/{project}/import", body=tasks)
        return int(self._field(answer, "task_count", "importing tasks"))

    def export(self, project: int) -> list[dict[str, Any]]:
        """Every task of ``project`` with its annotations: Label Studio's JSON export."""
        answer = self._json("GET", f"/api/projects/{project}/export",
                            query={"exportType": "JSON", "download_all_tasks": "true"})
        if not isinstance(answer, list):
            raise ServerError(f"Label Studio at {self.url}: the export of project {project} is not a list of tasks")
        return answer


def local_folders(tasks: list[dict[str, Any]]) -> list[str]:
    """The folders a project needs local-files storages over to show the tasks' local images: per
    folder just below the served root, the images' deepest common folder (Label Studio takes a
    storage only strictly below its document root).

    Raises:
        Refused: an image directly in the served root.
    """
    groups: dict[str, list[str]] = {}
    for task in tasks:
        image = task["data"][TO_NAME]
        if not image.startswith(LOCAL_FILES_URL):
            continue
        relative = unquote(image[len(LOCAL_FILES_URL):])
        path = os.path.abspath(task["data"]["uri"].removeprefix("file://"))
        top, sep, _ = relative.partition("/")
        if not sep:
            raise Refused(f"{path} is directly in label.files_root, the folder Label Studio serves, and Label "
                             "Studio shows only files in its subfolders: set label.files_root to a folder above "
                             "the images' folder")
        groups.setdefault(path[: len(path) - len(relative)] + top, []).append(os.path.dirname(path))
    return [os.path.commonpath(dirs) for _, dirs in sorted(groups.items())]
