"""The Image repository's HTTP service (``uptane-image-repo serve``).

- ``GET /metadata/NAME`` and ``GET /targets/PATH``: public download (§5.3.1), from an
  in-memory cache of the signed bytes; the URL layout is the static repository's, so TUF
  clients (python-tuf ngclient) use it unchanged. A file is read into the cache when first
  asked for, and an image URL is resolved through the one role that may list its path
  (its hash bin), so that a change costs the service what it touched, not the size of the
  repository (issue 20).
  Publicly readable unless ``repo.json`` ``tls.public_read`` is false (then a client
  certificate is needed: :mod:`director.image_serving`).
- ``PUT /api/v1/images/PATH`` and ``PUT /api/v1/metadata/ROLE.EXT``: authorised write,
  behind a bearer token that names one role; every upload is checked against the
  uploader's delegation (:meth:`director.image_repo.ImageRepository.upload_metadata`). The
  paths without ``/v1`` answer too, deprecated. OpenAPI: ``docs/openapi/image-repo.json``.
- A background task re-signs snapshot and timestamp before they expire. Changes made by
  the offline commands (``sign``, ``delegate``, ``rotate-root``) are picked up within a
  second: ``metadata/current.json`` is looked at (one ``stat``) on every upload, status
  and metadata request and twice a second in the background (:class:`director.watch.FileWatch`);
  upload tokens (``tokens.json``) are read on every request.
- One log line per request (its id), per admin change (upload) and per offline change
  picked up; metrics at ``/metrics``; with ``repo.json`` ``object_store``, the static
  layout kept in an S3-compatible bucket within a second of every change (issue 19).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool

from director import repostate
from director.httpcommon import (
    API,
    AdminLog,
    LegacyPaths,
    bearer,
    install_error_handlers,
    log,
    periodic_lifespan,
    read_body,
)
from director.image_delegations import delegated_names, find_delegation
from director.image_delegations import describe as describe_delegations
from director.image_repo import ADMIN, Conflict, Forbidden, ImageRepository
from director.image_serving import DownloadGate, ImageServing, mirror_now
from director.logs import RequestLog
from director.metrics import CONTENT_TYPE
from director.watch import FileWatch
from uptane.codec import Codec, for_filename
from uptane.errors import MalformedInput
from uptane.limits import Limits
from uptane.paths import check_target_path
from uptane.repository import PublishRefused, RepositoryBuilder


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


#: how often the service looks for offline changes in the background (seconds)
WATCH_INTERVAL = 0.5
#: how often the object store (if any) is brought up to the repository (seconds)
MIRROR_INTERVAL = 1.0


class ImageService:
    """The repository plus the caches the GET routes read."""

    def __init__(
        self,
        repo_dir: Path,
        *,
        clock: Callable[[], datetime] = _utcnow,
        limits: Limits | None = None,
        image_cache_bytes: int = 256 * 1024 * 1024,
        max_image_upload: int = 256 * 1024 * 1024,
    ) -> None:
        self.clock = clock
        self.repo = ImageRepository(repo_dir, clock(), limits=limits)
        self.lock = threading.Lock()
        self.image_cache_bytes = image_cache_bytes
        self.max_image_upload = max_image_upload
        self._images: dict[str, bytes] = {}
        self._image_cached = 0
        #: versioned metadata files served so far (never change once published)
        self._served: dict[str, bytes] = {}
        #: every file served, by name (``metadata["timestamp.json"]``), read on first use
        self.metadata = _MetadataView(self)
        self.rebuild_cache()
        self._watch = FileWatch(self.repo.paths.metadata / repostate.CURRENT)

    def _versions(self) -> tuple[object, ...]:
        b = self.repo.builder
        roles = tuple((r, b.version_of(r)) for r in ["targets", *b.delegated])
        return (len(b.root_history), b.timestamp.version, b.snapshot.version, roles)

    def rebuild_cache(self) -> None:
        """Follow the repository after a change: versioned files served before stay cached
        (a client may still be reading the previous version) unless two or more versions
        old; the rest is read when first asked for (:meth:`metadata_file`)."""
        b = self.repo.builder
        self._cached_versions = self._versions()
        kept: dict[str, bytes] = {}
        for name, data in self._served.items():
            role, version = _versioned(name)
            if role == "root" or (b.has_role(role) and version + 1 >= b.version_of(role)):
                kept[name] = data
        self._served = kept

    def metadata_file(self, name: str) -> bytes | None:
        """The bytes of metadata file ``name`` as the static repository lays it out: every
        root version, the current (and recently served) versions of the other roles, the
        unversioned current files; None for anything else."""
        data = self._served.get(name)
        if data is not None:
            return data
        try:
            enc = for_filename(name).name
        except MalformedInput:
            return None
        b = self.repo.builder
        if enc not in b.encodings:
            return None
        role, version = _versioned(name)
        if role == "root" and version:
            ok = 1 <= version <= len(b.root_history)
            data = b.root_history[version - 1][enc] if ok else None
        elif b.has_role(role) and (not version or version == b.version_of(role)):
            data = b.files[enc].get(role) if role != "timestamp" or not version else None
        if data is not None and version:
            self._served[name] = data  # versioned files never change
        return data

    def image(self, url_path: str) -> bytes | Path | None:
        src = self._image_source(url_path)
        if src is None:
            return None
        digest = src.name
        data = self._images.get(digest)
        if data is not None:
            return data
        size = src.stat().st_size
        if self._image_cached + size > self.image_cache_bytes:
            return src
        data = src.read_bytes()
        self._images[digest] = data
        self._image_cached += size
        return data

    def _image_source(self, url_path: str) -> Path | None:
        """``DIR/HASH.NAME``: the stored image of target ``DIR/NAME`` if a role that may list
        that path lists it with that hash (resolved only through signed metadata)."""
        dirname, sep, last = url_path.rpartition("/")
        digest, dot, base = last.partition(".")
        if not dot or not digest or not base:
            return None
        digest = digest.lower()
        for tf in self.repo.find_targets(f"{dirname}{sep}{base}"):
            if digest in (h.lower() for h in tf.hashes.values()):
                return self.repo.image_path(tf)
        return None

    def tick(self) -> bool:
        """Pick up offline changes and re-sign what is about to expire."""
        with self.lock:
            now = self.clock()
            changed = self.repo.reload_if_changed(now)
            changed = self.repo.refresh(now) or changed
            # refresh() re-reads the directory too: an offline `sign` that lands between
            # the two calls is loaded there without being reported as a change
            if changed or self._versions() != self._cached_versions:
                self.rebuild_cache()
                changed = True
            return changed

    def sync(self) -> list[str]:
        """Pick up an offline change at once, if ``current.json`` changed since the last
        look (one ``stat``); returns a line saying what changed, for the log."""
        if not self._watch.changed():
            return []
        with self.lock:
            before = self._cached_versions
            self.repo.reload_if_changed(self.clock())
            if self._versions() == before:
                return []
            self.rebuild_cache()
            b = self.repo.builder
            return [
                f"Image repository: picked up an offline change: root v{len(b.root_history)},"
                f" {_roles_line(b)}, snapshot v{b.snapshot.version},"
                f" timestamp v{b.timestamp.version}"
            ]

    def role_of(self, token: str) -> str:
        role = self.repo.role_for_token(token)
        if role is None:
            raise HTTPException(401, "unknown bearer token", headers={"WWW-Authenticate": "Bearer"})
        return role


class _MetadataView:
    """``service.metadata[name]``: :meth:`ImageService.metadata_file` as a read-only map."""

    def __init__(self, service: ImageService) -> None:
        self._service = service

    def get(self, name: str, default: bytes | None = None) -> bytes | None:
        data = self._service.metadata_file(name)
        return default if data is None else data

    def __getitem__(self, name: str) -> bytes:
        data = self._service.metadata_file(name)
        if data is None:
            raise KeyError(name)
        return data

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._service.metadata_file(name) is not None


def _versioned(name: str) -> tuple[str, int]:
    """``N.ROLE.EXT`` -> (ROLE, N); ``ROLE.EXT`` -> (ROLE, 0)."""
    stem = name.rsplit(".", 1)[0]
    head, dot, rest = stem.partition(".")
    return (rest, int(head)) if dot and head.isdigit() and len(head) < 12 else (stem, 0)


def _roles_line(b: RepositoryBuilder, limit: int = 8) -> str:
    """Versions of the targets roles for a log line; many hash bins are summarised."""
    roles = ["targets", *b.delegated]
    text = ", ".join(f"{r} v{b.version_of(r)}" for r in roles[:limit])
    return text + (f" and {len(roles) - limit} more roles" if len(roles) > limit else "")


def _sync(service: ImageService) -> None:
    for line in service.sync():
        log.info("%s", line)


def create_app(
    repo_dir: Path,
    *,
    refresh_interval: float = 60.0,
    clock: Callable[[], datetime] = _utcnow,
    limits: Limits | None = None,
    max_image_upload: int = 256 * 1024 * 1024,
) -> FastAPI:
    """The FastAPI app serving the Image repository in ``repo_dir``."""
    service = ImageService(repo_dir, clock=clock, limits=limits, max_image_upload=max_image_upload)
    serving = ImageServing(service, Path(repo_dir))

    app = FastAPI(
        title="Uptane Image repository",
        version="1",
        description="Public download of metadata and images; authorised upload (§5.3.1).",
        lifespan=periodic_lifespan(
            (refresh_interval, [service.tick]),
            (WATCH_INTERVAL, [service.sync]),
            # the object store follows every change within a second (issue 19)
            (MIRROR_INTERVAL, [serving.mirror_job]),
        ),
    )
    app.state.service = service
    app.state.serving = serving
    install_error_handlers(app, {Forbidden: 403, Conflict: 409, PublishRefused: 409})
    # the first added runs last: the request log is the outermost
    app.add_middleware(AdminLog, what="Image repository")
    app.add_middleware(DownloadGate, settings=serving.settings)
    app.add_middleware(LegacyPaths)
    app.add_middleware(RequestLog, metrics=serving.metrics)
    _download_routes(app, service)
    _upload_routes(app, service, serving)

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", tags=["service"], response_class=Response)
    def metrics() -> Response:
        """Prometheus metrics: requests by route and status, and their latency."""
        return Response(serving.metrics.exposition(), media_type=CONTENT_TYPE)

    return app


def _download_routes(app: FastAPI, service: ImageService) -> None:
    """The public download, laid out as a static TUF repository."""

    @app.get("/metadata/{name}")
    def get_metadata(name: str) -> Response:
        _sync(service)
        data = service.metadata_file(name)
        if data is None:
            raise HTTPException(404, "no such metadata file")
        return Response(data, media_type=for_filename(name).media_type)

    @app.get("/targets/{path:path}")
    def get_target(path: str) -> Response:
        try:
            check_target_path(path)
        except Exception:
            raise HTTPException(400, "unsafe target path") from None
        found = service.image(path)
        if found is None:
            raise HTTPException(404, "no such target")
        if isinstance(found, Path):
            from fastapi.responses import FileResponse

            return FileResponse(found, media_type="application/octet-stream")
        return Response(found, media_type="application/octet-stream")


def _metadata_upload(service: ImageService, who: str, name: str) -> tuple[Codec, str]:
    """The codec and role of an upload named ``ROLE.EXT`` by ``who``; 400, 404 or
    Forbidden (403) before the body is read."""
    try:
        codec = for_filename(name)
    except MalformedInput:
        raise HTTPException(400, "name must be ROLE.json or ROLE.der") from None
    role = name[: -len(codec.suffix)]
    if not role:
        raise HTTPException(400, "name must be ROLE.json or ROLE.der")
    if role != "targets" and find_delegation(service.repo.builder, role) is None:
        raise HTTPException(404, f"no role {role[:64]!r}")
    if who != ADMIN and who != role:
        raise Forbidden(f"role {who!r} may not upload metadata of role {role!r}")
    return codec, role


def _upload_routes(app: FastAPI, service: ImageService, serving: ImageServing) -> None:
    """The authorised write, behind a bearer token that names one role (under ``/api/v1``;
    the paths without the version answer too, deprecated)."""

    uploader = _uploader(service)

    @app.put(f"{API}/images/{{path:path}}", status_code=201)
    async def put_image(path: str, request: Request, role: str = Depends(uploader)) -> Any:
        """Upload image bytes for ``path``; the uploader's delegation must cover it."""
        service.repo.check_image_upload(role, path)
        data = await read_body(request, service.max_image_upload)

        def work() -> dict[str, Any]:
            with service.lock:
                tf = service.repo.upload_image(role, path, data)
            return {"path": tf.path, "length": tf.length, "hashes": tf.hashes}

        return await run_in_threadpool(work)

    @app.put(f"{API}/metadata/{{name}}")
    async def put_metadata(
        name: str, request: Request, response: Response, who: str = Depends(uploader)
    ) -> Any:
        """Upload ``ROLE.json`` or ``ROLE.der`` signed by a threshold of the role's keys."""
        codec, role = _metadata_upload(service, who, name)
        data = await read_body(request, service.repo.limits.bytes_for_role(role))

        def work() -> dict[str, Any]:
            with service.lock:
                version, done = service.repo.upload_metadata(
                    who, role, data, codec.name, service.clock()
                )
                if done:
                    service.rebuild_cache()
            return {"role": role, "version": version, "published": done}

        result = await run_in_threadpool(work)
        if not result["published"]:
            response.status_code = 202
        else:  # the release is in the object store when the upload returns
            await mirror_now(serving)
        return result

    _status_routes(app, service, uploader)


def _uploader(service: ImageService) -> Callable[[Request], str]:
    """The dependency naming the role of a request's bearer token (401 without one)."""

    def uploader(request: Request) -> str:
        role = service.role_of(bearer(request))
        request.state.caller = role  # for the admin-change log
        _sync(service)  # a delegation or sign just made offline counts for this upload
        return role

    return uploader


def _status_routes(app: FastAPI, service: ImageService, uploader: Callable[..., str]) -> None:
    """Versions, expiry and delegations, for any uploader."""

    @app.get(f"{API}/status")
    def status(who: str = Depends(uploader)) -> dict[str, Any]:
        b = service.repo.builder
        return {
            "root": len(b.root_history),
            "timestamp": b.timestamp.version,
            "snapshot": b.snapshot.version,
            # a delegated role awaiting its holder's first version is at version 0
            "roles": {
                r: b.role(r).version if b.has_role(r) else 0
                for r in ["targets", *delegated_names(b)]
            },
            "timestamp_expires": b.timestamp.expires.isoformat(),
            "you": who,
        }

    @app.get(f"{API}/delegations")
    def delegations(who: str = Depends(uploader)) -> dict[str, Any]:
        """The top-level targets' delegations: suppliers' roles (paths, hardware ids, keys,
        thresholds, TAP 3 members, the version each published) and hash bins. Changing
        them needs the targets keys, offline: ``delegate``, ``revoke``, ``delegate-bins``."""
        return describe_delegations(service.repo.builder)
