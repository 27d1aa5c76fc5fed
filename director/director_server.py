"""The Director's HTTP service (``uptane-director serve``).

Vehicle-facing (no token; everything is signed):

- ``GET /vehicles/{vin}/metadata/{name}``: ``N.root``, ``timestamp``, ``N.snapshot``,
  ``N.targets`` in ``.json`` or ``.der``, from the cache of signed bytes;
- ``POST /vehicles/{vin}/manifest``: a vehicle version manifest, JSON
  (``application/json``) or DER (``application/octet-stream``).

Admin API (bearer token created at ``init``; OpenAPI at ``/openapi.json``): vehicles and
ECUs, assignments, campaigns in waves and saved groups (:mod:`director.fleet_routes`),
reported attacks. One log line per admin change.

In the background: metadata re-signed before it expires; offline changes (``token add``,
``rotate-key``) picked up within a second; unreachable deadlines and campaign waves every
second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from director.director import (
    ADMIN,
    Conflict,
    Director,
    EcuSpec,
    Invalid,
    NotFound,
    Unavailable,
    key_from_json,
)
from director.fleet_routes import campaign_routes, group_routes
from director.httpcommon import (
    AdminLog,
    BodyCap,
    install_error_handlers,
    periodic_lifespan,
    read_body,
)
from director.vehicles import encryption_key_from_json
from uptane.codec import JSON_CODEC, Codec, codecs, for_filename, for_media_type
from uptane.errors import MalformedInput


class EcuIn(BaseModel):
    serial: str = Field(max_length=128, description="the ECU identifier")
    hardware_id: str = Field(max_length=128)
    public_key: dict[str, Any] = Field(description="TUF key: keytype, scheme, keyval.public")
    primary: bool = False
    encryption_key: dict[str, Any] | None = Field(
        None, description="its X25519 encryption key (keytype x25519), as provisioning prints it"
    )


class VehicleIn(BaseModel):
    vin: str = Field(max_length=64)
    ecus: list[EcuIn] = Field(max_length=256)


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
    """ASGI middleware, outermost of the app's own: answers ``GET
    /vehicles/{vin}/metadata/{name}`` from the Director's in-memory cache of signed bytes
    (:meth:`Director.cached_file`) on the event loop, with the same status, headers and
    body as the route, without the framework or a worker thread. Everything else, a
    request with a body, and every cache miss go to the app unchanged (a miss is served by
    the route, which does the indexed lookup and fills the cache)."""

    def __init__(self, app: Any, director: Director) -> None:
        self.app = app
        self.director = director

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
                    media = _MEDIA_BYTES[for_filename(parts[4]).name]
                    headers = [(b"content-length", b"%d" % len(data)), (b"content-type", media)]
                    await send({"type": "http.response.start", "status": 200, "headers": headers})
                    await send({"type": "http.response.body", "body": data})
                    return
        await self.app(scope, receive, send)


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
) -> FastAPI:
    """The FastAPI app of a Director (built from ``directory`` unless given)."""
    if director is None:
        assert directory is not None
        director = Director(Path(directory))
    d = director

    app = FastAPI(
        title="Uptane Director",
        description="Per-vehicle Director metadata, manifest upload, and the OEM admin API.",
        lifespan=periodic_lifespan(
            (refresh_interval, [d.refresh_expiring]),
            # offline changes (director.json, a root or key rotation) live within a second
            (WATCH_INTERVAL, [d.watch]),
            # unreachable deadlines and campaign waves
            (tick_interval, [d.tick]),
        ),
    )
    app.state.director = d
    install_error_handlers(app, {NotFound: 404, Conflict: 409, Invalid: 422, Unavailable: 503})
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(BodyCap, cap=d.config.max_body_bytes)
    app.add_middleware(AdminLog, what="Director")
    app.add_middleware(MetadataFastPath, director=d)  # added last: runs first
    _vehicle_routes(app, d)
    _admin_routes(app, d)

    @app.get("/healthz", tags=["vehicle"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """A body that does not fit the schema: 400 with the reason."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    reason = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errors
    )
    return JSONResponse({"detail": f"malformed request: {reason}"[:2000]}, status_code=400)


def _vehicle_routes(app: FastAPI, d: Director) -> None:
    """What vehicles call: no token, everything is signed."""

    @app.get("/vehicles/{vin}/metadata/{name}", tags=["vehicle"])
    def get_metadata(vin: str, name: str) -> Response:
        """Per-vehicle Director metadata (signed bytes)."""
        data = d.metadata_file(vin, name)
        if data is None:
            raise HTTPException(404, "no such metadata file")
        return Response(data, media_type=for_filename(name).media_type)

    @app.post("/vehicles/{vin}/manifest", tags=["vehicle"])
    async def post_manifest(vin: str, request: Request) -> Any:
        """Upload a vehicle version manifest (JSON, or DER as application/octet-stream)."""
        codec = _manifest_codec(request.headers.get("content-type", JSON_CODEC.media_type))
        data = await read_body(request, d.config.max_body_bytes)
        return await run_in_threadpool(d.process_manifest, vin, data, codec.name)

    @app.get("/vehicles/{vin}/images/{name}", tags=["vehicle"])
    def get_ciphertext(vin: str, name: str) -> Response:
        """An encrypted image (``HASH.enc``) the Director made (issue 17); its length and
        hashes are in the vehicle's signed targets."""
        path = d.ciphertext(name)
        if path is None:
            raise HTTPException(404, "no such encrypted image")
        return FileResponse(path, media_type="application/octet-stream")


def _admin_routes(app: FastAPI, d: Director) -> None:
    """The OEM's API: reads take an admin or viewer token, changes an admin token."""
    security = HTTPBearer(auto_error=False)

    def caller(creds: HTTPAuthorizationCredentials | None = Depends(security)) -> str:
        if creds is None:
            raise HTTPException(
                401, "bearer token required", headers={"WWW-Authenticate": "Bearer"}
            )
        role = d.token_role(creds.credentials)
        if role is None:
            raise HTTPException(401, "unknown bearer token", headers={"WWW-Authenticate": "Bearer"})
        return role

    def admin(role: str = Depends(caller)) -> None:
        if role != ADMIN:
            raise HTTPException(403, f"a {role} token may not change anything")

    guard = [Depends(admin)]  # changes: admin tokens only
    read = [Depends(caller)]  # reads: admin or viewer tokens

    @app.post("/api/vehicles", status_code=201, dependencies=guard, tags=["admin"])
    def register_vehicle(body: VehicleIn) -> Any:
        """Register a vehicle and its ECUs (exactly one primary)."""
        return d.register_vehicle(body.vin, [_spec(e, d) for e in body.ecus])

    @app.get("/api/vehicles", dependencies=read, tags=["admin"])
    def list_vehicles() -> Any:
        return d.list_vehicles()

    @app.get("/api/vehicles/{vin}", dependencies=read, tags=["admin"])
    def vehicle_status(vin: str) -> Any:
        """ECUs, installed images, metadata versions, bundles, assignments, attacks."""
        return d.vehicle_status(vin)

    @app.post("/api/vehicles/{vin}/ecus", status_code=201, dependencies=guard, tags=["admin"])
    def add_ecu(vin: str, body: EcuIn) -> Any:
        return d.add_ecu(vin, _spec(body, d))

    @app.put("/api/vehicles/{vin}/ecus/{serial}/encryption-key", dependencies=guard, tags=["admin"])
    def set_encryption_key(vin: str, serial: str, body: dict[str, Any]) -> Any:
        """Register an ECU's current encryption key (a re-provisioned ECU)."""
        return d.set_encryption_key(vin, serial, encryption_key_from_json(body, d.limits))

    @app.get("/api/encryption/rules", dependencies=read, tags=["admin"])
    def encryption_rules() -> Any:
        return d.encryption_rules()

    @app.put("/api/encryption/rules", dependencies=guard, tags=["admin"])
    def set_encryption_rule(body: EncryptionRuleIn) -> Any:
        """Encrypt (or not) what is assigned from now on for an image or a hardware id."""
        return d.set_encryption_rule(body.scope, body.value, body.encrypt)

    _assignment_routes(app, d, guard, read)
    campaign_routes(app, d, guard, read)
    group_routes(app, d, guard, read)


def _assignment_routes(app: FastAPI, d: Director, guard: list[Any], read: list[Any]) -> None:
    """Assignments, campaigns and reported attacks (``guard``/``read``: the token checks)."""

    @app.post(
        "/api/vehicles/{vin}/assignments", status_code=201, dependencies=guard, tags=["admin"]
    )
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

    @app.get("/api/assignments", dependencies=read, tags=["admin"])
    def list_assignments(vin: str | None = None, state: str | None = None) -> Any:
        return d.list_assignments(vin=vin, state=state)

    @app.delete("/api/assignments/{aid}", dependencies=guard, tags=["admin"])
    def cancel(aid: int) -> Any:
        """Cancel a pending assignment."""
        return d.cancel(aid)

    @app.get("/api/attacks", dependencies=read, tags=["admin"])
    def attacks(vin: str | None = None) -> Any:
        """Attacks that ECUs reported in their version reports."""
        return d.list_attacks(vin=vin)
