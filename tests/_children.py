"""Python subprocesses that print JSON lines, for tests that line processes up: racing for a
lease, pausing past it, writing on after losing it."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


class Child:
    """A Python subprocess whose stdout JSON lines can be awaited with a timeout."""

    def __init__(self, script: str, args: list[str], stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        with open(stderr_path, "w") as stderr:
            self.proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=stderr,
                                         text=True, cwd=REPO, env=dict(os.environ))
        self.pid = self.proc.pid
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)

    def expect(self, timeout: float = 60) -> dict[str, Any]:
        """The child's next JSON line; fails the test (with its stderr) if none comes in time."""
        try:
            return json.loads(self._lines.get(timeout=timeout))
        except queue.Empty:
            pytest.fail(f"child {self.pid} printed nothing for {timeout} s; stderr:\n"
                        f"{self.stderr_path.read_text()[-3000:]}")

    def finish(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout=timeout)
