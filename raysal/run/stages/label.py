"""The label stage: the selection's labels, from the pool source (oracle) or from a file people
made; without one, the round waits, its tasks for people (``to_label.csv``, Label Studio's)
written by the select stage (``write_tasks``)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raysal import faults
from raysal.errors import NothingToLabel, StateError
from raysal.labelling import labels as labels_lib
from raysal.labelling import labelstudio
from raysal.model.embeddings import column_matrix
from raysal.run.context import DONE, WAITING, Round
from raysal.run.state import RunState

log = logging.getLogger(__name__)


def selection(r: Round) -> pa.Table:
    """The round's selection (committed, or being committed by the select stage)."""
    table = r.state.read_table(r.files.selection)
    if table is None:
        raise StateError(f"round {r.number}: selection.parquet is missing though the select stage is committed")
    return table


def stage_label(r: Round, label_file: str | None) -> str:
    chosen = selection(r)
    selected = chosen["image_id"].to_numpy()
    if r.cfg.label.mode == "oracle":
        # Read here, not in Ray tasks: two columns stream by and only the selected rows are kept
        # (a Ray Data job costs seconds to start for a hundred labels).
        found = r.state.read_table(r.files.scores, columns=["image_id", "label"],
                                   filters=pc.field("image_id").isin(pa.array(selected, pa.int64())))
        by_id = dict(zip(found["image_id"].to_pylist(), found["label"].to_pylist(), strict=True))
        missing = [int(i) for i in selected if by_id.get(int(i)) is None or np.isnan(float(by_id[int(i)]))]
        if missing:
            raise StateError(f"round {r.number}: oracle labelling needs labels in the pool source, but "
                             f"{len(missing)} selected images have none (e.g. {missing[:5]}); "
                             "set label.mode = 'human' and import a label file")
        table = pa.table({"image_id": pa.array(selected, pa.int64()),
                          "label": pa.array([int(by_id[int(i)]) for i in selected], pa.int64())})
        source = "oracle"
    elif label_file is None:
        if not r.state.exists(r.files.to_label):  # a round selected before the select stage wrote them
            write_tasks(r, chosen)
        return WAITING
    else:
        pool_ids = r.state.read_table(r.files.scores, columns=["image_id"])["image_id"].to_numpy()
        taken = labels_lib.validate_labels(labels_lib.read_label_file(label_file), selected, pool_ids,
                                           r.cfg.data.classes, r.number, r.cfg.label.min_labelled,
                                           r.cfg.label.multiple)
        table, source = taken.table, label_file
        if len(taken.unlabelled):
            log.info("round %d: %d of %d selected images labelled; %d without a label (skipped, missing or "
                     "tied%s) go back to the pool, e.g. %s", r.number, len(table), len(selected), len(taken.unlabelled),
                     f", {len(taken.ties)} with tied annotations" if len(taken.ties) else "",
                     taken.unlabelled[:5].tolist())
    r.state.write_table(r.files.labels, table)
    faults.point("label:labels-written")
    r.state.commit_stage(r.number, "label", {"labelled": int(len(table)), "source": source,
                                             "unlabelled": int(len(selected) - len(table))})
    return DONE


def write_tasks(r: Round, chosen: pa.Table) -> None:
    """The tasks for people: Label Studio's (``labelstudio.TASKS_FILE``, its labeling config),
    then ``to_label.csv``."""
    found = r.state.read_table(r.files.scores, columns=["image_id", "top_probs"],
                               filters=pc.field("image_id").isin(chosen["image_id"])) if r.number else None
    top = dict(zip(found["image_id"].to_pylist(), column_matrix(found["top_probs"])[:, 0].tolist(), strict=True)
               ) if found is not None and found.num_rows else {}  # round 0 of a cold start: no model, none
    chosen = chosen.append_column("probability", pa.array([top.get(i) for i in chosen["image_id"].to_pylist()],
                                                          pa.float64()))
    label = r.cfg.label
    try:
        version = f"raysal {r.state.model_key(r.number - 1)}" if r.number else "raysal cold start (no model)"
        tasks = labelstudio.tasks(chosen, r.cfg.data.classes, version,
                                  label.files_root)
    except ValueError as exc:  # an image Label Studio cannot show: the CSV still serves
        log.warning("round %d: no Label Studio tasks written: %s", r.number, exc)
    else:
        r.state.write_bytes(r.files.file(labelstudio.TASKS_FILE), json.dumps(tasks, indent=1).encode())
        r.state.write_bytes(r.files.file(labelstudio.CONFIG_FILE),
                            labelstudio.labeling_config(r.cfg.data.classes).encode())
    csv = labels_lib.people_csv(("image_id", "uri"), list(zip(chosen["image_id"].to_pylist(),
                                                              chosen["uri"].to_pylist(), strict=True)))
    r.state.write_bytes(r.files.to_label, csv.encode())


def check_label_import(state: RunState, number: int) -> None:
    """Refuse ``--import-labels`` unless round ``number`` has a selection that waits for labels."""
    if state.stage_done(number, "select") is None or state.stage_done(number, "label") is not None:
        raise NothingToLabel(f"--import-labels: round {number} has no selection waiting for labels, so there is "
                             "nothing to import into; run the round without --import-labels first, and import "
                             "once it says it is waiting for labels")
