"""Group commit: units of database work that arrive together share one transaction and one
durable commit, each unit in its own savepoint.

:class:`GroupCommit` owns one writer thread. :meth:`GroupCommit.run` hands it a unit (a
function of the writer's :class:`~sqlalchemy.engine.Connection`) and waits. The writer
takes every unit pending, up to ``max_batch``, in arrival order; opens one transaction
(``BEGIN IMMEDIATE`` on SQLite); runs each unit between ``SAVEPOINT`` and ``RELEASE``, or
``ROLLBACK TO`` when it raises, so a failing unit changes nothing and leaves the others
alone; commits once; and only then answers every caller, with its unit's result or its
unit's exception. If the commit itself fails (the disk, the connection), every caller of
that batch gets the error and none of their changes are stored.

Units run one after another on one connection, so a unit sees every earlier unit of its
batch (the nonces of an earlier manifest of the same vehicle, for example), exactly as if
each had been its own transaction committed in that order. A unit must not commit, and
must do no work that outlives a rollback besides what it returns.

**Checked units** (:meth:`GroupCommit.run_checked`) come in two phases: a *check* that
only reads and either raises or returns the *write*. Every statement a savepoint costs is
a trip through the database driver, which gives up Python's GIL and must win it back
from the threads decoding and verifying the next manifests; so a batch first runs
without savepoints. A check that raises has written nothing, so its unit fails alone
anyway. Only if a write raises (a unique index hit by another process, the disk) is the
whole transaction rolled back and the batch run again with a savepoint per unit, which
gives every unit exactly the outcome it would have had alone. Plain units
(:meth:`GroupCommit.run`) are all write, so a failing one takes that second path too.

**The writer's connection.** On SQLite the writer keeps the connection it took from the
pool from one batch to the next for as long as units keep coming, and gives it back before
it waits for more: a checkout, the pool's reset on return and a new
:class:`~sqlalchemy.engine.Connection` per batch cost the writer about 20 µs of Python a
batch (bench figure 7). After a batch that failed as a whole it gives the connection back
and takes one anew. Elsewhere (PostgreSQL, where the pool pings a connection at checkout)
every batch checks one out, as any other transaction does.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

T = TypeVar("T")

#: the most units one transaction takes: bounds a batch's latency and its lock time
MAX_BATCH = 64


class WriterStopped(RuntimeError):
    """The writer thread ended before it answered (it is restarted by the next unit)."""


class _WriteFailed(Exception):
    """A unit's write raised in a batch run without savepoints: run it again with them."""


class _Unit:
    """One queued unit and its answer; ``done`` is held until the answer is set (a bare
    lock: cheaper than a Future's condition, and this is paid per manifest). ``check``
    reads and returns the write (:meth:`GroupCommit.run_checked`)."""

    __slots__ = ("answered", "check", "done", "ok", "value")

    def __init__(self, check: Callable[[Connection], Callable[[Connection], Any]]) -> None:
        self.check = check
        self.ok = self.answered = False
        self.value: Any = None
        self.done = threading.Lock()
        self.done.acquire()

    def answer(self, ok: bool, value: Any) -> None:
        """Set the answer once (only the writer thread calls this) and wake the caller."""
        if not self.answered:
            self.ok, self.value, self.answered = ok, value, True
            self.done.release()


class GroupCommit:
    """One writer thread and its queue for ``engine``; see the module docstring."""

    def __init__(self, engine: Engine, *, max_batch: int = MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.engine = engine
        self.max_batch = max_batch
        self._pending: deque[_Unit] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._stopping = False
        #: batch size -> how many batches of that size were committed (for the bench)
        self.batch_sizes: Counter[int] = Counter()
        #: batches run a second time, with a savepoint per unit, because a write raised
        #: (the slow path: tests check that client input never takes it)
        self.retried_batches = 0

    def run(self, unit: Callable[[Connection], T]) -> T:
        """Run ``unit`` in the next batch; return its result, or raise its exception, once
        the batch's commit is durable."""
        return self.run_checked(lambda _conn: unit)

    def run_checked(self, check: Callable[[Connection], Callable[[Connection], T]]) -> T:
        """Run ``check`` in the next batch: it may only read, and raises or returns the
        unit's write, whose result is returned (or exception raised) once the batch's
        commit is durable."""
        u = _Unit(check)
        with self._cond:
            self._pending.append(u)
            thread = self._thread
            if thread is None or not thread.is_alive():
                self._stopping = False
                thread = self._thread = threading.Thread(
                    target=self._loop, name="director-group-commit", daemon=True
                )
                thread.start()
            self._cond.notify()
        # the writer answers every unit it takes, and stops only with nothing queued; the
        # check is for a thread torn down under it (interpreter exit)
        while not u.done.acquire(timeout=1.0):
            if not thread.is_alive() and not u.answered:
                raise WriterStopped("the Director's writer thread ended")
        if u.ok:
            return u.value  # type: ignore[no-any-return]
        raise u.value

    @property
    def pending(self) -> int:
        """Units queued and not yet taken into a batch."""
        with self._cond:
            return len(self._pending)

    def close(self, timeout: float = 30.0) -> None:
        """Finish the units already queued, then stop the writer (a later :meth:`run`
        starts a new one)."""
        with self._cond:
            self._stopping = True
            thread = self._thread
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _take(self, wait: bool) -> list[_Unit] | None:
        """The next batch: up to ``max_batch`` units in arrival order; ``[]`` when none is
        queued and not ``wait``; None when stopping with none queued."""
        with self._cond:
            while not self._pending:
                if self._stopping:
                    self._thread = None
                    return None
                if not wait:
                    return []
                self._cond.wait()
            n = min(len(self._pending), self.max_batch)
            return [self._pending.popleft() for _ in range(n)]

    def _loop(self) -> None:
        keep = self.engine.dialect.name == "sqlite"  # see "The writer's connection"
        conn: Connection | None = None
        try:
            while True:
                batch = self._take(wait=conn is None)
                if batch is None:
                    return
                if not batch:  # nothing queued: give the connection back, then wait
                    assert conn is not None
                    idle, conn = conn, None
                    idle.close()
                    continue
                try:
                    if keep and conn is None:
                        conn = self.engine.connect()
                    self._commit(batch, conn)
                except BaseException as e:  # never leave a caller waiting
                    for u in batch:
                        u.answer(False, e)
                    if conn is not None:  # the next batch starts on a connection anew
                        failed, conn = conn, None
                        with contextlib.suppress(Exception):
                            failed.close()
        finally:
            if conn is not None:
                conn.close()

    def _commit(self, batch: list[_Unit], conn: Connection | None) -> None:
        """Run ``batch`` on ``conn`` (kept by the writer), or on a connection checked out
        for this batch when None, and answer its callers."""
        try:
            outcomes = self._run(batch, conn, savepoints=False)
        except _WriteFailed:
            # the transaction was rolled back: every unit again, each in a savepoint
            self.retried_batches += 1
            outcomes = self._run(batch, conn, savepoints=True)
        # the commit returned: everything stored is durable; answer in arrival order
        self.batch_sizes[len(outcomes)] += 1
        for u, ok, value in outcomes:
            u.answer(ok, value)

    def _run(
        self, batch: list[_Unit], conn: Connection | None, *, savepoints: bool
    ) -> list[tuple[_Unit, bool, Any]]:
        """One transaction over ``batch`` on ``conn`` (or a connection checked out for it),
        committed; the outcome of each unit. Without ``savepoints`` a failing write raises
        :class:`_WriteFailed` (and rolls back)."""
        if conn is None:
            with self.engine.begin() as checked_out:
                return self._units(checked_out, batch, savepoints)
        with conn.begin():
            return self._units(conn, batch, savepoints)

    def _units(
        self, conn: Connection, batch: list[_Unit], savepoints: bool
    ) -> list[tuple[_Unit, bool, Any]]:
        """Every unit of ``batch`` in the transaction open on ``conn``."""
        outcomes: list[tuple[_Unit, bool, Any]] = []
        db_errors = (DBAPIError, self.engine.dialect.loaded_dbapi.Error)
        cur = conn.connection.cursor()  # savepoints on the DBAPI cursor: no overhead
        try:
            for u in batch:
                if savepoints:
                    cur.execute("SAVEPOINT unit")
                try:
                    try:
                        write = u.check(conn)
                    except db_errors as e:
                        # the database failed, not the unit's check: on PostgreSQL the
                        # transaction is now aborted, so only a savepoint recovers it
                        if not savepoints:
                            raise _WriteFailed from e
                        raise
                    try:
                        result = write(conn)
                    except Exception as e:
                        if not savepoints:
                            raise _WriteFailed from e
                        raise
                except _WriteFailed:
                    raise
                except Exception as e:
                    if savepoints:
                        cur.execute("ROLLBACK TO SAVEPOINT unit")
                        cur.execute("RELEASE SAVEPOINT unit")
                    outcomes.append((u, False, e))
                else:
                    if savepoints:
                        cur.execute("RELEASE SAVEPOINT unit")
                    outcomes.append((u, True, result))
        finally:
            cur.close()
        return outcomes
