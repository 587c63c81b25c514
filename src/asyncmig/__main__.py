"""Entry point for ``python -m asyncmig`` and the ``asyncmig`` console script."""

from __future__ import annotations

import sys


def main() -> None:
    from .cli.launch import fast_run

    argv = sys.argv[1:]
    code = fast_run(argv)  # --help, migrate, rollback [--all], status: no parser import
    if code is None:
        from .cli.app import run

        code = run(argv)
    sys.exit(code)


if __name__ == "__main__":
    main()
