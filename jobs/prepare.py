"""Turn a folder or manifest of labelled images into a ready run: ``raysal prepare``, as a script.

    python jobs/prepare.py images --out run      # the same as: raysal prepare images --out run

``python jobs/prepare.py --help`` lists the options and the exit codes.
"""

from __future__ import annotations

import sys

from raysal.data.prepare import main

if __name__ == "__main__":
    sys.exit(main())
