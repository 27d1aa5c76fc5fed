"""Shared set-up for the security suite (issue 7): the repository root (for ``fuzz/``) and
the other suites' helper folders go on ``sys.path`` so their helpers are reused, not copied
(``tests/secondary/test_agent_support.py``, ``tests/primary/cycle_support.py``,
``tests/uptane/trust_support.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for folder in (ROOT, *(ROOT / "tests" / d for d in ("secondary", "uptane", "primary", "hardware"))):
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
