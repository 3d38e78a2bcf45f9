"""jobs/round.py's exit codes, each through the CLI as a scheduler runs it, and what a refused
round leaves behind: nothing. The refusals that need no Ray are decided before Ray starts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from _jobs import FAST, REPO, copy_state, job, run_job, snapshot

pytestmark = pytest.mark.timeout(300)


def refused_before_ray(tmp_path, *args: str, timeout: float = 120) -> tuple[int, str]:
    """Run a round that must be refused before Ray starts (Ray would create its folder here)."""
    ray_tmp = tmp_path / "ray-session"
    code, out = run_job(*args, env={"RAY_TMPDIR": str(ray_tmp)}, timeout=timeout)
    assert not ray_tmp.exists(), out[-2000:]
    assert "Traceback" not in out, out[-3000:]
    return code, out


def test_set_without_a_value_exits_2(tmp_path):
    code, out = refused_before_ray(tmp_path, "--state", str(tmp_path / "state"), "--set", "foo")
    assert code == 2 and "--set: 'foo' is not of the form key=value" in out
    assert not (tmp_path / "state").exists()


def test_a_missing_pool_manifest_exits_3(tmp_path):
    code, out = refused_before_ray(tmp_path, "--state", str(tmp_path / "state"), "--set", 'data.pool.kind="manifest"',
                                   "--set", f'data.pool.path="{tmp_path / "absent.parquet"}"')
    assert code == 3 and f"data.pool.path: manifest file {tmp_path / 'absent.parquet'} does not exist" in out
    assert not (tmp_path / "state").exists()


def test_a_malformed_label_file_exits_2_and_applies_nothing(waiting_state, tmp_path):
    state = copy_state(waiting_state, tmp_path / "state", keep_rounds=True)
    bad = tmp_path / "labels.csv"
    bad.write_text("image_id,label\nabc,3\n")
    before = snapshot(state)
    code, out = refused_before_ray(tmp_path, "--state", str(state), *FAST, "--import-labels", str(bad))
    assert code == 2 and f"label file {bad} cannot be read, nothing applied" in out and "'abc'" in out
    assert snapshot(state) == before


def test_labels_for_a_round_with_no_selection_exit_2(waiting_state, tmp_path):
    state = copy_state(waiting_state, tmp_path / "state", keep_rounds=False)
    labels = tmp_path / "labels.csv"
    labels.write_text("image_id,label\n1,3\n")
    before = snapshot(state)
    code, out = refused_before_ray(tmp_path, "--state", str(state), *FAST, "--import-labels", str(labels))
    assert code == 2 and "--import-labels: round 1 has no selection waiting for labels" in out
    assert snapshot(state) == before


def test_a_config_that_changes_the_pool_exits_2_and_changes_nothing(waiting_state, tmp_path):
    state = copy_state(waiting_state, tmp_path / "state", keep_rounds=True)
    before = snapshot(state)
    code, out = refused_before_ray(tmp_path, "--state", str(state), *FAST, "--set", 'data.pool.rows="1000:"')
    assert code == 2 and "config changes what a run cannot change (pool:" in out
    assert snapshot(state) == before


def test_a_live_lease_of_another_host_exits_4_and_changes_nothing(waiting_state, tmp_path):
    state = copy_state(waiting_state, tmp_path / "state", keep_rounds=True)
    now = time.time()
    (state / "lease").mkdir(exist_ok=True)  # the fixture's round left its released lease there
    (state / "lease" / "00000007.json").write_text(json.dumps({
        "generation": 7, "holder": "x", "pid": 4242, "host": "another-host", "acquired_at": now - 5,
        "renewed_at": now, "expires_at": now + 3600, "ttl": 60.0, "released": False}))
    before = snapshot(state)
    code, out = refused_before_ray(tmp_path, "--state", str(state), *FAST)
    assert code == 4 and f"state {state} is leased by pid 4242 on another-host" in out
    assert snapshot(state) == before


def test_a_round_still_waiting_for_labels_exits_5(waiting_state, tmp_path):
    state = copy_state(waiting_state, tmp_path / "state", keep_rounds=True)
    code, out = run_job("--state", str(state), *FAST)
    assert code == 5 and "round 1 is waiting for labels" in out, out[-3000:]


def test_submit_reports_a_waiting_round_as_waiting_and_submits_nothing(waiting_state, tmp_path):
    state = copy_state(waiting_state, tmp_path / "state", keep_rounds=True)
    # No cluster answers at this address: a waiting round must not even ask it.
    out = subprocess.run([sys.executable, str(REPO / "jobs" / "submit.py"), "--address", "http://127.0.0.1:9",
                          "--run", "demo", "--", "--state", str(state)],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 5, out.stdout + out.stderr
    assert "round 1 of demo: waiting for labels, nothing submitted" in out.stdout


def test_a_round_whose_lease_is_taken_over_exits_6_before_its_next_commit(waiting_state, tmp_path):
    from raysal.run import lease
    from raysal.run.state import RunState

    state = copy_state(waiting_state, tmp_path / "state", keep_rounds=False)
    proc = job("--state", str(state), *FAST)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "stage score: started" in line:
            break
    assert any("stage score: started" in line for line in seen), "".join(seen)[-3000:]
    taker = lease.Lease(RunState(str(state))).acquire(break_lease=True)  # as --break-lock from elsewhere
    try:
        out = "".join(seen) + proc.communicate(timeout=300)[0]
        assert proc.returncode == 6, out[-3000:]
        assert re.search(r"the round lost its lease on .*taken over by pid \d+ .*\(generation 2\)", out), out[-3000:]
        assert not (state / "rounds" / "0001" / "stages" / "score.json").exists()  # stopped before committing
        taker.check()  # the loser left the new holder's lease alone
    finally:
        taker.release()


def test_the_round_help_gives_every_exit_code_of_the_table():
    """jobs/round.py's help lists raysal.errors.EXIT_CODES (the docs' exit-code page is built from the
    same table: tests/test_docs.py)."""
    from raysal.errors import EXIT_CODES

    out = subprocess.run([sys.executable, str(REPO / "jobs" / "round.py"), "--help"], capture_output=True,
                         text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0
    in_help = dict(re.findall(r"^  (\d+)  (.+)$", out.stdout, re.M))
    assert sorted(in_help, key=int) == [*map(str, range(7)), "130"] == [str(e.code) for e in EXIT_CODES]
    for e in EXIT_CODES:  # the first line of each meaning, as the table words it
        assert e.meaning.startswith(in_help[str(e.code)].strip()), e.code


def test_a_manifest_that_repeats_an_id_anywhere_exits_2_and_changes_nothing(waiting_state, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    digits = pq.read_table(waiting_state / "data" / "digits" / "manifest.parquet")
    pool = digits.slice(900)
    ids = pool["image_id"].to_numpy().copy()
    ids[-1] = ids[3]  # the last row repeats an early id: no single batch holds both
    manifest = tmp_path / "pool.parquet"
    pq.write_table(pool.set_column(0, "image_id", pa.array(ids)), manifest, row_group_size=100)
    state = tmp_path / "state"
    code, out = run_job("--state", str(state), *FAST, "--set", 'data.pool.kind="manifest"',
                        "--set", f'data.pool.path="{manifest}"', "--set", 'data.pool.rows=""',
                        "--set", f'data.root="{waiting_state / "data"}"', timeout=200)
    assert code == 2, out[-3000:]
    assert f"data.pool: manifest {manifest} repeats image_id values, e.g. [{ids[3]}]" in out
    assert not state.exists()  # refused before anything was written
