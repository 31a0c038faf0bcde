"""``python -m rtcore.loadtest``: the same as ``rtcore loadtest``."""

from __future__ import annotations

import sys

from rtcore.loadtest.cli import main

if __name__ == "__main__":
    sys.exit(main())
