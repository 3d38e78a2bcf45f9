"""The ``raysal`` command."""

from __future__ import annotations

from raysal.cli.round import main

__all__ = ["main"]
