"""Benchmarks: raysal against the baselines a user would otherwise pick, measured in one run.

    python jobs/bench.py --quick            # a few minutes on a laptop
    python jobs/bench.py --out bench.json   # the full set
    python jobs/bench.py --only scoring     # one group (repeat --only for more)

The benchmarks live in ``benchmarks/`` at the repository root (one module per group), not in the
installed package; this job runs them from the checkout.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parent.parent


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks (``benchmarks.main``) from this checkout; the exit code."""
    sys.path.insert(0, str(REPO))  # benchmarks/ sits beside jobs/, outside the installed package
    from benchmarks import main as run_benchmarks

    return run_benchmarks(argv, prog="jobs/bench.py")


if __name__ == "__main__":
    sys.exit(main())
