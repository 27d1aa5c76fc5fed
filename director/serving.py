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
from uptane.codec import codecs
from uptane.repository import metadata_filename

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


#: a request waiting for its lookup: VIN, encoding, and its answer to come
_Ask = tuple[str, str, "asyncio.Future[Any]"]
#: the encoding of each timestamp file name (``timestamp.json``: json)
_ENCODINGS = {metadata_filename("timestamp", None, c.name): c.name for c in codecs()}


class PollLookups:
    """The cache misses of timestamp polls, answered without the framework: the event
    loop queues the VIN and awaits its answer; the VINs queued by the requests that
    arrived together go into one lookup, one indexed statement for all of them
    (:meth:`Publisher.poll_timestamps`, at most :data:`BATCH` VINs), run on the event loop
    right after those requests. A statement's fixed cost is most of a lookup's, so misses
    that arrive together share it.

    Measured in bench figure 8 (docs/scale.md): the route (framework, worker thread, a
    statement per miss) cost more than the hit itself; a lookup thread of its own cost
    twice the CPU of a lookup on the loop on PostgreSQL (thread wake-ups, the GIL handed
    back and forth), for the round trip it spares the loop. So the loop waits for the
    database, at most :data:`TIMEOUT_MS` (SQLite's busy timeout, PostgreSQL's
    ``statement_timeout`` on this connection); the route answers what times out. A
    vehicle it cannot answer (unknown, a timestamp to re-sign, a row lacking an encoding,
    the database failing) gets None: the route answers it, signing first when needed."""

    #: VINs in one statement at most (a bound on its parameters)
    BATCH = 256
    #: how long a lookup may keep the event loop waiting for the database (ms)
    TIMEOUT_MS = 100
    #: how much of a SQLite inventory the lookups read memory-mapped (reads only: SQLite
    #: writes through its usual calls)
    MMAP_BYTES = 1 << 30

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self._pending: list[_Ask] = []
        self._lock = threading.Lock()
        self._stopping = False
        #: the lookups' connection, held while it works (no pool checkout per lookup)
        self._conn: Any = None
        self._conn_lock = threading.Lock()

    async def timestamp(self, vin: str, name: str) -> bytes | None:
        """The timestamp file ``name`` of ``vin`` from a batched lookup, or None."""
        encoding = _ENCODINGS.get(name)
        if self._stopping or encoding not in self.publisher.encodings or not VIN_RE.match(vin):
            return None
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._lock:
            self._pending.append((vin, encoding, fut))
            first = len(self._pending) == 1
        if first:  # after the callbacks ready now: the requests that arrived together
            loop.call_soon(self._flush)
        data: bytes | None = await fut
        return data

    def stop(self) -> None:
        self._stopping = True
        with self._conn_lock:
            self._discard()

    def _flush(self) -> None:
        """Look up what is queued and answer it."""
        with self._lock:
            batch, self._pending = self._pending[: self.BATCH], self._pending[self.BATCH :]
            if self._pending:
                asyncio.get_running_loop().call_soon(self._flush)
        _answer(batch, self._lookup(batch))

    def _lookup(self, batch: list[_Ask]) -> dict[tuple[str, str], bytes]:
        """The timestamps of ``batch`` by (VIN, encoding): one statement per encoding
        asked (a fleet's Primaries mostly ask one)."""
        with self._conn_lock:
            try:
                if self._stopping or not batch:
                    return {}
                if self._conn is None:
                    self._conn = self._connect()
                found: dict[tuple[str, str], bytes] = {}
                for enc in sorted({enc for _, enc, _ in batch}):
                    vins = list({vin: None for vin, e, _ in batch if e == enc})
                    got = self.publisher.poll_timestamps(vins, enc, self._conn)
                    found.update(((vin, enc), data) for vin, data in got.items())
                return found
            except Exception as e:  # the route answers them (and says what failed)
                log.warning("poll lookups: %s", str(e)[:300])
                self._discard()
                return {}

    def _connect(self) -> Any:
        """A reader connection that waits at most :data:`TIMEOUT_MS` (and on SQLite reads
        memory-mapped), set on the driver's connection as the engine's connect-time
        settings are (inventory.make_engine): once, not a statement of any poll."""
        conn = self.publisher.reader.connect()
        raw: Any = conn.connection.driver_connection
        cur = raw.cursor()
        try:
            if conn.dialect.name == "sqlite":
                cur.execute(f"PRAGMA busy_timeout = {self.TIMEOUT_MS}")
                # pages read as memory, not one pread each: a lookup at 100,000 vehicles
                # touches pages all over the file (bench figure 8: 0.6-0.7 of the hit
                # path's rate without, 0.75-0.85 with)
                cur.execute(f"PRAGMA mmap_size = {self.MMAP_BYTES}")
            else:
                cur.execute(f"SET statement_timeout = {self.TIMEOUT_MS}")
        finally:
            cur.close()
        return conn

    def _discard(self) -> None:
        """Drop the lookups' connection: never back to the pool, whose other users wait
        longer than :data:`TIMEOUT_MS`."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.invalidate()
            conn.close()
        except Exception as e:
            log.warning("poll lookups: closing a connection: %s", str(e)[:300])


def _answer(batch: list[_Ask], found: dict[tuple[str, str], bytes]) -> None:
    """Resolve each waiting request: at once on the running loop, else by one wake-up of
    its own loop."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    by_loop: dict[Any, list[tuple[asyncio.Future[Any], Any]]] = {}
    for vin, enc, fut in batch:
        by_loop.setdefault(fut.get_loop(), []).append((fut, found.get((vin, enc))))
    for loop, answers in by_loop.items():
        if loop is running:
            _resolve(answers)
            continue
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_resolve, answers)


def _resolve(answers: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for fut, data in answers:
        if not fut.done():
            fut.set_result(data)


Route = Callable[..., Callable[[Callable[..., Any]], Callable[..., Any]]]

__all__ = ["SCOPE_KEY", "PollLookups", "Route", "Serving"]
