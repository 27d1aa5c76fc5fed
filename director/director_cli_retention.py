"""``uptane-director prune DIR [--dry-run]``: delete the raw manifests and the nonces past
the retention window (``retention_days`` in ``director.json``), in batches, as the serving
Director does every ``retention_interval_seconds``. Replay protection is kept: see
docs/retention.md. Prints what it deleted (or, with ``--dry-run``, would delete) as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from director import inventory as inv
from director.common import utcnow
from director.config import Config
from director.retention import Retention


def cmd_prune(args: argparse.Namespace) -> int:
    config = Config.load(Path(args.dir) / "director.json")
    if args.db:
        config.db_url = args.db
    engine = inv.make_engine(config.db_url)
    try:
        done = Retention(engine, config, utcnow).prune(dry_run=args.dry_run)
    finally:
        engine.dispose()
    print(json.dumps(done.to_dict(), indent=2, sort_keys=True))
    return 0


def add_parsers(sub: Any, add: Any) -> None:
    """The ``prune`` command (``add``: the parser builder's helper, which adds DIR)."""
    sp = add(sub, "prune", cmd_prune, "delete manifests and nonces past the retention window")
    sp.add_argument(
        "--dry-run", action="store_true", help="count what would be deleted; change nothing"
    )
    sp.add_argument("--db", help="database URL (default: director.json's)")


__all__ = ["add_parsers", "cmd_prune"]
