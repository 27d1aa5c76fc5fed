"""Retention (issue 20): raw vehicle manifests and report nonces older than the retention
window (``retention_days`` in ``director.json``; 0 or None: kept forever) are pruned, in
batches of ``retention_batch_rows``, each its own transaction, by the serving Director every
``retention_interval_seconds`` (:meth:`Retention.tick`) and by ``uptane-director prune``.

Replay protection stays whole (docs/retention.md): a nonce is pruned only once the report
that carried it can never be accepted again. The Director refuses every nonce report older
than the replay horizon, ``now - window + 2 * report_skew_seconds``
(:func:`replay_horizon`, checked by :func:`uptane.manifest.check_report_freshness`, the
§5.3.2.1 rule). A report is accepted only while its time is at most ``report_skew_seconds``
ahead of the Director's clock, so a report whose nonce was pruned (stored before
``now - window``) has a time before ``now - window + skew``: older than the horizon, by a
margin of one more skew for the clocks of a Director's nodes. Counters (ECUs that count
instead of sending nonces) live on the ECU row and are never pruned.

A manifest that an attack row names is kept: it is the evidence of that attack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from director import inventory as inv
from director.common import epoch, iso
from director.config import Config


def window(config: Config) -> timedelta | None:
    """How long manifests and nonces are kept; None: forever."""
    days = config.retention_days
    return timedelta(days=days) if days else None


def replay_horizon(config: Config, now: datetime) -> datetime | None:
    """The oldest time a nonce report may carry (None: no limit, nothing is pruned): older
    ones may have had their nonce pruned, so the Director could not tell them from a
    replay."""
    kept = window(config)
    if kept is None:
        return None
    return now - kept + 2 * timedelta(seconds=config.report_skew_seconds)


@dataclass
class Pruned:
    """What one prune did (or, on a dry run, would do)."""

    cutoff: str | None
    dry_run: bool
    manifests: int = 0
    nonces: int = 0
    #: manifests past the cutoff kept because an attack row names them
    kept_for_attacks: int = 0
    #: transactions that deleted rows
    batches: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Retention:
    """Prunes manifests and nonces past the retention window, in bounded batches."""

    def __init__(self, engine: Engine, config: Config, clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self.config = config
        self.clock = clock
        self._last_run: datetime | None = None

    def cutoff(self, now: datetime) -> int | None:
        """Rows stored before this time (epoch seconds) are pruned; None: none is."""
        kept = window(self.config)
        return None if kept is None else epoch(now - kept)

    def prune(self, *, dry_run: bool = False) -> Pruned:
        """Delete every manifest (not named by an attack) and nonce stored before the
        cutoff, ``retention_batch_rows`` rows a transaction; ``dry_run``: count them and
        change nothing."""
        cutoff = self.cutoff(self.clock())
        out = Pruned(iso(cutoff), dry_run)
        if cutoff is None:
            return out
        n, m, a = inv.nonces, inv.manifests, inv.attacks
        old_nonces = sa.select(n.c.id).where(n.c.seen_at < cutoff)
        evidence = sa.exists().where(a.c.manifest_id == m.c.id)
        old_manifests = sa.select(m.c.id).where(m.c.received_at < cutoff, ~evidence)
        if dry_run:
            with self.engine.connect() as conn:
                out.nonces = _count(conn, old_nonces)
                out.manifests = _count(conn, old_manifests)
        else:
            out.nonces, nb = self._delete(n, old_nonces)
            out.manifests, mb = self._delete(m, old_manifests)
            out.batches = nb + mb
        with self.engine.connect() as conn:
            kept = sa.select(m.c.id).where(m.c.received_at < cutoff, evidence)
            out.kept_for_attacks = _count(conn, kept)
        return out

    def _delete(self, table: sa.Table, old: sa.Select[Any]) -> tuple[int, int]:
        """Delete the rows ``old`` selects (by id), a batch a transaction; returns how many
        rows and how many batches."""
        size = self.config.retention_batch_rows
        rows = batches = 0
        while True:
            with self.engine.begin() as conn:
                ids = list(conn.execute(old.limit(size)).scalars())
                if ids:
                    conn.execute(table.delete().where(table.c.id.in_(ids)))
            if not ids:
                return rows, batches
            rows, batches = rows + len(ids), batches + 1
            if len(ids) < size:
                return rows, batches

    def tick(self) -> list[str]:
        """What the serving Director runs with its tick: a prune once every
        ``retention_interval_seconds``. Returns one line when it deleted something."""
        now = self.clock()
        last = self._last_run
        due = last is None or (now - last).total_seconds() >= self.config.retention_interval_seconds
        if not due or window(self.config) is None:
            return []
        self._last_run = now
        done = self.prune()
        if not done.manifests and not done.nonces:
            return []
        return [
            f"retention: pruned {done.manifests} manifest(s) and {done.nonces} nonce(s)"
            f" stored before {done.cutoff}, in {done.batches} batch(es)"
        ]


def _count(conn: Any, q: sa.Select[Any]) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(q.subquery())).scalar_one())


__all__ = ["Pruned", "Retention", "replay_horizon", "window"]
