"""TLS for both services and the client certificates of vehicles (issue 19).

- :class:`TlsSettings`: a service's ``tls`` setting (``director.json``, ``repo.json``):
  its certificate and key, the CAs whose client certificates it accepts, the proxies it
  trusts to have checked one, and whether vehicles must present one. :meth:`uvicorn_kwargs`
  turns it into uvicorn's TLS options.
- A vehicle CA the Director issues client certificates from (``DIR/vehicle-ca``, made by
  ``uptane-director tls init-ca``), or the OEM's own PKI whose certificates it accepts:
  a vehicle's certificate names its VIN as the subject's common name.
- :func:`peer_certificate`: the client certificate of a request: the one the TLS
  connection verified (uvicorn gives it to the app through :class:`PeerCertProtocol`), or,
  from a configured proxy address only, the one in the proxy's header.

Keys are ECDSA P-256. Certificates are X.509 through ``cryptography``.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from director.common import VIN_RE, Invalid
from storage import atomic_write

#: where a Director keeps the CA it issues vehicles' client certificates from
VEHICLE_CA_DIR = "vehicle-ca"
CA_CERT, CA_KEY = "ca.pem", "ca.key"
#: the largest PEM a request, a header or a file may carry
MAX_PEM = 16 * 1024
#: what ``scope["state"]`` carries: the DER of the verified client certificate, or None
PEER_CERT = "peer_cert"
VEHICLE_AUTH = ("none", "mtls")


class CertificateError(Invalid):
    """A certificate or request the Director refuses (HTTP 422, with the reason)."""


@dataclass
class TlsSettings:
    """A service's TLS, from its configuration file's ``tls`` table (paths relative to
    the service's directory):

    ``{"cert": "tls/server.pem", "key": "tls/server.key", "key_passphrase_env": "VAR",
    "client_ca": "tls/vehicles-ca.pem", "vehicle_auth": "mtls",
    "trusted_proxies": ["10.0.0.5", "10.1.0.0/24"], "client_cert_header":
    "x-client-cert", "public_read": true}``

    ``cert``/``key`` absent: plain HTTP (behind a TLS-terminating proxy).
    ``vehicle_auth`` ``mtls``: vehicle routes need a certificate bound to the VIN.
    ``public_read`` (the Image repository): false makes downloads need a client
    certificate from ``client_ca`` too."""

    cert: Path | None = None
    key: Path | None = None
    key_passphrase_env: str | None = None
    client_ca: Path | None = None
    vehicle_auth: str = "none"
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    client_cert_header: str = "x-client-cert"
    public_read: bool = True

    KEYS = (
        "cert",
        "key",
        "key_passphrase_env",
        "client_ca",
        "vehicle_auth",
        "trusted_proxies",
        "client_cert_header",
        "public_read",
    )

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, base: Path) -> TlsSettings:
        if d is None:
            return cls()
        if not isinstance(d, dict) or set(d) - set(cls.KEYS):
            raise ValueError(f"tls: known settings are {', '.join(cls.KEYS)}")

        def path(name: str) -> Path | None:
            v = d.get(name)
            if v is None:
                return None
            if not isinstance(v, str) or not v:
                raise ValueError(f"tls.{name} must be a file name")
            return base / v

        auth = d.get("vehicle_auth", "none")
        if auth not in VEHICLE_AUTH:
            raise ValueError(f"tls.vehicle_auth must be one of {', '.join(VEHICLE_AUTH)}")
        try:
            proxies = tuple(
                ipaddress.ip_network(p, strict=False) for p in d.get("trusted_proxies", [])
            )
        except (TypeError, ValueError) as e:
            raise ValueError(f"tls.trusted_proxies: {e}") from None
        header = d.get("client_cert_header", "x-client-cert")
        if not isinstance(header, str) or not header.replace("-", "").isalnum():
            raise ValueError("tls.client_cert_header must be a header name")
        s = cls(
            cert=path("cert"),
            key=path("key"),
            key_passphrase_env=d.get("key_passphrase_env"),
            client_ca=path("client_ca"),
            vehicle_auth=auth,
            trusted_proxies=proxies,
            client_cert_header=header.lower(),
            public_read=bool(d.get("public_read", True)),
        )
        if (s.cert is None) != (s.key is None):
            raise ValueError("tls: give both cert and key, or neither")
        if auth == "mtls" and s.client_ca is None and not proxies:
            raise ValueError("tls.vehicle_auth mtls needs client_ca, trusted_proxies or both")
        return s

    @property
    def serves_tls(self) -> bool:
        return self.cert is not None

    @property
    def checks_clients(self) -> bool:
        """Whether some request needs a client certificate."""
        return self.vehicle_auth == "mtls" or not self.public_read

    def uvicorn_kwargs(self) -> dict[str, Any]:
        """uvicorn's TLS options (none when the service serves plain HTTP). A client
        certificate is asked for and verified against ``client_ca`` when one is
        configured, but not required by the handshake: admin clients have none; the
        routes that need one refuse without it."""
        if not self.serves_tls:
            return {}
        out: dict[str, Any] = {"ssl_certfile": str(self.cert), "ssl_keyfile": str(self.key)}
        if self.key_passphrase_env:
            secret = os.environ.get(self.key_passphrase_env)
            if secret is None:
                raise ValueError(f"tls.key_passphrase_env: set {self.key_passphrase_env}")
            out["ssl_keyfile_password"] = secret
        if self.client_ca is not None:
            out["ssl_ca_certs"] = str(self.client_ca)
            out["ssl_cert_reqs"] = ssl.CERT_OPTIONAL
            out["http"] = PeerCertProtocol.for_uvicorn()
        return out

    def trusted(self, client: Any) -> bool:
        """Whether a peer address is one of the configured proxies."""
        if not self.trusted_proxies or not client:
            return False
        try:
            addr = ipaddress.ip_address(client[0])
        except ValueError:
            return False
        return any(addr in net for net in self.trusted_proxies)


class PeerCertProtocol:
    """uvicorn's HTTP protocol with the connection's verified client certificate (DER) in
    every request's ``scope["state"]["peer_cert"]`` (uvicorn gives no TLS extension)."""

    @staticmethod
    def for_uvicorn() -> type:
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
        except ImportError:  # no httptools: the pure-Python parser
            from uvicorn.protocols.http.h11_impl import H11Protocol as Base  # type: ignore[assignment]

        class WithPeerCert(Base):  # type: ignore[misc, valid-type]
            def connection_made(self, transport: Any) -> None:
                super().connection_made(transport)
                ssl_object = transport.get_extra_info("ssl_object")
                der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
                # app_state is copied into every request's scope["state"]
                self.app_state = {**self.app_state, PEER_CERT: der}

        return WithPeerCert


def peer_certificate(scope: dict[str, Any], settings: TlsSettings) -> x509.Certificate | None:
    """The client certificate of a request: from the configured proxy's header when the
    connection comes from a trusted proxy address (a header from anyone else is ignored),
    else the one the TLS handshake verified. None: there is none (or it cannot be read)."""
    if settings.trusted(scope.get("client")):
        name = settings.client_cert_header.encode()
        for key, value in scope.get("headers", ()):
            if key == name and 0 < len(value) <= 3 * MAX_PEM:
                try:
                    return load_pem(unquote(value.decode("latin-1")).encode())
                except CertificateError:
                    return None
        return None
    state = scope.get("state")
    der = state.get(PEER_CERT) if isinstance(state, dict) else None
    if not der:
        return None
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        return None


# --- certificates -----------------------------------------------------------------------------


def load_pem(data: bytes) -> x509.Certificate:
    if len(data) > MAX_PEM:
        raise CertificateError(f"a certificate is at most {MAX_PEM} bytes")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise CertificateError("not a PEM certificate") from None


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, in hex: what a binding names."""
    return cert.fingerprint(hashes.SHA256()).hex()


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def vin_of(cert: x509.Certificate) -> str | None:
    """The VIN a vehicle certificate names: its subject's common name."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else None
    return value if isinstance(value, str) and VIN_RE.match(value) else None


def not_after(cert: x509.Certificate) -> datetime:
    return cert.not_valid_after_utc


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _builder(
    subject: str, issuer: x509.Name, public_key: Any, days: float
) -> x509.CertificateBuilder:
    now = datetime.now(UTC) - timedelta(minutes=5)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=days))
    )


@dataclass(frozen=True)
class Ca:
    """A CA that signs certificates: its certificate and key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, name: str, days: float = 3650) -> Ca:
        key = new_key()
        b = _builder(
            name, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key.public_key(), days
        )
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        b = b.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        return cls(b.sign(key, hashes.SHA256()), key)

    @classmethod
    def load(cls, directory: Path) -> Ca:
        """The CA in ``directory`` (``ca.pem``, ``ca.key``)."""
        try:
            cert = load_pem((directory / CA_CERT).read_bytes())
            key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
        except FileNotFoundError:
            raise CertificateError(
                f"no vehicle CA in {directory}: run `uptane-director tls init-ca DIR`, or bind"
                " certificates from the OEM's PKI"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertificateError(f"{directory / CA_KEY}: not an ECDSA key")
        return cls(cert, key)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / CA_KEY, key_pem(self.key), mode=0o600)
        atomic_write(directory / CA_CERT, pem(self.cert).encode(), mode=0o644)

    def issue(
        self,
        subject: str,
        public_key: Any,
        *,
        days: float = 825,
        client: bool = True,
        hosts: tuple[str, ...] = (),
    ) -> x509.Certificate:
        """A certificate for ``subject`` (a VIN for a vehicle, a host for a server)."""
        b = _builder(subject, self.cert.subject, public_key, days)
        b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if hosts:
            alt: list[x509.GeneralName] = []
            for h in hosts:
                try:
                    alt.append(x509.IPAddress(ipaddress.ip_address(h)))
                except ValueError:
                    alt.append(x509.DNSName(h))
            b = b.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        return b.sign(self.key, hashes.SHA256())

    def issue_for_csr(self, vin: str, csr_pem: bytes, *, days: float = 825) -> x509.Certificate:
        """A vehicle's client certificate for the key of its request (CSR), naming ``vin``
        whatever the request asked."""
        if len(csr_pem) > MAX_PEM:
            raise CertificateError(f"a certificate request is at most {MAX_PEM} bytes")
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError:
            raise CertificateError("not a PEM certificate request (CSR)") from None
        if not csr.is_signature_valid:
            raise CertificateError("the certificate request's signature does not verify")
        return self.issue(vin, csr.public_key(), days=days)


def verify_issued_by(cert: x509.Certificate, bundle: bytes) -> None:
    """That ``cert`` was issued by one of the CAs in ``bundle`` (PEM) and is in its
    validity period; CertificateError otherwise."""
    now = datetime.now(UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CertificateError("the certificate is not valid now")
    for ca in x509.load_pem_x509_certificates(bundle):
        try:
            cert.verify_directly_issued_by(ca)
            return
        except (ValueError, TypeError, InvalidSignature):  # not this CA: the next one
            continue
    raise CertificateError(
        "the certificate was not issued by a CA the Director trusts (tls.client_ca)"
    )


__all__ = [
    "CA_CERT",
    "CA_KEY",
    "MAX_PEM",
    "PEER_CERT",
    "VEHICLE_CA_DIR",
    "Ca",
    "CertificateError",
    "PeerCertProtocol",
    "TlsSettings",
    "fingerprint",
    "key_pem",
    "load_pem",
    "new_key",
    "not_after",
    "peer_certificate",
    "pem",
    "verify_issued_by",
    "vin_of",
]
