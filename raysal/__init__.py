"""raysal: active learning at scale on Ray.

The Python API (see ``raysal.api``): ``load_config``, ``run_round``, ``status``, ``score``,
``select``; ``raysal.data.prepare.prepare`` turns a user's images into a ready run. Importing
``raysal`` is cheap: Ray and TensorFlow load when a function needs them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_config", "run_round", "status", "score", "select"]


def __getattr__(name: str) -> Any:  # PEP 562: the API's modules load on first use
    if name in ("load_config", "run_round", "status", "score", "select"):
        from raysal import api

        return getattr(api, name)
    raise AttributeError(f"module 'raysal' has no attribute {name!r}")
