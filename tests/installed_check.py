"""Run by ``make test-installed`` before the suite: every product package must import from
the installed distribution, not from the checkout (a test folder or the source tree must
never shadow it). Exits 1 naming the first package that does."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

PACKAGES = (
    "uptane",
    "storage",
    "director",
    "primary",
    "secondary",
    "hardware",
    "timeserver",
    "keystore",
)


def main() -> int:
    checkout = Path(__file__).resolve().parent.parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != checkout]
    for name in PACKAGES:
        module = importlib.import_module(name)
        where = Path(module.__file__ or "").resolve()
        if where.parent == checkout / name:
            print(f"{name} imports from the checkout ({where}), not the installed package")
            return 1
    print(
        "every package imports from",
        Path(importlib.import_module("uptane").__file__ or "").parent.parent,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
