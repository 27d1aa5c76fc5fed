"""The Director's HTTP service (``uptane-director serve``).

Vehicle-facing (no token; everything is signed; with ``tls.vehicle_auth`` ``mtls`` only
over a connection whose client certificate is bound to the VIN, :mod:`director.certs`):

- ``GET /vehicles/{vin}/metadata/{name}``: ``N.root``, ``timestamp``, ``N.snapshot``,
  ``N.targets`` in ``.json`` or ``.der``, from the cache of signed bytes;
- ``POST /vehicles/{vin}/manifest``: a vehicle version manifest, JSON
  (``application/json``) or DER (``application/octet-stream``).

Admin API under ``/api/v1`` (the old ``/api/...`` paths answer too, deprecated), behind
named bearer tokens with scopes (:mod:`director.tokens`); OpenAPI at ``/openapi.json``,
committed as ``docs/openapi/director.json``: vehicles and ECUs, assignments, campaigns in
waves and saved groups (:mod:`director.fleet_routes`), tokens, the audit log and client
certificates (:mod:`director.admin_routes`), reported attacks. Every change is a row of
the audit log and a log line; every request a log line with its id and a count in the
metrics at ``/metrics``.

In the background: metadata re-signed before it expires and campaign waves and
unreachable deadlines every second (on one node of a cluster, :mod:`director.cluster`);
offline changes (``rotate-key``, ``director.json``) picked up within a second.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from director.admin_routes import bind_certificate, certificate_routes, token_routes
from director.bulk import TooMany
from director.certs import VehicleGate
from director.common import log
from director.director import (
    Conflict,
    Director,
    EcuSpec,
    Invalid,
    NotFound,
    Unavailable,
    key_from_json,
)
from director.fleet_routes import (
    EcuIn,
    VehicleIn,
    bulk_routes,
    campaign_routes,
    group_routes,
    listing_routes,
)
from director.httpcommon import (
    AdminLog,
    BodyCap,
    LegacyPaths,
    install_error_handlers,
    periodic_lifespan,
    read_body,
)
from director.logs import RequestLog
from director.metrics import CONTENT_TYPE, DirectorMetrics
from director.paging import BadPage
from director.serving import PollLookups, Route, Serving
from director.tokens import ASSIGN, KEYS, READ
from director.vehicles import encryption_key_from_json
from uptane.codec import JSON_CODEC, Codec, codecs, for_filename, for_media_type
from uptane.errors import MalformedInput, UptaneError


class AssignmentIn(BaseModel):
    ecu: str = Field(max_length=128, description="ECU serial")
    target: str = Field(max_length=4096, description="target path in the Image repository")
    encrypt: bool | None = Field(
        None, description="send the image encrypted to this ECU (default: the encryption rules)"
    )


class EncryptionRuleIn(BaseModel):
    scope: str = Field(max_length=16, description='"image" (a target path) or "hardware"')
    value: str = Field(max_length=4096, description="the target path or the hardware id")
    encrypt: bool | None = Field(description="encrypt or not; null removes the rule")


class AssignmentsIn(BaseModel):
    assignments: list[AssignmentIn] = Field(max_length=256)
    force: bool = Field(
        False,
        description="allow a downgrade (a lower release counter than the ECU runs); the"
        " ECU's own rollback check still refuses it",
    )


class MetadataFastPath:
    """ASGI middleware: answers ``GET /vehicles/{vin}/metadata/{name}`` from the
    Director's in-memory cache of signed bytes (:meth:`Director.cached_file`) on the event
    loop, with the same status, headers and body as the route, without the framework or a
    worker thread; a cache miss of a timestamp too, from a batched lookup (``polls``,
    :class:`director.serving.PollLookups`). Everything else, a request with a body, and the
    misses the lookup cannot answer go to the app unchanged (the route does the indexed
    lookup, signs when needed and fills the cache). Hits and misses are counted in
    ``metrics``."""

    def __init__(
        self, app: Any, director: Director, metrics: DirectorMetrics, polls: PollLookups
    ) -> None:
        self.app = app
        self.director = director
        self.polls = polls
        self.hit = metrics.cache.labels("hit")
        self.miss = metrics.cache.labels("miss")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            parts = scope["path"].split("/")
            if (
                len(parts) == 5
                and parts[1] == "vehicles"
                and parts[3] == "metadata"
                and parts[2]
                and parts[4]
                and not any(k in _BODY_HEADERS for k, _ in scope["headers"])
            ):
                data = self.director.cached_file(parts[2], parts[4])
                if data is not None:
                    self.hit.inc()
                elif parts[4].startswith("timestamp."):
                    data = await self.polls.timestamp(parts[2], parts[4])
                    if data is not None:
                        self.miss.inc()
                if data is not None:
                    scope.setdefault("state", {})["route"] = METADATA_ROUTE
                    media = _MEDIA_BYTES[for_filename(parts[4]).name]
                    headers = [(b"content-length", b"%d" % len(data)), (b"content-type", media)]
                    await send({"type": "http.response.start", "status": 200, "headers": headers})
                    await send({"type": "http.response.body", "body": data})
                    return
        await self.app(scope, receive, send)


METADATA_ROUTE = "/vehicles/{vin}/metadata/{name}"
_BODY_HEADERS = (b"content-length", b"transfer-encoding")
#: how often the service looks for offline changes (seconds)
WATCH_INTERVAL = 0.5
#: the Content-Type header value of each encoding's files, by codec name
_MEDIA_BYTES = {c.name: c.media_type.encode() for c in codecs()}


def _manifest_codec(content_type: str) -> Codec:
    """The codec of an uploaded manifest by its Content-Type; any type no codec takes has
    always been read as JSON, the API's default."""
    try:
        return for_media_type(content_type)
    except MalformedInput:
        return JSON_CODEC


def _spec(e: EcuIn, director: Director) -> EcuSpec:
    enc = (
        None
        if e.encryption_key is None
        else encryption_key_from_json(e.encryption_key, director.limits)
    )
    return EcuSpec(
        e.serial, e.hardware_id, key_from_json(e.public_key, director.limits), e.primary, enc
    )


def create_app(
    directory: Path | None = None,
    *,
    director: Director | None = None,
    refresh_interval: float = 60.0,
    tick_interval: float = 1.0,
    node: str | None = None,
) -> FastAPI:
    """The FastAPI app of a Director (built from ``directory`` unless given); ``node``
    names this process in the audit log (default: the host name)."""
    if director is None:
        assert directory is not None
        director = Director(Path(directory))
    d = director
    s = Serving(d, node=node)
    lead = s.cluster.leader_only
    app = FastAPI(
        title="Uptane Director",
        version="1",
        description="Per-vehicle Director metadata, manifest upload, and the OEM admin API.",
        lifespan=_lifespan(
            s,
            (refresh_interval, [lead(d.refresh_expiring)]),
            # offline changes (director.json, a root or key rotation) live within a second
            (WATCH_INTERVAL, [d.watch]),
            # unreachable deadlines and campaign waves
            (tick_interval, [lead(d.tick)]),
        ),
    )
    app.state.director = d
    app.state.serving = s
    install_error_handlers(
        app,
        {NotFound: 404, Conflict: 409, Invalid: 422, Unavailable: 503, BadPage: 400, TooMany: 413},
    )
    # the first added runs last: the request log is the outermost
    app.add_middleware(BodyCap, cap=d.config.max_body_bytes)
    app.add_middleware(AdminLog, what="Director", audit=s.audit.api_change)
    app.add_middleware(MetadataFastPath, director=d, metrics=s.metrics, polls=s.polls)
    app.add_middleware(VehicleGate, certs=s.certs, settings=s.settings, refused=_counter(s))
    app.add_middleware(LegacyPaths)
    app.add_middleware(RequestLog, metrics=s.metrics, log_requests=d.config.log_requests)
    _vehicle_routes(app, d, s.metrics)
    _admin_routes(functools.partial(s.route, app), d, s)
    _service_routes(app, s)
    return app


def _counter(s: Serving) -> Callable[[str], None]:
    return lambda reason: s.metrics.vehicle_refused.labels(reason).inc()


def _lifespan(s: Serving, *schedules: Any) -> Callable[[Any], Any]:
    """The background schedules, with the node's cluster part started first."""
    inner = periodic_lifespan(*schedules)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await run_in_threadpool(s.start)
        try:
            async with inner(app):
                yield
        finally:
            await run_in_threadpool(s.stop)

    return lifespan


def _service_routes(app: FastAPI, s: Serving) -> None:
    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "node": s.node}

    @app.get("/metrics", tags=["service"], response_class=Response)
    def metrics() -> Response:
        """Prometheus metrics (docs/deploy.md lists them)."""
        return Response(s.metrics.exposition(), media_type=CONTENT_TYPE)


def _vehicle_routes(app: FastAPI, d: Director, metrics: DirectorMetrics) -> None:
    """What vehicles call: no token, everything is signed."""
    miss = metrics.cache.labels("miss")

    @app.get(METADATA_ROUTE, tags=["vehicle"])
    def get_metadata(vin: str, name: str) -> Response:
        """Per-vehicle Director metadata (signed bytes)."""
        miss.inc()
        data = d.metadata_file(vin, name)
        if data is None:
            raise HTTPException(404, "no such metadata file")
        return Response(data, media_type=for_filename(name).media_type)

    @app.post("/vehicles/{vin}/manifest", tags=["vehicle"])
    async def post_manifest(vin: str, request: Request) -> Any:
        """Upload a vehicle version manifest (JSON, or DER as application/octet-stream)."""
        codec = _manifest_codec(request.headers.get("content-type", JSON_CODEC.media_type))
        data = await read_body(request, d.config.max_body_bytes)
        t0 = time.perf_counter()
        try:
            return await run_in_threadpool(d.process_manifest, vin, data, codec.name)
        except (UptaneError, Invalid, NotFound, Conflict) as e:
            _refused(metrics, request, vin, e)
            raise
        finally:
            metrics.manifest_seconds.observe(time.perf_counter() - t0)

    @app.get("/vehicles/{vin}/images/{name}", tags=["vehicle"])
    def get_ciphertext(vin: str, name: str) -> Response:
        """An encrypted image (``HASH.enc``) the Director made (issue 17); its length and
        hashes are in the vehicle's signed targets."""
        path = d.ciphertext(name)
        if path is None:
            raise HTTPException(404, "no such encrypted image")
        return FileResponse(path, media_type="application/octet-stream")


def _refused(metrics: DirectorMetrics, request: Request, vin: str, e: Exception) -> None:
    """Count and log a refused manifest: by the core's attack name, else what refused it."""
    attack = (
        e.attack
        if isinstance(e, UptaneError)
        else {NotFound: "not-found", Conflict: "conflict"}.get(type(e), "invalid")
    )
    metrics.refused.labels(attack).inc()
    fields = {
        "event": "manifest-refused",
        "vin": vin[:64],
        "attack": attack,
        "request_id": getattr(request.state, "request_id", None),
    }
    log.warning("manifest refused: %s", str(e)[:300], extra={"fields": fields})


def _admin_routes(route: Route, d: Director, s: Serving) -> None:
    """The OEM's API: each route needs its scope (read, assign, campaign, keys, admin)."""

    @route("POST", "/vehicles", KEYS, status_code=201)
    def register_vehicle(body: VehicleIn) -> Any:
        """Register a vehicle and its ECUs (exactly one primary), and bind its client
        certificate if one is given."""
        specs = [_spec(e, d) for e in body.ecus]
        if body.client_certificate is None:
            return d.register_vehicle(body.vin, specs)
        cert = body.client_certificate
        s.certs.precheck(body.vin, cert.csr, cert.certificate)
        status = d.register_vehicle(body.vin, specs)
        status["client_certificate"] = bind_certificate(s, body.vin, body.client_certificate)
        return status

    @route("GET", "/vehicles/{vin}", READ)
    def vehicle_status(vin: str) -> Any:
        """ECUs, installed images, metadata versions, bundles, assignments, attacks."""
        return d.vehicle_status(vin)

    @route("POST", "/vehicles/{vin}/ecus", KEYS, status_code=201)
    def add_ecu(vin: str, body: EcuIn) -> Any:
        return d.add_ecu(vin, _spec(body, d))

    @route("PUT", "/vehicles/{vin}/ecus/{serial}/encryption-key", KEYS)
    def set_encryption_key(vin: str, serial: str, body: dict[str, Any]) -> Any:
        """Register an ECU's current encryption key (a re-provisioned ECU)."""
        return d.set_encryption_key(vin, serial, encryption_key_from_json(body, d.limits))

    @route("GET", "/encryption/rules", READ)
    def encryption_rules() -> Any:
        return d.encryption_rules()

    @route("PUT", "/encryption/rules", KEYS)
    def set_encryption_rule(body: EncryptionRuleIn) -> Any:
        """Encrypt (or not) what is assigned from now on for an image or a hardware id."""
        return d.set_encryption_rule(body.scope, body.value, body.encrypt)

    bulk_routes(route, d, s)
    listing_routes(route, d)
    _assignment_routes(route, d)
    campaign_routes(route, d)
    group_routes(route, d)
    token_routes(route, s)
    certificate_routes(route, s)


def _assignment_routes(route: Route, d: Director) -> None:
    """Assignments (their listing and the attacks': :func:`listing_routes`)."""

    @route("POST", "/vehicles/{vin}/assignments", ASSIGN, status_code=201)
    def assign(vin: str, body: AssignmentsIn) -> Any:
        """Assign images to ECUs of one vehicle; they go out as one bundle, or in order when
        one image requires another installed first. Dependencies, conflicts and downgrades
        are refused with their reason (409)."""
        return d.assign(
            vin,
            [(a.ecu, a.target) for a in body.assignments],
            force=body.force,
            encrypt={a.ecu: a.encrypt for a in body.assignments},
        )

    @route("DELETE", "/assignments/{aid}", ASSIGN)
    def cancel(aid: int) -> Any:
        """Cancel a pending assignment."""
        return d.cancel(aid)
