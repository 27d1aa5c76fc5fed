"""The admin API of accountable access and vehicle identity (issue 19): API tokens (scope
``admin``), the audit log (``read``), and vehicles' client certificates (``keys`` to
issue, accept or revoke; ``read`` to list). Added to the Director's app by
:func:`director.director_server.create_app`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from director.paging import Page, old_shape
from director.serving import Route, Serving
from director.tokens import ADMIN, DEFAULT_LIFETIME, KEYS, MAX_LIFETIME, READ


class TokenIn(BaseModel):
    name: str = Field(
        max_length=64, description="who or what holds it (1-64 of A-Z a-z 0-9 _ . @ -)"
    )
    scopes: list[str] = Field(
        max_length=5, description="some of read, assign, campaign, keys, admin"
    )
    expires_in_seconds: int | None = Field(
        DEFAULT_LIFETIME,
        ge=1,
        le=MAX_LIFETIME,
        description="lifetime (default 90 days); null: never expires",
    )


class CertificateIn(BaseModel):
    csr: str | None = Field(
        None, max_length=16384, description="a certificate request (PEM): issued by the vehicle CA"
    )
    certificate: str | None = Field(
        None,
        max_length=16384,
        description="a certificate from the OEM's PKI (PEM), issued by a CA of tls.client_ca",
    )
    days: float = Field(825, gt=0, le=3650, description="lifetime of an issued certificate")


def bind_certificate(s: Serving, vin: str, body: CertificateIn) -> dict[str, Any]:
    """Issue (from ``csr``) or accept (``certificate``) a vehicle's client certificate."""
    if (body.csr is None) == (body.certificate is None):
        raise HTTPException(400, "give exactly one of csr (issue) or certificate (accept)")
    if body.csr is not None:
        return s.certs.issue(vin, body.csr.encode(), days=body.days)
    assert body.certificate is not None
    return s.certs.accept(vin, body.certificate.encode())


def token_routes(route: Route, s: Serving) -> None:
    """Tokens: create (shown once), list, revoke; each change in the audit log."""
    tags: list[str | Any] = ["tokens"]

    @route("POST", "/tokens", ADMIN, status_code=201, tags=tags)
    def create_token(body: TokenIn, request: Request) -> Any:
        """Make a named token with scopes and an expiry; the token is in this answer
        only (the Director keeps its SHA-256)."""
        caller = getattr(request.state, "caller", None)
        return s.tokens.create(
            body.name, body.scopes, lifetime=body.expires_in_seconds, created_by=caller
        )

    @route("GET", "/tokens", ADMIN, tags=tags)
    def list_tokens() -> Any:
        """Every token: name, scopes, expiry, state (never the token)."""
        return s.tokens.list_tokens()

    @route("DELETE", "/tokens/{name}", ADMIN, tags=tags)
    def revoke_token(name: str) -> Any:
        """Revoke a token: every node refuses it from the next request."""
        return s.tokens.revoke(name)

    @route("GET", "/audit", READ, tags=["audit"])
    def audit(
        request: Request,
        limit: int | None = None,
        after: str | None = None,
        before: int | None = None,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> Any:
        """The audit log, newest first, in pages (``{"items", "next"}``): who changed what,
        when, with which outcome and request id (``before``: rows older than this id)."""
        if old_shape(request, after):
            return s.audit.entries(
                limit=limit or 100, before=before, actor=actor, request_id=request_id
            )
        page = Page.of(s.d.config, "audit", limit, after, descending=True)
        if after is None and before is not None:
            page = replace(page, after=before)
        return s.audit.page(page, actor=actor, request_id=request_id)


def certificate_routes(route: Route, s: Serving) -> None:
    """Vehicles' client certificates for mutual TLS."""
    tags: list[str | Any] = ["certificates"]

    @route("POST", "/vehicles/{vin}/certificates", KEYS, status_code=201, tags=tags)
    async def add_certificate(vin: str, body: CertificateIn) -> Any:
        """Bind a client certificate to a vehicle: issued here for a certificate request
        (``csr``), or one of the OEM's PKI (``certificate``). Its common name is the VIN."""
        return await run_in_threadpool(bind_certificate, s, vin, body)

    @route("GET", "/vehicles/{vin}/certificates", READ, tags=tags)
    def vehicle_certificates(vin: str) -> Any:
        return s.certs.list_bound(vin)

    @route("GET", "/certificates", READ, tags=tags)
    def certificates(
        request: Request, vin: str | None = None, limit: int | None = None, after: str | None = None
    ) -> Any:
        """Bound certificates, oldest first, in pages (``{"items", "next"}``)."""
        if old_shape(request, limit, after):
            return s.certs.list_bound(vin)
        return s.certs.page_bound(Page.of(s.d.config, "certificates", limit, after), vin)

    @route("DELETE", "/certificates/{fingerprint}", KEYS, tags=tags)
    def revoke_certificate(fingerprint: str) -> Any:
        """Revoke a client certificate (by its SHA-256 fingerprint): the vehicle gets
        nothing with it from the next request on, on every node."""
        return s.certs.revoke(fingerprint)


__all__ = ["CertificateIn", "bind_certificate", "certificate_routes", "token_routes"]
