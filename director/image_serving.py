"""What the Image repository service adds in production (issue 19): its TLS settings and
who may download (``repo.json`` ``tls``; publicly readable by default), its metrics, and
the object store its static layout is kept in (``repo.json`` ``object_store``,
:mod:`director.objectmirror`). :func:`director.image_server.create_app` makes one
:class:`ImageServing`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from director.httpcommon import error_body, request_id_of
from director.image_config import ImageRepoConfig
from director.metrics import ServiceMetrics
from director.objectmirror import Mirror
from director.tls import TlsSettings, peer_certificate
from storage.objects import open_objects

if TYPE_CHECKING:
    from director.image_server import ImageService


class ImageServing:
    """TLS settings, metrics and the object-store mirror of one Image repository service."""

    def __init__(self, service: ImageService, repo_dir: Path) -> None:
        cfg = ImageRepoConfig.load(repo_dir)
        self.service = service
        self.settings = TlsSettings.from_dict(cfg.tls, Path(repo_dir))
        self.metrics = ServiceMetrics("image-repo")
        self.store = None if cfg.object_store is None else open_objects(cfg.object_store)
        self.mirror = None if self.store is None else Mirror(self.store)
        self._mirrored: tuple[int, int, int] | None = None

    def describe(self) -> str:
        return "none (files in DIR only)" if self.store is None else self.store.describe()

    def mirror_job(self) -> list[str]:
        """Bring the object store up to the repository after any change (an upload, an
        offline command, a re-signing): what changed is written, images first, the
        timestamp last. A failure is logged and retried on the next round."""
        if self.mirror is None:
            return []
        b = self.service.repo.builder
        versions = (len(b.root_history), b.snapshot.version, b.timestamp.version)
        if versions == self._mirrored:
            return []
        with self.service.lock:
            items = self.mirror.plan(self.service.repo)
        written = self.mirror.apply(items)
        self._mirrored = versions
        if not written:
            return []
        return [f"object store {self.describe()}: {written} object(s) written"]


class DownloadGate:
    """ASGI middleware: with ``tls.public_read`` false, ``/metadata/`` and ``/targets/``
    answer only a client with a certificate the TLS handshake verified against
    ``tls.client_ca`` (or one a trusted proxy vouches for in its header)."""

    def __init__(self, app: Any, settings: TlsSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and not self.settings.public_read
            and scope["path"].startswith(("/metadata/", "/targets/"))
            and peer_certificate(scope, self.settings) is None
        ):
            body = error_body(
                403,
                "this Image repository is not publicly readable: present a client certificate",
                request_id=request_id_of(scope),
            )
            await JSONResponse(body, status_code=403)(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def mirror_now(serving: ImageServing) -> None:
    """Run the mirror once (after a publishing upload), logging a failure."""
    from director.common import log

    try:
        for line in await run_in_threadpool(serving.mirror_job):
            log.info("%s", line)
    except Exception as e:  # the upload is published; the background round retries
        log.warning("object store not brought up to date (retried): %s", e)


__all__ = ["DownloadGate", "ImageServing", "mirror_now"]
