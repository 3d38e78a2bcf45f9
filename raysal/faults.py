"""Named points where a fault test makes the process die, so that the test proves a crash exactly
there loses nothing.

With ``RAYSAL_KILL_AT=<point>`` in its environment, a process that reaches ``point(<point>)``
SIGKILLs its own process group: itself and the local Ray it started, with no clean-up, as a
lost machine would. Without the variable a point costs one dictionary lookup. Pure stdlib.
"""

from __future__ import annotations

import logging
import os
import signal

KILL_AT_ENV = "RAYSAL_KILL_AT"


def point(name: str) -> None:
    """Die here if the environment asks for it; otherwise do nothing."""
    if os.environ.get(KILL_AT_ENV) != name:
        return
    logging.getLogger(__name__).warning("fault: killed at %s", name)  # on the console, and in the log
    os.killpg(os.getpgrp(), signal.SIGKILL)
