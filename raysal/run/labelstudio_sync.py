"""Label Studio and a run: push a waiting round's tasks into a project, pull its annotations
back into the round. The formats and the REST client are ``raysal.labelling.labelstudio``."""

from __future__ import annotations

import json
import os

from raysal.errors import Refused
from raysal.labelling.labelstudio import (
    CONFIG_FILE,
    EXPORT_FILE,
    PROJECT_FILE,
    TASKS_FILE,
    TO_NAME,
    Client,
    annotation_rows,
    local_folders,
    presign,
    without_signatures,
)
from raysal.run.state import RunState


def waiting_round(state: RunState) -> int:
    """The round whose selection waits for labels and has Label Studio tasks; ``Refused`` if none."""
    for number in reversed(state.rounds()):
        files = state.files(number)
        if state.stage_done(number, "select") and not state.stage_done(number, "label"):
            if state.exists(files.file(TASKS_FILE)):
                return number
            raise Refused(f"round {number} waits for labels but has no {TASKS_FILE}: its images cannot be shown "
                             f"in Label Studio (see the round's log); label {state.uri(files.to_label)} instead")
    raise Refused(f"no round of {state.root} is waiting for labels: run a round with label.mode = 'human' first")


def push(state: RunState, url: str, token: str, project: int | None = None) -> tuple[int, int, int]:
    """Push the waiting round's tasks to a new project (made with its labeling config), or to
    ``project``; (round, project, tasks). Local images get the project local-files storages
    over their folders (``local_folders``), which Label Studio needs to show them; ``s3://``
    images get presigned URLs made now. Refuses a round already pushed."""
    number = waiting_round(state)
    files = state.files(number)
    pushed = state.read_json(files.file(PROJECT_FILE))
    if pushed:
        raise Refused(f"round {number}'s tasks are already in project {pushed['project']} at {pushed['url']}: "
                         "pull its annotations (raysal labelstudio pull), or delete "
                         f"{state.uri(files.file(PROJECT_FILE))} to push them again")
    tasks = json.loads(state.read_bytes(files.file(TASKS_FILE)))
    expiry_s = (state.read_json(files.config) or {}).get("label", {}).get("presign_expiry_s", 7 * 24 * 3600)
    for task in tasks:  # signed when pushed, not when the round selected: the URLs last from now
        if task["data"]["uri"].startswith("s3://"):
            task["data"][TO_NAME] = presign(task["data"]["uri"], expiry_s)
    folders = local_folders(tasks)
    client = Client(url, token)
    if project is None:
        name = os.path.basename(state.root.rstrip("/")) or "run"
        project = client.create_project(f"raysal {name} round {number}"[:50],
                                        state.read_bytes(files.file(CONFIG_FILE)).decode())
    record = {"url": client.url, "project": project, "tasks": 0}
    state.write_json(files.file(PROJECT_FILE), record)  # before importing: a retry never makes a second project
    for folder in folders:
        client.connect_local_files(project, folder)
    record["tasks"] = client.import_tasks(project, tasks)
    state.write_json(files.file(PROJECT_FILE), record)
    return number, project, record["tasks"]


def pull(state: RunState, url: str | None, token: str, project: int | None = None) -> tuple[int, str, list]:
    """Save the project's JSON export, this round's tasks of it, in the waiting round
    (``EXPORT_FILE``); (round, its URI, the (image_id, label) annotation rows)."""
    number = waiting_round(state)
    files = state.files(number)
    pushed = state.read_json(files.file(PROJECT_FILE)) or {}
    url, project = url or pushed.get("url"), project or pushed.get("project")
    if not url or not project:
        raise Refused(f"round {number} was not pushed from here ({state.uri(files.file(PROJECT_FILE))} is missing): "
                         "give --url and --project")
    ours = {task["data"]["image_id"] for task in json.loads(state.read_bytes(files.file(TASKS_FILE)))}
    # A project that also holds other rounds' tasks: only this round's come back.
    export = [without_signatures(task) for task in Client(url, token).export(int(project))
              if (task.get("data") or {}).get("image_id") in ours]  # the presigned URLs push made: cut
    rows = annotation_rows(export)
    state.write_bytes(files.file(EXPORT_FILE), json.dumps(export).encode())
    return number, state.uri(files.file(EXPORT_FILE)), rows
