"""The run-state lease: one round at a time, and a holder that vanishes is taken over, never waited on.

A lease is a numbered file under the state root::

    lease/00000007.json   {"generation", "holder", "pid", "host", "acquired_at", "renewed_at",
                           "expires_at", "ttl", "released"}

The highest generation is the current lease. To acquire, a process reads it and, if it is
released or expired, or its holder's process is gone from this very host (or the user breaks
it), creates generation N+1 with "create if absent",
the one atomic primitive that local disks (``O_EXCL``) and S3 (conditional PUT) both have: of
two processes that take over at the same moment exactly one creates the file. The highest
generation is never deleted (a released lease is marked ``released``), so numbers never go back
and a slow process can never win with a number that someone else has reused; older generations
are tombstones, pruned by each new holder. A claim that lands below the highest generation (its
number was pruned while the claimer slept) is noticed and withdrawn.

While held, a daemon thread renews the lease every ``ttl / 3``, and looks for a higher
generation each time: once it sees one it calls ``on_lost`` (a round interrupts its main
thread), so a holder that was paused past its TTL stops within a third of a TTL of resuming,
even in the middle of a long stage. A round also calls ``check()`` before each commit: it fails
once a higher generation exists, or once the lease has gone unrenewed for longer than its TTL
(the process was paused, or storage was unreachable). What a paused holder writes before it
stops is fenced by the state (``raysal.run.state``: outputs by generation).

Clocks: expiry is compared in wall-clock seconds across hosts, so the hosts' clocks must agree
to well within the TTL. The holder's own view of its lease uses the monotonic clock.

The store is duck-typed (``raysal.run.state.RunState`` is one): ``root``, ``local``, ``fs``, ``base``,
``exists(key)``, ``read_json(key)`` and ``_create_exclusive(key, data) -> bool``.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Protocol

import pyarrow.fs as pafs

from raysal import storage
from raysal.errors import LeaseError, LeaseLost, Locked  # noqa: F401  (raised here; importable from here too)

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 60.0  # a minute without renewal before another round may take over
LEASE_DIR = "lease"  # in the state root: one file per generation
_NAME = re.compile(r"^(\d{8})\.json$")
_ANY_NAME = re.compile(r"^(\d{8})\.json(\.tmp-[0-9a-f]+)?$")  # a lease file or a leftover temp file of one
_OBSERVE_TRIES = 5  # re-reads when the highest generation changes under us


class LeaseStore(Protocol):
    """What the lease needs from a state root (``raysal.run.state.RunState`` provides it)."""

    root: str
    local: bool
    fs: pafs.FileSystem
    base: str

    def exists(self, key: str) -> bool: ...

    def read_json(self, key: str) -> Any: ...

    def _create_exclusive(self, key: str, data: bytes) -> bool: ...


def lease_key(generation: int) -> str:
    """The key of a generation's lease file under the state root."""
    return f"{LEASE_DIR}/{generation:08d}.json"


def generations(store: LeaseStore) -> list[int]:
    """The lease generations on storage, ascending."""
    infos = store.fs.get_file_info(pafs.FileSelector(posixpath.join(store.base, LEASE_DIR), allow_not_found=True))
    return sorted(int(m.group(1)) for info in infos if info.type == pafs.FileType.File
                  for m in [_NAME.match(info.base_name)] if m)


def _write_atomic(store: LeaseStore, key: str, data: bytes) -> None:
    """Replace ``key`` whole, past the state's guard: the lease's own writes are not the round's."""
    storage.write_whole(store.fs, posixpath.join(store.base, key), data)


def _encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, indent=2, sort_keys=True).encode()


def _local_time(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _holder_died_here(record: dict[str, Any]) -> bool:
    """Whether the holder ran on this host and its process is gone: no need to wait for the TTL."""
    if record.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(record.get("pid", -1)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, OverflowError):
        return False
    return False


def _describe(record: dict[str, Any]) -> str:
    return f"pid {record.get('pid')} on {record.get('host')}"


def current(store: LeaseStore) -> dict[str, Any] | None:
    """The live lease (highest generation, not released) with ``expired`` added; None if there is none.

    An expired lease is still returned: nobody has taken it over yet.
    """
    for _ in range(_OBSERVE_TRIES):
        found = generations(store)
        if not found:
            return None
        try:
            record = store.read_json(lease_key(found[-1]))
        except ValueError:  # a local claim between create and write
            record = None
        if record is None:
            continue  # being claimed, or taken over and pruned between listing and reading: look again
        if record.get("released"):
            return None
        return {**record, "expired": time.time() > float(record["expires_at"])}
    return None


def _abandoned_write(store: LeaseStore, generation: int, ttl: float) -> bool:
    """Whether an unreadable lease file is older than a TTL: its writer died between create and write."""
    info = store.fs.get_file_info(posixpath.join(store.base, lease_key(generation)))
    return info.mtime is not None and time.time() - info.mtime.timestamp() > ttl

def _locked_message(store: LeaseStore, record: dict[str, Any]) -> str:
    expires_in = float(record["expires_at"]) - time.time()
    return (f"state {store.root} is leased by {_describe(record)} since "
            f"{_local_time(float(record.get('acquired_at', 0)))} (generation {record.get('generation')}): "
            f"another round is running. Its lease expires in {expires_in:.0f} s unless renewed; once it "
            "expires the next round takes it over automatically, or rerun with --break-lock to take it now")


def _prune(store: LeaseStore, generation: int) -> None:
    """Delete files of generations below the previous one: superseded, never a live lease."""
    try:
        infos = store.fs.get_file_info(
            pafs.FileSelector(posixpath.join(store.base, LEASE_DIR), allow_not_found=True))
        for info in infos:
            match = _ANY_NAME.match(info.base_name)
            if info.type == pafs.FileType.File and match and int(match.group(1)) < generation - 1:
                try:
                    store.fs.delete_file(info.path)
                except FileNotFoundError:
                    pass  # another new holder pruned it first
    except OSError as exc:  # a leftover tombstone is harmless
        log.warning("state %s: could not prune old lease files: %s", store.root, exc)


class Lease:
    """One process's claim on a state root, renewed in the background while held.

    ``hold()`` is the usual way in. ``observe`` and ``claim`` are the two halves of ``acquire``,
    apart so that a test can line two processes up between them.
    """

    def __init__(self, store: LeaseStore, ttl: float = DEFAULT_TTL_S) -> None:
        if not ttl > 0:
            raise ValueError(f"lease ttl must be > 0 seconds, got {ttl!r}")
        self.store, self.ttl, self.holder = store, float(ttl), uuid.uuid4().hex
        self.generation: int | None = None
        self._record: dict[str, Any] = {}
        self._last_renewal = 0.0  # time.monotonic() at the start of the last successful write
        self.lost: str | None = None  # why the renewal thread gave up, if it did
        self._stop = threading.Event()
        self._write_lock = threading.Lock()  # no renewal write after release() marks the lease released
        self._thread: threading.Thread | None = None
        self.on_lost: Callable[[str], None] | None = None  # called from the renewal thread once the lease is lost

    # --- acquiring -------------------------------------------------------------------------
    def observe(self, break_lease: bool = False) -> int:
        """The generation to claim next; raises ``Locked`` while another holder's lease is live."""
        for _ in range(_OBSERVE_TRIES):
            found = generations(self.store)
            if not found:
                return 1
            top = found[-1]
            try:
                record = self.store.read_json(lease_key(top))
            except ValueError:  # a local claim between create and write: a lease being taken right now
                if break_lease or _abandoned_write(self.store, top, self.ttl):
                    return top + 1
                raise Locked(f"state {self.store.root}: another round is taking the lease (generation {top}) "
                             "right now") from None
            if record is None:
                continue  # superseded and pruned between listing and reading: look again
            if (break_lease or record.get("released") or time.time() > float(record["expires_at"])
                    or _holder_died_here(record)):
                return top + 1
            raise Locked(_locked_message(self.store, record))
        raise Locked(f"state {self.store.root}: the lease changed hands {_OBSERVE_TRIES} times while this round "
                     "looked at it: another round is starting")

    def claim(self, generation: int) -> None:
        """Create lease file ``generation``, start renewing it, and prune the tombstones below it.

        Raises ``Locked`` if another process created that generation first, or a higher one exists.
        """
        if self.generation is not None:
            raise LeaseError(f"state {self.store.root}: this lease already holds generation {self.generation}")
        now, started = time.time(), time.monotonic()
        record = {"generation": generation, "holder": self.holder, "pid": os.getpid(), "host": socket.gethostname(),
                  "acquired_at": now, "renewed_at": now, "expires_at": now + self.ttl, "ttl": self.ttl,
                  "released": False}
        key = lease_key(generation)
        if not self.store._create_exclusive(key, _encode(record)):
            raise Locked(f"state {self.store.root}: another round took the lease (generation {generation}) at the "
                         "same moment")
        if any(g > generation for g in generations(self.store)):
            # Our number was pruned and reused while we slept; the highest generation is never deleted.
            self.store.fs.delete_file(posixpath.join(self.store.base, key))
            raise Locked(f"state {self.store.root}: another round took the lease while this one was claiming "
                         f"generation {generation}")
        self.generation, self._record, self._last_renewal = generation, record, started
        _prune(self.store, generation)
        self._thread = threading.Thread(target=self._renew_loop, name=f"raysal-lease-{generation}", daemon=True)
        self._thread.start()

    def acquire(self, break_lease: bool = False) -> Lease:
        """Observe and claim in one step; returns this lease."""
        self.claim(self.observe(break_lease))
        return self

    # --- holding ---------------------------------------------------------------------------
    def _higher(self) -> dict[str, Any] | None:
        """The highest generation's record if it is above ours (``{}`` if unreadable), else None."""
        found = generations(self.store)
        if not found or self.generation is None or found[-1] <= self.generation:
            return None
        try:
            return self.store.read_json(lease_key(found[-1])) or {"generation": found[-1]}
        except ValueError:
            return {"generation": found[-1]}

    def _taken_over(self, higher: dict[str, Any]) -> str:
        who = _describe(higher) if "pid" in higher else "another round"
        return f"generation {self.generation}, taken over by {who} (generation {higher.get('generation')})"

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self._renew():
                    return
            except Exception as exc:  # noqa: BLE001  (a transient storage error: try again next tick)
                log.warning("state %s: could not renew lease generation %s: %s", self.store.root, self.generation,
                            exc)

    def _renew(self) -> bool:
        """Push our expiry forward; False once a higher generation shows the lease is lost."""
        higher = self._higher()
        if higher is not None:
            self.lost = self._taken_over(higher)
            log.warning("state %s: lease lost: %s", self.store.root, self.lost)
            if self.on_lost is not None:
                self.on_lost(self.lost)
            return False
        with self._write_lock:
            if self._stop.is_set():
                return False
            now, started = time.time(), time.monotonic()
            record = {**self._record, "renewed_at": now, "expires_at": now + self.ttl}
            _write_atomic(self.store, lease_key(self.generation), _encode(record))
            self._record, self._last_renewal = record, started
        return True

    def check(self) -> None:
        """Raise ``LeaseLost`` unless this process still holds the lease; call before every commit."""
        if self.generation is None or self._stop.is_set():
            raise LeaseError(f"state {self.store.root}: the round does not hold the lease (never acquired, or "
                             "released)")
        reason = self.lost
        if reason is None:
            higher = self._higher()
            if higher is not None:
                reason = self._taken_over(higher)
        if reason is None:
            silent = time.monotonic() - self._last_renewal
            if silent > self.ttl:
                reason = (f"generation {self.generation}, not renewed for {silent:.1f} s, longer than its TTL "
                          f"{self.ttl:g} s (was the process paused?)")
        if reason is not None:
            raise LeaseLost(f"the round lost its lease on {self.store.root}: {reason}. The round stops before "
                            "committing; rerun to resume")

    def release(self) -> None:
        """Stop renewing and mark our own file released, if it is still the current lease. Idempotent."""
        if self.generation is None or self._stop.is_set():
            return
        with self._write_lock:
            self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl)
        try:
            if self._higher() is None:  # never touch another holder's file
                record = {**self._record, "released": True}
                with self._write_lock:
                    _write_atomic(self.store, lease_key(self.generation), _encode(record))
                self._record = record
        except Exception as exc:  # noqa: BLE001  (not raised over the round's own outcome; it expires anyway)
            log.warning("state %s: could not mark lease generation %s released, it expires in %.0f s: %s",
                        self.store.root, self.generation, float(self._record["expires_at"]) - time.time(), exc)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


@contextmanager
def hold(store: LeaseStore, ttl: float = DEFAULT_TTL_S, break_lease: bool = False) -> Iterator[Lease]:
    """Hold the state's lease for the ``with`` block; raises ``Locked`` if another round holds it."""
    lease = Lease(store, ttl).acquire(break_lease)
    try:
        yield lease
    finally:
        lease.release()
