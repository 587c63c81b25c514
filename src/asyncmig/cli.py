"""The ``asyncmig`` command line (being built: see issue 4)."""

from __future__ import annotations

import sys


def run(argv: list[str]) -> int:
    print("asyncmig: the command line is not built yet", file=sys.stderr)
    return 2
