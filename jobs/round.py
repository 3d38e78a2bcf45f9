"""Run one active-learning round: ``raysal round``, as a script for ``ray job submit``.

    ray job submit --working-dir . -- python jobs/round.py --config demo --state s3://bucket/runs/demo

``python jobs/round.py --help`` lists the options and the exit codes.
"""

from __future__ import annotations

import sys
from typing import Sequence

from raysal.cli import EXIT_CONFIG, EXIT_FAILED, EXIT_LEASE_LOST, EXIT_LOCKED, EXIT_MISSING, EXIT_OK, EXIT_WAITING  # noqa: F401
from raysal.cli import parse_args as _parse_args
from raysal.cli import round_main


def parse_args(argv: Sequence[str] | None):  # noqa: ANN201  (for tests that check deploy files' arguments)
    return _parse_args(argv, prog="jobs/round.py")


def main(argv: Sequence[str] | None = None) -> int:
    return round_main(argv, prog="jobs/round.py")


if __name__ == "__main__":
    sys.exit(main())
