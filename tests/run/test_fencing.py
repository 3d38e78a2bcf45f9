"""Fencing: a round that lost the run while paused never changes what another round committed.

A stage writes into its lease generation's folder and commits by creating its marker once
(``raysal.run.state``). The tests pause a real holder (SIGSTOP) past its TTL, let another take
over and commit, then let the first write on, as Ray workers would, unchecked: on a local path
and on the local S3 server (moto), then end to end through the CLI.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysal import storage
from raysal.errors import EXIT_LEASE_LOST, LeaseLost
from raysal.run.lease import Lease
from raysal.run.state import RunState, generation_dir

from _children import Child
from _jobs import FAST, Running, copy_state, round_file, run_job

# Holds the lease and writes score files as a scoring pass would: part 0, then (once the go file
# appears) part 1, both straight to storage with no lease check, as Ray workers write; then commits.
WRITER = """
import json, os, sys, time
import pyarrow as pa, pyarrow.parquet as pq
from raysal import storage
from raysal.errors import LeaseLost
from raysal.run.lease import Lease
from raysal.run.state import RunState

root, ttl, go = sys.argv[1], float(sys.argv[2]), sys.argv[3]
state = RunState(root)
lease = Lease(state, ttl).acquire()
state.guard, state.generation = lease.check, lease.generation

key = state.files(1).scores  # resolved as the stage starts, as the URI a scoring pass hands its workers

def write(part):
    fs, folder = storage.resolve(state.uri(key))
    fs.create_dir(folder, recursive=True)
    ids = list(range(100 * part, 100 * part + 50))
    pq.write_table(pa.table({"image_id": ids, "writer": ["A"] * len(ids)}), f"{folder}/part-a{part}.parquet",
                   filesystem=fs)
    return key

print(json.dumps({"event": "wrote", "generation": lease.generation, "folder": write(0)}), flush=True)
deadline = time.monotonic() + 90
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("the test never created the go file")
    time.sleep(0.05)
print(json.dumps({"event": "wrote", "folder": write(1)}), flush=True)
try:
    state.commit_stage(1, "score", {"writer": "A"})
except LeaseLost as exc:
    print(json.dumps({"event": "lost", "message": str(exc)}), flush=True)
else:
    print(json.dumps({"event": "committed"}), flush=True)
"""


def write_scores(state: RunState, ids: range, writer: str) -> None:
    fs, folder = storage.resolve(state.uri(state.files(1).scores))
    fs.create_dir(folder, recursive=True)
    pq.write_table(pa.table({"image_id": list(ids), "writer": [writer] * len(ids)}), f"{folder}/part-{writer}.parquet",
                   filesystem=fs)


def hold_as_writer(state: RunState, ttl: float = 30) -> Lease:
    lease = Lease(state, ttl).acquire()
    state.guard, state.generation = lease.check, lease.generation
    return lease


@pytest.mark.timeout(120)
def test_a_paused_writer_that_writes_on_never_reaches_the_committed_stage(
        store: RunState, spawn: Callable[..., Child], tmp_path: Path) -> None:
    ttl = 1.0
    paused = spawn(WRITER, store.root, str(ttl), str(tmp_path / "go"))
    first = paused.expect()
    assert (first["event"], first["generation"]) == ("wrote", 1)
    os.kill(paused.pid, signal.SIGSTOP)  # after its first score file is on storage
    try:
        time.sleep(2 * ttl)  # past its expiry, even counting a renewal in flight when it stopped
        taker = RunState(store.root)
        lease = hold_as_writer(taker)
        assert taker.sweep(1) == [f"rounds/0001/{generation_dir(1)}"]  # what A left, removed
        write_scores(taker, range(1000, 1040), "B")
        taker.commit_stage(1, "score", {"writer": "B"})
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    try:
        (tmp_path / "go").touch()  # A resumes and writes on, after B committed
        again = paused.expect()
        assert (again["event"], again["folder"]) == ("wrote", f"rounds/0001/{generation_dir(1)}/scores")
        lost = paused.expect()
        assert lost["event"] == "lost" and "taken over" in lost["message"], lost
        assert paused.finish() == 0
        assert store.exists(f"rounds/0001/{generation_dir(1)}/scores/part-a1.parquet")  # the fault landed

        reader = RunState(store.root)
        assert reader.stage_done(1, "score") == {"writer": "B", "stage": "score", "generation": 2}
        committed = reader.read_table(reader.files(1).scores)
        assert set(committed["writer"].to_pylist()) == {"B"}
        assert sorted(committed["image_id"].to_pylist()) == list(range(1000, 1040))
        assert taker.sweep(1) == [f"rounds/0001/{generation_dir(1)}"]  # the next holder removes it
        assert not store.exists(f"rounds/0001/{generation_dir(1)}")
    finally:
        lease.release()


@pytest.mark.timeout(120)
def test_a_stage_is_committed_once_and_a_late_commit_is_refused(store: RunState) -> None:
    """A writer that passed its lease check, then paused, and commits after another generation
    did: the marker is created once, so its commit is refused, not written over the other's."""
    late, taker = RunState(store.root), RunState(store.root)
    late.generation, taker.generation = 1, 2  # as if each held the lease in turn
    write_scores(late, range(10), "A")
    write_scores(taker, range(100, 110), "B")
    taker.commit_stage(1, "score", {"writer": "B"})
    with pytest.raises(LeaseLost, match="stage score was committed by generation 2 while this round "
                                        r"\(generation 1\) was writing it"):
        late.commit_stage(1, "score", {"writer": "A"})
    reader = RunState(store.root)
    assert reader.stage_done(1, "score")["writer"] == "B"
    assert set(reader.read_table(reader.files(1).scores)["writer"].to_pylist()) == {"B"}
    # Later stages follow each committed marker to its own generation's folder.
    taker.generation = 3
    taker.write_table(taker.files(1).selection, pa.table({"image_id": [100]}))
    taker.commit_stage(1, "select", {})
    assert reader.files(1).scores == f"rounds/0001/{generation_dir(2)}/scores"
    assert reader.files(1).selection == f"rounds/0001/{generation_dir(3)}/selection.parquet"


def test_a_round_from_before_fencing_is_read_where_it_was_written(tmp_path: Path) -> None:
    """Markers without a generation: the round's files are in its own folder, and a resumed round
    writes its next stage into its generation's folder beside them."""
    state = RunState(str(tmp_path / "state"))
    state.write_table("rounds/0001/scores/part-0.parquet", pa.table({"image_id": np.arange(5)}))
    state.write_json("rounds/0001/stages/score.json", {"stage": "score"})
    assert state.files(1).scores == "rounds/0001/scores"
    assert state.read_table(state.files(1).scores).num_rows == 5
    state.generation = 4
    assert state.files(1).selection == f"rounds/0001/{generation_dir(4)}/selection.parquet"
    assert state.files(1).scores == "rounds/0001/scores" and state.sweep(1) == []


@pytest.mark.timeout(900)
def test_a_round_paused_as_it_scores_stops_and_the_round_that_took_over_selects_the_budget(
        waiting_state: Path, tmp_path: Path) -> None:
    """Round A is stopped (SIGSTOP) once scoring has begun, past its 8 s lease; round B takes the
    run over; A is resumed as B starts scoring. A stops with exit 6; B selects exactly the budget,
    all distinct; the next round runs."""
    state = copy_state(waiting_state, tmp_path / "state", keep_rounds=False)
    args = ["--state", str(state), *FAST, "--lease-ttl", "8"]
    each_second = {"RAYSAL_PROGRESS_S": "1"}
    first = Running(*args, env=each_second)
    second = None
    try:
        first.wait_for("scoring: ")  # a progress line: images are being scored
        os.kill(first.pid, signal.SIGSTOP)
        try:
            time.sleep(8 + 2)
            second = Running(*args, env=each_second)
            second.wait_for("stage score: started")
        finally:
            os.kill(first.pid, signal.SIGCONT)
        resumed = time.monotonic()
        assert first.finish(timeout=120) == EXIT_LEASE_LOST, first.out[-3000:]
        print(f"the paused round stopped {time.monotonic() - resumed:.1f} s after it was resumed")  # for the notes
        assert "lost its lease" in first.out and "taken over by" in first.out
        assert second.finish() == 0, second.out[-3000:]
    finally:
        for running in (first, second):
            if running is not None:
                running.kill()
    assert "round 1: selected 40 of 897 pool images" in second.out, second.out[-3000:]
    selected = pq.read_table(round_file(state, 1, "selection.parquet"))["image_id"].to_pylist()
    labelled = pq.read_table(round_file(state, 1, "labels.parquet"))["image_id"].to_pylist()
    assert len(selected) == len(set(selected)) == 40 and sorted(labelled) == sorted(selected)
    committed = {f"g{RunState(str(state)).stage_done(1, s)['generation']:08d}"
                 for s in ("score", "select", "label", "train", "evaluate")}
    assert {p.name for p in (state / "rounds" / "0001").glob("g*")} == committed  # what A wrote is gone

    code, out = run_job(*args)
    assert code == 0, out[-3000:]
    assert "round 2: selected 40 of 857 pool images" in out, out[-3000:]
    again = pq.read_table(round_file(state, 2, "selection.parquet"))["image_id"].to_pylist()
    assert len(set(again)) == 40 and not set(again) & set(selected)
