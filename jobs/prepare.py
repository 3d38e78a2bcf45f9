"""Turn a folder or manifest of labelled images into a ready run: ``raysal prepare``, as a script.

    python jobs/prepare.py images --out run      # the same as: raysal prepare images --out run

``python jobs/prepare.py --help`` lists the options and the exit codes.
"""

from __future__ import annotations

import sys
from typing import Sequence

from raysal.cli import prepare


def main(argv: Sequence[str] | None = None) -> int:
    return prepare.main(argv, prog="jobs/prepare.py")


if __name__ == "__main__":
    sys.exit(main())
