"""Simulated learning curves: ``raysal simulate``, as a script for ``ray job submit``.

    python jobs/simulate.py                                   # the demo: 4 strategies, 5 seeds, 8 rounds
    python jobs/simulate.py --budget 90 --out runs/sim-large  # larger batches

``python jobs/simulate.py --help`` lists the options and the exit codes.
"""

from __future__ import annotations

import sys
from typing import Sequence

from raysal.cli import simulate


def main(argv: Sequence[str] | None = None) -> int:
    return simulate.main(argv, prog="jobs/simulate.py")


if __name__ == "__main__":
    sys.exit(main())
