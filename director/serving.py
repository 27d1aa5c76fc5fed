"""What a serving Director node adds to a :class:`~director.director.Director` (issue 19):
its API tokens and their scopes, the audit log, vehicles' client certificates, metrics,
and its part in a cluster of nodes. The HTTP app (:mod:`director.director_server`) makes
one :class:`Serving` and declares every admin route through :meth:`Serving.route`, which
puts the route under ``/api/v1``, checks the caller's token for the route's scope, and
writes the scope into the OpenAPI document (``x-required-scope``), where the token tests
read it.

:class:`PollLookups` answers the cache misses of vehicles' timestamp polls off the event
loop, many in one indexed statement (docs/scale.md, "Polls at fleet scale").
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from director.audit import Audit, node_name
from director.certs import Certificates
from director.cluster import Cluster
from director.common import VIN_RE, log
from director.httpcommon import API
from director.metrics import DirectorMetrics, campaign_progress
from director.tokens import SCOPES, Caller, Refusal, Tokens

if TYPE_CHECKING:
    from director.director import Director
    from director.publishing import Publisher

#: the OpenAPI extension naming the scope an admin route needs
SCOPE_KEY = "x-required-scope"
_bearer = HTTPBearer(auto_error=False)


class Serving:
    """Tokens, audit, certificates, metrics and cluster of one serving node."""

    def __init__(self, d: Director, *, node: str | None = None) -> None:
        self.d = d
        self.node = node or node_name()
        self.settings = d.config.tls_settings(d.dir)
        self.tokens = Tokens(d.engine, d.config, d.clock)
        self.audit = Audit(d.engine, d.clock, self.node)
        self.certs = Certificates(
            d.engine,
            d.dir,
            self.settings,
            clock=d.clock,
            cache_seconds=lambda: d.config.cache_seconds,
        )
        self.metrics = DirectorMetrics()
        self.metrics.watch(lambda: dict(d.writer.batch_sizes), lambda: campaign_progress(d.engine))
        self.cluster = Cluster(
            d.engine, {"m": self._vehicle_changed, "cert": self._cert_changed, "all": self._all}
        )
        d.publisher.on_change = self.cluster.changed
        self.certs.on_change = self.cluster.announce
        self.polls = PollLookups(d.publisher)

    # --- other nodes' changes ---------------------------------------------------------------

    def _vehicle_changed(self, vin: str) -> None:
        self.d.publisher.invalidate(vin)
        self.metrics.invalidations.inc()

    def _cert_changed(self, fingerprint: str) -> None:
        self.certs.forget(fingerprint)

    def _all(self, _: str) -> None:
        self.d.publisher.invalidate(None)
        self.certs.forget(None)

    def start(self) -> None:
        """At start-up: tokens from ``director.json`` copied in, the cluster listener."""
        self.tokens.import_legacy()
        self.cluster.start()

    def stop(self) -> None:
        self.cluster.stop()
        self.polls.stop()

    # --- the admin API ----------------------------------------------------------------------

    def caller(self, scope: str) -> Callable[..., Caller]:
        """The dependency of a route needing ``scope``: 401 without a valid token, 403
        without the scope; the caller's name goes to the audit log."""
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        tokens = self.tokens

        def check(
            request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)
        ) -> Caller:
            if creds is None:
                raise HTTPException(
                    401, "bearer token required", headers={"WWW-Authenticate": "Bearer"}
                )
            found = tokens.check(creds.credentials)
            if isinstance(found, Refusal):
                raise HTTPException(401, found.reason, headers={"WWW-Authenticate": "Bearer"})
            request.state.caller = found.name
            if not found.may(scope):
                have = " ".join(sorted(found.scopes))
                raise HTTPException(
                    403, f"token {found.name!r} ({have}) lacks the {scope!r} scope this needs"
                )
            return found

        return check

    def route(
        self, app: FastAPI, method: str, path: str, scope: str, **kw: Any
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Declare an admin route: ``API + path``, needing ``scope``."""
        return app.api_route(
            API + path,
            methods=[method],
            dependencies=[Depends(self.caller(scope))],
            openapi_extra={SCOPE_KEY: scope},
            tags=kw.pop("tags", ["admin"]),
            **kw,
        )


class PollLookups:
    """The cache misses of timestamp polls, answered without the framework: the event
    loop queues the VIN and awaits its answer; every VIN queued meanwhile goes into one
    lookup, one indexed statement for all of them (:meth:`Publisher.poll_timestamps`, at
    most :data:`BATCH` VINs). A statement's fixed cost is most of a lookup's (bench figure
    8: a statement per miss, or a worker thread per miss, cost more than the hit itself),
    so misses that arrive together share it.

    On SQLite the lookup runs on the event loop, right after the requests that arrived
    together (a read of a local file, tens of microseconds, that never waits for a writer
    in WAL mode; its connection waits at most :data:`BUSY_MS` for a lock, then the route
    answers). On PostgreSQL it runs in a thread of its own, so that a round trip to the
    database never stalls the loop. A vehicle it cannot answer (unknown, a timestamp to
    re-sign, a row lacking an encoding, the database failing) gets None: the route
    answers it, signing first when needed."""

    #: VINs in one statement at most (a bound on its parameters)
    BATCH = 256
    #: how long a lookup on the event loop waits for a SQLite lock (ms)
    BUSY_MS = 100

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self.inline = publisher.engine.dialect.name == "sqlite"
        self._pending: list[tuple[str, asyncio.Future[Any]]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        #: the lookups' connection, held while it works (no pool checkout per lookup)
        self._conn: Any = None
        self._conn_lock = threading.Lock()

    async def timestamp(self, vin: str, name: str) -> bytes | None:
        """The timestamp file ``name`` of ``vin`` from a batched lookup, or None."""
        if self._stopping or not VIN_RE.match(vin):
            return None
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._lock:
            self._pending.append((vin, fut))
            first = len(self._pending) == 1
            if not self.inline and self._thread is None:
                self._thread = threading.Thread(target=self._run, name="poll-lookups", daemon=True)
                self._thread.start()
        if not self.inline:
            self._wake.set()
        elif first:  # after the callbacks ready now: the requests that arrived together
            loop.call_soon(self._flush)
        files = await fut
        return None if files is None else files.get(name)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout=5)
        with self._conn_lock:
            self._discard()

    def _take(self) -> list[tuple[str, asyncio.Future[Any]]]:
        with self._lock:
            batch, self._pending = self._pending[: self.BATCH], self._pending[self.BATCH :]
            return batch

    def _flush(self) -> None:
        """On the event loop (SQLite): look up what is queued and answer it."""
        batch = self._take()
        if self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        _answer(batch, self._lookup(batch))

    def _run(self) -> None:
        """The lookup thread (PostgreSQL)."""
        while not self._stopping:
            self._wake.wait()
            self._wake.clear()
            while batch := self._take():
                _answer(batch, self._lookup(batch))

    def _lookup(self, batch: list[tuple[str, asyncio.Future[Any]]]) -> dict[str, Any]:
        if not batch:
            return {}
        with self._conn_lock:
            try:
                if self._stopping:
                    return {}
                if self._conn is None:
                    self._conn = self.publisher.reader.connect()
                    if self.inline:  # set on the driver's connection, as the engine's own
                        # PRAGMAs are at connect (inventory.make_engine): not a statement
                        # of any poll
                        raw = self._conn.connection.driver_connection
                        raw.execute(f"PRAGMA busy_timeout = {self.BUSY_MS}")
                vins = sorted({vin for vin, _ in batch})
                return self.publisher.poll_timestamps(vins, self._conn)
            except Exception as e:  # the route answers them (and says what failed)
                log.warning("poll lookups: %s", str(e)[:300])
                self._discard()
                return {}

    def _discard(self) -> None:
        """Drop the lookups' connection (a SQLite one never goes back to the pool: its
        short busy timeout is for the event loop only)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if self.inline:
                conn.invalidate()
            conn.close()
        except Exception as e:
            log.warning("poll lookups: closing a connection: %s", str(e)[:300])


def _answer(batch: list[tuple[str, asyncio.Future[Any]]], found: dict[str, Any]) -> None:
    """Resolve each waiting request: at once on the running loop, else by one wake-up of
    its own loop."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    by_loop: dict[Any, list[tuple[asyncio.Future[Any], Any]]] = {}
    for vin, fut in batch:
        by_loop.setdefault(fut.get_loop(), []).append((fut, found.get(vin)))
    for loop, answers in by_loop.items():
        if loop is running:
            _resolve(answers)
            continue
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_resolve, answers)


def _resolve(answers: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for fut, files in answers:
        if not fut.done():
            fut.set_result(files)


Route = Callable[..., Callable[[Callable[..., Any]], Callable[..., Any]]]

__all__ = ["SCOPE_KEY", "PollLookups", "Route", "Serving"]
