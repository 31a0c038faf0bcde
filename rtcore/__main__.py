"""``python -m rtcore``: the ``rtcore`` command (rtcore.cli), for environments without the
console script on PATH."""

from __future__ import annotations

import sys

from rtcore.cli import main

if __name__ == "__main__":
    sys.exit(main())
