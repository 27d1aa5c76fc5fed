"""What a serving Director node adds to a :class:`~director.director.Director` (issue 19):
its API tokens and their scopes, the audit log, vehicles' client certificates, metrics,
and its part in a cluster of nodes. The HTTP app (:mod:`director.director_server`) makes
one :class:`Serving` and declares every admin route through :meth:`Serving.route`, which
puts the route under ``/api/v1``, checks the caller's token for the route's scope, and
writes the scope into the OpenAPI document (``x-required-scope``), where the token tests
read it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from director.audit import Audit, node_name
from director.certs import Certificates
from director.cluster import Cluster
from director.httpcommon import API
from director.metrics import DirectorMetrics, campaign_progress
from director.tokens import SCOPES, Caller, Refusal, Tokens

if TYPE_CHECKING:
    from director.director import Director

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


Route = Callable[..., Callable[[Callable[..., Any]], Callable[..., Any]]]

__all__ = ["SCOPE_KEY", "Route", "Serving"]
