"""Run one active-learning round: ``raysal round``, as a script for ``ray job submit``.

    ray job submit --working-dir . -- python jobs/round.py --config demo --state s3://bucket/runs/demo

``python jobs/round.py --help`` lists the options and the exit codes.
"""

from __future__ import annotations

import sys
from typing import Sequence

from raysal.cli import round as round_command

parse_args = round_command.parse_args  # the deploy tests check the CronJob's arguments with it


def main(argv: Sequence[str] | None = None) -> int:
    return round_command.main(argv, prog="jobs/round.py")


if __name__ == "__main__":
    sys.exit(main())
