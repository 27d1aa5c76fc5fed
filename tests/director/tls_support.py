"""Helpers for the issue-19 tests: a Director served as a real process over TLS (or behind
a pretend proxy), vehicles with client certificates, a Primary configured for mutual TLS,
and a reading of the service's metrics."""

from __future__ import annotations

import contextlib
import json
import re
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from services import Service

from director import director_cli
from director.tls import Ca, key_pem, pem

PRIMARY_TOML = """
[vehicle]
vin = "{vin}"

[primary]
ecu_serial = "{serial}"
hardware_id = "{hw}"
key_file = "keys/primary.pem"
flash_dir = "flash"
slot_size = 16384

[director]
url = "{director}"

[image_repository]
url = "{image}"

[storage]
dir = "state"

[fetcher]
connect_timeout = 2.0
read_timeout = 20.0
retries = 0
backoff = 0.05
{tls}
"""


class TlsService(Service):
    """``uptane-director serve`` over HTTPS: ready once ``/healthz`` answers through a
    connection that verifies the server against ``ca``."""

    ca: Path

    def __init__(
        self,
        directory: Path,
        log: Path,
        ca: Path | None,
        *extra: str,
        module: str = "director.director_cli",
    ) -> None:
        self.tls_ca = ca
        super().__init__(module, directory, log, *extra)

    def _wait(self) -> bool:
        if self.tls_ca is None:
            return super()._wait()
        self.url = self.url.replace("http://", "https://")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                r = httpx.get(f"{self.url}/healthz", timeout=1, verify=tls_context(self.tls_ca))
                if r.status_code == 200:
                    return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.1)
        return False


def tls_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """What an HTTPS client verifies the server with (``ca``), presenting ``cert`` if given."""
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), None if key is None else str(key))
    return ctx


def cli(*args: Any) -> int:
    return director_cli.main([str(a) for a in args])


def key_and_csr(vin: str) -> tuple[bytes, str]:
    """A vehicle's TLS key (PEM) and a certificate request for it naming ``vin``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, vin)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return key_pem(key), csr.public_bytes(serialization.Encoding.PEM).decode()


def foreign_cert(vin: str, out: Path) -> tuple[Path, Path]:
    """A certificate naming ``vin`` from a CA the Director does not trust."""
    ca = Ca.create("somebody else's CA")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca.issue(vin, key.public_key())
    out.mkdir(parents=True, exist_ok=True)
    (out / "foreign.pem").write_text(pem(cert))
    (out / "foreign.key").write_bytes(key_pem(key))
    return out / "foreign.pem", out / "foreign.key"


def set_tls(ddir: Path, tls: dict[str, Any] | None) -> None:
    """Change ``director.json``'s ``tls`` setting (the service needs a restart)."""
    path = ddir / "director.json"
    cfg = json.loads(path.read_text())
    cfg["tls"] = tls
    path.write_text(json.dumps(cfg))


def escaped(cert_file: Path) -> str:
    """A certificate as a proxy passes it on (nginx ``$ssl_client_escaped_cert``)."""
    return quote(cert_file.read_text(), safe="")


_SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels`` (0 when none)."""
    total = 0.0
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total
