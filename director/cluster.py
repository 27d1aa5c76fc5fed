"""Several Director nodes over one PostgreSQL database (issue 19).

Each node (an ``uptane-director serve`` process, on this machine or another, with the same
``DIR``: keys and root) serves any vehicle. What makes that correct:

- **Versions signed once.** A change signs the next versions inside its transaction, with
  the vehicle's ``vehicle_metadata`` row locked (``SELECT ... FOR UPDATE``,
  :meth:`director.publishing.Publisher.publish`): two nodes changing one vehicle take
  turns, and the second continues from the first one's versions. A version is never
  signed twice nor skipped whatever node makes the change.
- **Caches follow within milliseconds.** The transaction that changes a vehicle's
  metadata also sends ``NOTIFY uptane_director, 'm:VIN'`` (:meth:`Cluster.changed`);
  PostgreSQL delivers it when, and only if, the transaction commits. Every node listens
  (:class:`Cluster`, one thread and one connection) and drops that vehicle from its cache
  of signed bytes; a cache fill that raced the change is not kept (the publisher's
  generation count). A node that loses its listening connection drops its whole cache when
  it is back (it may have missed notices). Revoked client certificates travel the same
  way (``cert:FINGERPRINT``).
- **Background jobs run on one node.** Re-signing before expiry, campaign waves and the
  unreachable deadline run only on the node holding a PostgreSQL advisory lock
  (:meth:`Cluster.leader_only`); when that node dies, its connection closes, the lock is
  free and another node takes the jobs on within a second.
- **Group commit with several writers.** Each node has its own writer; a nonce stored by
  another node meanwhile fails that manifest alone on the unique index (409 ``replay``),
  as with two processes before.

On SQLite (one node) none of this is needed: every change invalidates the node's own
cache, and the node is always the leader.
"""

from __future__ import annotations

import contextlib
import select
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from director.common import log

CHANNEL = "uptane_director"
#: pg_try_advisory_lock key of the background jobs' leader ("uptane" in ASCII)
LEADER_KEY = 0x7570_7461_6E65
#: how long the listener waits for a notice before it looks whether it should stop
POLL_SECONDS = 0.5


def _is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


class Cluster:
    """This node's part in a cluster: notices out (in the changing transaction), notices
    in (a listening thread), and the leader lock. ``handlers`` map a notice's kind
    (``m``, ``cert``, ``all``) to what this node does with its argument."""

    def __init__(self, engine: Engine, handlers: dict[str, Callable[[str], None]]) -> None:
        self.engine = engine
        self.handlers = handlers
        self.enabled = _is_postgres(engine)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._leader_conn: Any = None
        self._leader_lock = threading.Lock()
        #: notices received (tests and metrics)
        self.received = 0
        self.connected = threading.Event()

    # --- notices out --------------------------------------------------------------------------

    def changed(self, conn: Connection, vin: str) -> None:
        """In the transaction that changed ``vin``'s metadata: tell the other nodes, at
        commit."""
        if self.enabled:
            conn.execute(sa.text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": f"m:{vin}"})

    def announce(self, note: str) -> None:
        """Tell every node (this one too) ``note`` now, in a transaction of its own."""
        if self.enabled:
            with self.engine.begin() as conn:
                conn.execute(sa.text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": note})

    # --- notices in ---------------------------------------------------------------------------

    def start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._listen, name="director-cluster", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._leader_lock:
            self._close_leader()

    def _dbapi(self) -> Any:
        """A connection of its own, outside the pool, in autocommit."""
        cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
        conn = self.engine.dialect.loaded_dbapi.connect(*cargs, **cparams)
        conn.autocommit = True
        return conn

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                conn = self._dbapi()
            except Exception as e:
                log.warning("cluster: cannot listen for other nodes' changes (%s); retrying", e)
                self._stop.wait(1.0)
                continue
            try:
                with conn.cursor() as cur:
                    cur.execute(f"LISTEN {CHANNEL}")
                self._handle("all:")  # anything missed while not listening
                self.connected.set()
                self._pump(conn)
            except Exception as e:
                log.warning("cluster: listening connection lost (%s); reconnecting", e)
            finally:
                self.connected.clear()
                with contextlib.suppress(Exception):
                    conn.close()

    def _pump(self, conn: Any) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([conn], [], [], POLL_SECONDS)
            if not ready:
                continue
            conn.poll()
            while conn.notifies:
                self._handle(conn.notifies.pop(0).payload)

    def _handle(self, payload: str) -> None:
        kind, _, arg = payload.partition(":")
        handler = self.handlers.get(kind)
        if handler is None:
            return
        self.received += 1
        try:
            handler(arg)
        except Exception as e:  # one bad notice must not stop the listener
            log.warning("cluster: notice %r not handled: %s", payload[:100], e)

    # --- the leader ---------------------------------------------------------------------------

    def is_leader(self) -> bool:
        """Whether this node holds the leader lock (taking it if free). Always True on
        SQLite."""
        if not self.enabled:
            return True
        with self._leader_lock:
            try:
                if self._leader_conn is not None:
                    with self._leader_conn.cursor() as cur:
                        cur.execute("SELECT 1")  # still connected, so still holding it
                    return True
                conn = self._dbapi()
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_KEY,))
                    held = bool(cur.fetchone()[0])
                if held:
                    self._leader_conn = conn
                    log.info("cluster: this node runs the background jobs now")
                else:
                    conn.close()
                return held
            except Exception as e:
                log.warning("cluster: leader lock lost (%s)", e)
                self._close_leader()
                return False

    def _close_leader(self) -> None:
        if self._leader_conn is not None:
            with contextlib.suppress(Exception):
                self._leader_conn.close()
            self._leader_conn = None

    def leader_only(self, job: Callable[[], Any]) -> Callable[[], Any]:
        """``job``, run only while this node is the leader (a background schedule)."""

        def run() -> Any:
            return job() if self.is_leader() else None

        run.__name__ = getattr(job, "__name__", "job")
        return run


def wait_for(predicate: Callable[[], bool], seconds: float) -> bool:
    """Poll ``predicate`` for up to ``seconds`` (tests, start-up)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


__all__ = ["CHANNEL", "Cluster", "wait_for"]
