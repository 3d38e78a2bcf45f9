"""The run-state lease, on a local folder and on S3 (moto): real processes racing, pausing and taking over."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

from raysal.run.lease import Lease, LeaseLost, Locked, current, generations, hold, lease_key
from raysal.run.state import RunState

from _children import REPO, Child

BUCKET = "raysal-test"  # created by the s3_env fixture (tests/conftest.py)
OTHER_HOST = "other-host.example"

# Holds the lease through a "long stage" that ends when the go file appears, then checks and releases.
HOLDER = """
import json, os, sys, time
from raysal.run.lease import Lease, LeaseLost
from raysal.run.state import RunState

root, ttl, go = sys.argv[1], float(sys.argv[2]), sys.argv[3]
lease = Lease(RunState(root), ttl).acquire()
print(json.dumps({"event": "held", "generation": lease.generation, "holder": lease.holder}), flush=True)
deadline = time.monotonic() + 90
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("the test never created the go file")
    time.sleep(0.05)
try:
    lease.check()
except LeaseLost as exc:
    print(json.dumps({"event": "lost", "message": str(exc)}), flush=True)
else:
    print(json.dumps({"event": "still held"}), flush=True)
lease.release()
print(json.dumps({"event": "released"}), flush=True)
"""

# Observes, waits at a barrier (ready file, then the test's go file), then claims.
RACER = """
import json, os, sys, time
from raysal.run.lease import Lease, Locked
from raysal.run.state import RunState

root, sync, name = sys.argv[1], sys.argv[2], sys.argv[3]
lease = Lease(RunState(root), ttl=30)
generation = lease.observe()
print(json.dumps({"event": "observed", "generation": generation}), flush=True)
open(os.path.join(sync, name + ".ready"), "w").close()
deadline = time.monotonic() + 90
while not os.path.exists(os.path.join(sync, "go")):
    if time.monotonic() > deadline:
        sys.exit("the test never created the go file")
    time.sleep(0.005)
try:
    lease.claim(generation)
except Locked as exc:
    print(json.dumps({"event": "locked", "message": str(exc)}), flush=True)
else:
    print(json.dumps({"event": "won", "holder": lease.holder, "generation": lease.generation}), flush=True)
    lease.release()
"""


def plant(store: RunState, generation: int, expires_in: float, released: bool = False) -> dict[str, Any]:
    """Write a lease file as another host's round would have left it."""
    now = time.time()
    record = {"generation": generation, "holder": uuid.uuid4().hex, "pid": 4242, "host": OTHER_HOST,
              "acquired_at": now - 600, "renewed_at": now - 10, "expires_at": now + expires_in, "ttl": 60.0,
              "released": released}
    store.write_json(lease_key(generation), record)
    return record


@pytest.mark.timeout(120)
def test_a_held_lease_is_exclusive_until_released(store: RunState) -> None:
    with hold(store, ttl=30) as first:
        assert first.generation == 1
        with pytest.raises(Locked, match=f"pid {os.getpid()} on {socket.gethostname()}") as locked:
            with hold(RunState(store.root), ttl=30):
                pass
        assert "expires in" in str(locked.value) and "--break-lock" in str(locked.value)
        first.check()
    with hold(RunState(store.root), ttl=30) as second:
        assert second.generation == 2
        assert current(store)["holder"] == second.holder


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("expires_in", "released", "taken"), [(-5.0, False, True), (30.0, True, True),
                                                               (30.0, False, False)],
                         ids=["expired", "released", "live"])
def test_another_hosts_lease_is_taken_over_only_when_expired_or_released(store: RunState, expires_in: float,
                                                                         released: bool, taken: bool) -> None:
    planted = plant(store, 1, expires_in, released)
    if not taken:
        with pytest.raises(Locked, match=f"pid 4242 on {OTHER_HOST}.*automatically"):
            with hold(store, ttl=30):
                pass
        assert generations(store) == [1]
    with hold(store, ttl=30, break_lease=not taken) as lease:
        assert lease.generation == 2
        assert store.read_json(lease_key(2))["pid"] == os.getpid()
    assert store.read_json(lease_key(1)) == planted  # the previous holder's file is kept, untouched


@pytest.mark.timeout(120)
def test_two_rounds_taking_over_at_once_one_wins(store: RunState, spawn: Callable[..., Child],
                                                 tmp_path: Path) -> None:
    plant(store, 1, expires_in=-5)
    sync = tmp_path / "sync"
    sync.mkdir()
    racers = [spawn(RACER, store.root, str(sync), name) for name in ("a", "b")]
    assert [racer.expect()["generation"] for racer in racers] == [2, 2]  # both saw generation 1 expired
    deadline = time.monotonic() + 60
    while not all((sync / f"{name}.ready").exists() for name in ("a", "b")):
        assert time.monotonic() < deadline, "the racers never got ready"
        time.sleep(0.01)
    (sync / "go").touch()
    results = {racer.pid: racer.expect() for racer in racers}
    assert [racer.finish() for racer in racers] == [0, 0]
    assert sorted(r["event"] for r in results.values()) == ["locked", "won"], results
    winner = next(r for r in results.values() if r["event"] == "won")
    loser = next(r for r in results.values() if r["event"] == "locked")
    assert "at the same moment" in loser["message"]
    assert generations(store) == [1, 2]
    assert store.read_json(lease_key(2))["holder"] == winner["holder"]


@pytest.mark.timeout(120)
def test_a_lease_is_renewed_through_a_stage_longer_than_its_ttl(store: RunState, spawn: Callable[..., Child],
                                                               tmp_path: Path) -> None:
    ttl = 1.5
    holder = spawn(HOLDER, store.root, str(ttl), str(tmp_path / "go"))
    assert holder.expect()["event"] == "held"
    first_expiry = store.read_json(lease_key(1))["expires_at"]
    stage_ends = time.monotonic() + 3 * ttl + 0.5
    attempts = 0
    while time.monotonic() < stage_ends:
        with pytest.raises(Locked, match=f"pid {holder.pid} "):
            Lease(RunState(store.root), ttl).acquire()
        attempts += 1
        time.sleep(0.25)
    last_expiry = store.read_json(lease_key(1))["expires_at"]
    (tmp_path / "go").touch()
    assert holder.expect()["event"] == "still held"
    assert holder.expect()["event"] == "released"
    assert holder.finish() == 0
    assert attempts >= 5
    assert last_expiry > first_expiry + ttl
    assert current(store) is None
    with hold(store, ttl=30) as lease:
        assert lease.generation == 2


@pytest.mark.timeout(120)
def test_a_paused_holder_loses_its_lease_and_leaves_the_new_holders_file_alone(
        store: RunState, spawn: Callable[..., Child], tmp_path: Path) -> None:
    ttl = 1.0
    paused = spawn(HOLDER, store.root, str(ttl), str(tmp_path / "go"))
    assert paused.expect()["event"] == "held"
    os.kill(paused.pid, signal.SIGSTOP)
    try:
        time.sleep(2 * ttl)  # past its expiry, even counting a renewal in flight when it stopped
        lease = Lease(store, ttl=30).acquire()
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    try:
        assert lease.generation == 2
        (tmp_path / "go").touch()
        lost = paused.expect()
        assert lost["event"] == "lost", lost
        assert f"taken over by pid {os.getpid()} on {socket.gethostname()} (generation 2)" in lost["message"]
        assert "rerun to resume" in lost["message"]
        assert paused.expect()["event"] == "released"
        assert paused.finish() == 0
        mine = store.read_json(lease_key(2))
        assert (mine["holder"], mine["released"]) == (lease.holder, False)
        assert store.read_json(lease_key(1))["released"] is False  # a lost lease is not marked released either
        lease.check()
    finally:
        lease.release()
    assert store.read_json(lease_key(2))["released"] is True


@pytest.mark.timeout(120)
def test_released_leases_leave_tombstones_and_only_the_two_latest_are_kept(store: RunState) -> None:
    for expected in range(1, 5):
        with hold(store, ttl=30) as lease:
            assert lease.generation == expected
            live = current(store)
            assert (live["holder"], live["expired"]) == (lease.holder, False)
        assert generations(store) == list(range(max(1, expected - 1), expected + 1))
        assert store.read_json(lease_key(expected))["released"] is True
        assert current(store) is None
    lease.release()  # idempotent
    assert store.read_json(lease_key(4))["released"] is True


@pytest.mark.timeout(120)
def test_a_claim_on_a_pruned_generation_below_the_current_one_is_withdrawn(store: RunState) -> None:
    for _ in range(3):
        with hold(store, ttl=30):
            pass
    assert generations(store) == [2, 3]
    late = Lease(store, ttl=30)  # observed generation 1 long ago; it was claimed and pruned since
    with pytest.raises(Locked, match="while this one was claiming generation 1"):
        late.claim(1)
    assert generations(store) == [2, 3]


@pytest.mark.timeout(120)
def test_renewal_errors_are_logged_and_a_lease_unrenewed_past_its_ttl_is_lost(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = RunState(str(tmp_path / "state"))
    ttl = 0.6
    lease = Lease(store, ttl).acquire()
    own = Path(store.base) / lease_key(1)
    own.unlink()
    own.mkdir()  # the file can no longer be replaced: every renewal fails, as with storage down
    try:
        with caplog.at_level("WARNING", logger="raysal.run.lease"):
            time.sleep(2 * ttl)
            with pytest.raises(LeaseLost, match=r"not renewed for [\d.]+ s, longer than its TTL 0.6 s"):
                lease.check()
            lease.release()  # logs instead of raising over the round's own outcome
        assert "could not renew lease generation 1" in caplog.text
        assert "could not mark lease generation 1 released" in caplog.text
    finally:
        lease.release()
        own.rmdir()


def test_ttl_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ttl must be > 0 seconds, got 0"):
        Lease(RunState(str(tmp_path)), ttl=0)


def test_lease_module_imports_neither_the_state_nor_ray_nor_tensorflow() -> None:
    probe = ("import sys, raysal.run.lease; "
             "print(sorted(m for m in ('raysal.run.state', 'ray', 'tensorflow') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.timeout(120)
def test_a_store_that_ignores_conditional_writes_is_refused_before_any_claim(s3, monkeypatch) -> None:
    """Behind a proxy that drops If-None-Match, a second create of the same object succeeds: two
    rounds could both hold the lease, so the claim is refused (exit 3), leaving nothing behind."""
    from raysal import storage
    from raysal.errors import EXIT_MISSING, UnsafeStorage
    from raysal.run import store as store_lib

    from _s3proxy import ignoring_conditional_writes

    prefix = f"probe-{uuid.uuid4().hex[:12]}"
    monkeypatch.setattr(store_lib, "_HONOURED", set())
    try:
        with ignoring_conditional_writes(s3["AWS_ENDPOINT_URL"]) as proxy:
            monkeypatch.setenv("AWS_ENDPOINT_URL", proxy)
            storage._filesystem.cache_clear()
            unsafe = RunState(f"s3://{BUCKET}/{prefix}")
            with pytest.raises(UnsafeStorage, match=f"the object store at {proxy} ignores conditional writes") as no:
                Lease(unsafe, ttl=30).acquire()
            assert no.value.exit_code == EXIT_MISSING
            assert not unsafe.exists("lease")  # no lease file, and the probe object removed
    finally:  # later tests' filesystems point at the S3 server again, not at the closed proxy
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3["AWS_ENDPOINT_URL"])
        storage._filesystem.cache_clear()
    with hold(RunState(f"s3://{BUCKET}/{prefix}"), ttl=30) as lease:  # the store itself honours them
        assert lease.generation == 1
    assert store_lib._HONOURED == {s3["AWS_ENDPOINT_URL"]}
