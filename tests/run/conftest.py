"""Fixtures of the state's tests: an empty state root on each kind of storage, and child processes."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from raysal.run.state import RunState

from _children import Child

BUCKET = "raysal-test"  # created by the s3_env fixture (tests/conftest.py)


@pytest.fixture()
def spawn(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    """Start children; any still running at the end (even a stopped one) is killed."""
    children: list[Child] = []

    def start(script: str, *args: str) -> Child:
        child = Child(script, list(args), tmp_path / f"child-{len(children)}.stderr")
        children.append(child)
        return child

    yield start
    for child in children:
        if child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait(timeout=30)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> RunState:
    """An empty state root: a local folder, or a fresh prefix in the moto bucket."""
    if request.param == "local":
        return RunState(str(tmp_path / "state"))
    request.getfixturevalue("s3")
    return RunState(f"s3://{BUCKET}/lease-{uuid.uuid4().hex[:12]}")
