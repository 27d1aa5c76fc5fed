"""Vehicles' client certificates bound to their VINs, and the gate in front of the vehicle
routes (issue 19, mutual TLS).

A certificate is bound to one registered vehicle (``vehicle_certificates``: its SHA-256
fingerprint, the VIN, its expiry, whether and when it was revoked). It is either issued
here from the vehicle CA (``DIR/vehicle-ca``) for the key of a certificate request, or
one from the OEM's own PKI (issued by a CA of ``tls.client_ca``), accepted. Either way its
subject's common name is the VIN.

With ``tls.vehicle_auth`` ``mtls``, :class:`VehicleGate` answers every request to
``/vehicles/{vin}/...`` (metadata, manifests, encrypted images) only when the request's
client certificate (:func:`director.tls.peer_certificate`: the TLS connection's, or a
trusted proxy's header) is bound to that VIN, unrevoked and unexpired; anything else is
403 before the route runs: no lookup of the vehicle, no signature checked. Bindings are
cached per fingerprint for ``cache_seconds``; a revocation empties the cache at once on
this node and, through :mod:`director.cluster`, on every other node of a PostgreSQL
database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography import x509
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from director import inventory as inv
from director import paging, tls
from director.common import VIN_RE, Conflict, NotFound, epoch, iso
from director.httpcommon import error_body, request_id_of
from director.paging import Page
from director.tls import Ca, CertificateError, TlsSettings

#: the route label of a vehicle request the gate refused (metrics, request log)
GATE_ROUTE = "/vehicles/{vin}/* (refused: client certificate)"
#: the cache's bound: fingerprints remembered at most (least recently checked dropped)
MAX_CACHED = 100_000


@dataclass(frozen=True)
class _Binding:
    vin: str | None  # None: the fingerprint is bound to no vehicle
    revoked: bool
    not_after: int
    fetched: float


def _row(r: Any) -> dict[str, Any]:
    return {
        "fingerprint": r.fingerprint,
        "vin": r.vin,
        "serial": r.serial,
        "issuer": r.issuer,
        "not_after": iso(r.not_after),
        "created_at": iso(r.created_at),
        "revoked_at": iso(r.revoked_at),
        "certificate": r.pem,
    }


class Certificates:
    """The bindings of one Director: issue, accept, list, revoke, check."""

    def __init__(
        self,
        engine: Engine,
        directory: Path,
        settings: TlsSettings,
        *,
        clock: Callable[[], datetime],
        cache_seconds: Callable[[], float],
    ) -> None:
        self.engine = engine
        self.dir = directory
        self.settings = settings
        self.clock = clock
        self.cache_seconds = cache_seconds
        self._cache: dict[str, _Binding] = {}
        self._lock = threading.Lock()
        #: called with a note after a change other nodes must see (director.cluster)
        self.on_change: Callable[[str], None] | None = None

    # --- binding ----------------------------------------------------------------------------

    def issue(self, vin: str, csr_pem: bytes, *, days: float = 825) -> dict[str, Any]:
        """Issue a client certificate for ``vin`` from the vehicle CA, for the key of the
        certificate request ``csr_pem``, and bind it."""
        self._vehicle_id(vin)  # an unknown VIN gets nothing signed
        ca = Ca.load(self.dir / tls.VEHICLE_CA_DIR)
        cert = ca.issue_for_csr(vin, csr_pem, days=days)
        return self._bind(vin, cert, "director")

    def issue_with_key(self, vin: str, *, days: float = 825) -> tuple[dict[str, Any], bytes]:
        """Make a key, issue and bind its certificate (a provisioning station's way);
        returns the binding and the key (PEM), which is not kept here."""
        key = tls.new_key()
        self._vehicle_id(vin)
        cert = Ca.load(self.dir / tls.VEHICLE_CA_DIR).issue(vin, key.public_key(), days=days)
        return self._bind(vin, cert, "director"), tls.key_pem(key)

    def accept(self, vin: str, cert_pem: bytes) -> dict[str, Any]:
        """Bind a certificate from the OEM's PKI: issued by a CA of ``tls.client_ca`` (or
        the vehicle CA), valid now, naming ``vin``."""
        cert = tls.load_pem(cert_pem)
        tls.verify_issued_by(cert, self._trusted_bundle())
        return self._bind(vin, cert, "oem")

    def precheck(self, vin: str, csr: str | None, certificate: str | None) -> None:
        """Refuse, before a vehicle is registered, what :meth:`issue` or :meth:`accept`
        would refuse for it: no vehicle CA, a request that does not verify, a certificate
        that names another VIN or comes from no trusted CA."""
        if (csr is None) == (certificate is None):
            raise CertificateError("give exactly one of csr (issue) or certificate (accept)")
        if csr is not None:
            Ca.load(self.dir / tls.VEHICLE_CA_DIR)
            try:
                request = x509.load_pem_x509_csr(csr.encode())
            except ValueError:
                raise CertificateError("not a PEM certificate request (CSR)") from None
            if not request.is_signature_valid:
                raise CertificateError("the certificate request's signature does not verify")
            return
        assert certificate is not None
        cert = tls.load_pem(certificate.encode())
        if tls.vin_of(cert) != vin:
            raise CertificateError(f"the certificate names {tls.vin_of(cert)!r}, not {vin}")
        tls.verify_issued_by(cert, self._trusted_bundle())

    def _trusted_bundle(self) -> bytes:
        bundle = b""
        if self.settings.client_ca is not None:
            bundle += self.settings.client_ca.read_bytes()
        own = self.dir / tls.VEHICLE_CA_DIR / tls.CA_CERT
        if own.exists():
            bundle += b"\n" + own.read_bytes()
        if not bundle.strip():
            raise CertificateError("no CA to check it against: configure tls.client_ca")
        return bundle

    def _vehicle_id(self, vin: str) -> int:
        if not VIN_RE.match(vin):
            raise NotFound("no such vehicle")
        with self.engine.connect() as conn:
            vid = conn.execute(
                sa.select(inv.vehicles.c.id).where(inv.vehicles.c.vin == vin)
            ).scalar()
        if vid is None:
            raise NotFound(f"vehicle {vin} is not registered")
        return int(vid)

    def _bind(self, vin: str, cert: x509.Certificate, issuer: str) -> dict[str, Any]:
        if tls.vin_of(cert) != vin:
            raise CertificateError(
                f"the certificate names {tls.vin_of(cert)!r}, not vehicle {vin}: its subject's"
                " common name must be the VIN"
            )
        vid = self._vehicle_id(vin)
        fp = tls.fingerprint(cert)
        values = {
            "fingerprint": fp,
            "vehicle_id": vid,
            "vin": vin,
            "serial": format(cert.serial_number, "x")[:64],
            "issuer": issuer,
            "not_after": epoch(tls.not_after(cert)),
            "created_at": epoch(self.clock()),
            "pem": tls.pem(cert),
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(inv.vehicle_certificates.insert().values(**values))
        except IntegrityError:
            raise Conflict(f"certificate {fp[:16]}... is already bound") from None
        self.forget(fp)
        return self.describe(fp)

    def describe(self, fp: str) -> dict[str, Any]:
        t = inv.vehicle_certificates
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(t).where(t.c.fingerprint == fp.lower()[:64])).first()
        if r is None:
            raise NotFound("no such certificate")
        return _row(r)

    def list_bound(self, vin: str | None = None) -> list[dict[str, Any]]:
        t = inv.vehicle_certificates
        q = sa.select(t).order_by(t.c.id)
        if vin is not None:
            q = q.where(t.c.vin == vin)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(q)]

    def page_bound(self, page: Page, vin: str | None = None) -> dict[str, Any]:
        """One page of :meth:`list_bound` (:mod:`director.paging`)."""
        t = inv.vehicle_certificates
        q = sa.select(t) if vin is None else sa.select(t).where(t.c.vin == vin)
        with self.engine.connect() as conn:
            return paging.fetch(conn, q, t.c.id, page, _row)

    def revoke(self, fp: str) -> dict[str, Any]:
        """Revoke a binding: the next request with that certificate gets nothing, on every
        node."""
        t = inv.vehicle_certificates
        fp = fp.lower()[:64]
        with self.engine.begin() as conn:
            conn.execute(
                t.update()
                .where(t.c.fingerprint == fp, t.c.revoked_at.is_(None))
                .values(revoked_at=epoch(self.clock()))
            )
        out = self.describe(fp)
        self.forget(fp)
        if self.on_change is not None:
            self.on_change(f"cert:{fp}")
        return out

    # --- checking ---------------------------------------------------------------------------

    def forget(self, fp: str | None = None) -> None:
        """Drop one cached binding (or all)."""
        with self._lock:
            if fp is None:
                self._cache.clear()
            else:
                self._cache.pop(fp, None)

    def cached(self, fp: str) -> _Binding | None:
        with self._lock:
            b = self._cache.get(fp)
        if b is None or time.monotonic() - b.fetched >= self.cache_seconds():
            return None
        return b

    def lookup(self, fp: str) -> _Binding:
        """The binding of a fingerprint (one indexed lookup), cached."""
        t = inv.vehicle_certificates
        with self.engine.connect() as conn:
            r = conn.execute(
                sa.select(t.c.vin, t.c.revoked_at, t.c.not_after).where(t.c.fingerprint == fp)
            ).first()
        b = (
            _Binding(None, False, 0, time.monotonic())
            if r is None
            else _Binding(r.vin, r.revoked_at is not None, int(r.not_after), time.monotonic())
        )
        with self._lock:
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[fp] = b
        return b

    def refusal(self, binding: _Binding, vin: str) -> str | None:
        """Why a request for ``vin`` with this binding gets nothing, or None."""
        if binding.vin is None:
            return "unknown"
        if binding.revoked:
            return "revoked"
        if binding.not_after <= epoch(self.clock()):
            return "expired"
        return None if binding.vin == vin else "other-vehicle"


_REASONS = {
    "none": "a client certificate naming this vehicle is required",
    "unknown": "the client certificate is bound to no vehicle",
    "revoked": "the client certificate was revoked",
    "expired": "the client certificate has expired",
    "other-vehicle": "the client certificate names another vehicle",
}


class VehicleGate:
    """ASGI middleware in front of ``/vehicles/{vin}/...``: the request's client
    certificate must be bound to ``vin`` (see the module docstring). ``refused(reason)``
    counts each refusal (metrics)."""

    def __init__(
        self,
        app: Any,
        certs: Certificates,
        settings: TlsSettings,
        refused: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.certs = certs
        self.settings = settings
        self.refused = refused

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or self.settings.vehicle_auth != "mtls"
            or not scope["path"].startswith("/vehicles/")
        ):
            await self.app(scope, receive, send)
            return
        vin = scope["path"].split("/")[2]
        reason = await self._reason(scope, vin)
        if reason is None:
            await self.app(scope, receive, send)
            return
        if self.refused is not None:
            self.refused(reason)
        scope.setdefault("state", {})["route"] = GATE_ROUTE  # the request log's label
        body = error_body(403, _REASONS[reason], request_id=request_id_of(scope))
        await JSONResponse(body, status_code=403)(scope, receive, send)

    async def _reason(self, scope: Any, vin: str) -> str | None:
        cert = tls.peer_certificate(scope, self.settings)
        if cert is None:
            return "none"
        fp = tls.fingerprint(cert)
        binding = self.certs.cached(fp)
        if binding is None:
            binding = await run_in_threadpool(self.certs.lookup, fp)
        return self.certs.refusal(binding, vin)


__all__ = ["Certificates", "VehicleGate"]
