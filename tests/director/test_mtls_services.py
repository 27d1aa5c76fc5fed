"""Vehicle identity over TLS (issue 19), with the Director as a real process:

- a vehicle updates over mutual TLS: its Primary presents the client certificate the
  Director issued it at registration (from its certificate request) and bound to its VIN;
- a request with another vehicle's certificate, with no certificate, with a revoked one,
  or with one from a CA the Director does not trust gets nothing (403, or no handshake),
  and costs no signature check: no manifest reaches the manifest code
  (``uptane_manifest_seconds`` does not move) and nothing is stored;
- behind a TLS-terminating proxy the same binding holds from the proxy's header, accepted
  only from the configured proxy address: the same header from any other address is
  ignored.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from oem import make_image_repo
from services import Service
from tls_support import (
    PRIMARY_TOML,
    TlsService,
    cli,
    escaped,
    foreign_cert,
    key_and_csr,
    metric,
    set_tls,
    tls_context,
)

from director.director import Director
from primary.agent import Primary
from primary.cli import provision
from primary.config import load_config
from uptane.keys import PrivateKey
from uptane.manifest import (
    EcuVersionReport,
    InstalledImage,
    SignedManifest,
    build_vehicle_manifest,
)

pytestmark = pytest.mark.slow

TARGET, HW = "tcu/tcu-5.bin", "tcu-v5"
VIN_A, VIN_B = "MTLS-A", "MTLS-B"


@pytest.fixture
def oem(tmp_path: Path, now):
    image_dir = make_image_repo(tmp_path, now)
    images = Service("director.image_cli", image_dir, tmp_path / "images.log")
    ddir = tmp_path / "director"
    token = Director.init(
        ddir, str(image_dir / "metadata"), (image_dir / "metadata" / "1.root.json").read_bytes()
    )
    assert cli("tls", "init-ca", ddir) == 0
    (ddir / "tls").mkdir()
    assert (
        cli(
            "tls",
            "server-cert",
            ddir,
            "--host",
            "127.0.0.1",
            "--out",
            ddir / "tls/server.pem",
            "--key-out",
            ddir / "tls/server.key",
        )
        == 0
    )
    set_tls(
        ddir,
        {
            "cert": "tls/server.pem",
            "key": "tls/server.key",
            "client_ca": "vehicle-ca/ca.pem",
            "vehicle_auth": "mtls",
        },
    )
    ca = ddir / "vehicle-ca" / "ca.pem"
    director = TlsService(ddir, tmp_path / "director.log", ca)
    admin = httpx.Client(
        base_url=director.url,
        verify=tls_context(ca),
        timeout=30,
        headers={"Authorization": f"Bearer {token}"},
    )
    yield {
        "tmp": tmp_path,
        "ddir": ddir,
        "ca": ca,
        "director": director,
        "admin": admin,
        "images": images,
        "image_dir": image_dir,
        "token": token,
    }
    admin.close()
    director.stop()
    images.stop()


def _vehicle(oem: dict, vin: str) -> dict:
    """A provisioned Primary whose client certificate the Director issues at registration
    from its certificate request."""
    root = oem["tmp"] / vin
    (root / "keys").mkdir(parents=True)
    ecu = PrivateKey.generate()
    (root / "keys" / "primary.pem").write_bytes(ecu.to_pem())
    tls_key, csr = key_and_csr(vin)
    body = {
        "vin": vin,
        "ecus": [
            {
                "serial": f"{vin}-tcu",
                "hardware_id": HW,
                "public_key": ecu.key.to_dict(),
                "primary": True,
            }
        ],
        "client_certificate": {"csr": csr},
    }
    r = oem["admin"].post("/api/v1/vehicles", json=body)
    assert r.status_code == 201, r.text
    bound = r.json()["client_certificate"]
    (root / "keys" / "tls.pem").write_text(bound["certificate"])
    (root / "keys" / "tls.key").write_bytes(tls_key)
    tls = f'\n[tls]\nca = "{oem["ca"]}"\ncert = "keys/tls.pem"\nkey = "keys/tls.key"\n'
    (root / "primary.toml").write_text(
        PRIMARY_TOML.format(
            vin=vin,
            serial=f"{vin}-tcu",
            hw=HW,
            director=oem["director"].url,
            image=oem["images"].url,
            tls=tls,
        )
    )
    cfg = load_config(root / "primary.toml")
    provision(
        cfg,
        (oem["ddir"] / "root/1.root.json").read_bytes(),
        (oem["image_dir"] / "metadata/1.root.json").read_bytes(),
    )
    return {
        "vin": vin,
        "cfg": cfg,
        "fp": bound["fingerprint"],
        "cert": root / "keys/tls.pem",
        "key": root / "keys/tls.key",
        "serial": f"{vin}-tcu",
    }


def _updates(v: dict) -> bool:
    """Cycles of the real Primary until it runs :data:`TARGET` (at most four)."""
    for _ in range(4):
        result = Primary(v["cfg"]).run_cycle()
        assert result.error is None, result.error
        installed = Primary(v["cfg"]).state.load_cycle().installed.get(v["serial"])
        if installed is not None and installed.path == TARGET:
            return True
    return False


def _manifest(v: dict) -> bytes:
    """A fresh, correctly signed manifest of vehicle ``v``: only the binding may refuse it."""
    key = PrivateKey.from_pem((v["cfg"].key_file).read_bytes())
    now = datetime.now(UTC).replace(microsecond=0)
    installed = InstalledImage("factory.bin", 4, {"sha256": "ab" * 32})
    report = SignedManifest(EcuVersionReport(v["serial"], installed, now, nonce=os.urandom(16)))
    report.sign(key)
    return build_vehicle_manifest(v["vin"], v["serial"], [report], key).to_bytes()


def _stored_manifests(ddir: Path) -> int:
    url = json.loads((ddir / "director.json").read_text())["db_url"]
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM manifests").scalar_one())
    finally:
        engine.dispose()


def _scrape(base: str, **client: object) -> str:
    r = httpx.get(f"{base}/metrics", timeout=30, **client)  # type: ignore[arg-type]
    assert r.status_code == 200
    return r.text


def _refused(base: str, vin: str, manifest: bytes, **client: object) -> None:
    """Vehicle ``vin``'s metadata and manifest upload both refused (403) for this client."""
    with httpx.Client(base_url=base, timeout=30, **client) as c:  # type: ignore[arg-type]
        for name in ("timestamp.json", "1.root.json", "2.targets.json"):
            r = c.get(f"/vehicles/{vin}/metadata/{name}")
            assert r.status_code == 403, (name, r.text)
            assert r.json()["error"] == "forbidden" and r.json()["request_id"]
        r = c.post(f"/vehicles/{vin}/manifest", content=manifest)
        assert r.status_code == 403, r.text


def test_a_vehicle_updates_over_mtls_and_nothing_else_gets_its_metadata(oem):
    a, b = _vehicle(oem, VIN_A), _vehicle(oem, VIN_B)
    r = oem["admin"].post(
        f"/api/v1/vehicles/{VIN_A}/assignments",
        json={"assignments": [{"ecu": a["serial"], "target": TARGET}]},
    )
    assert r.status_code == 201, r.text
    assert _updates(a)  # the whole update went over mutual TLS
    url, ca = oem["director"].url, oem["ca"]
    own = {"verify": tls_context(ca, a["cert"], a["key"])}
    with httpx.Client(base_url=url, timeout=30, **own) as c:  # type: ignore[arg-type]
        assert c.get(f"/vehicles/{VIN_A}/metadata/timestamp.json").status_code == 200
    before = _scrape(url, verify=tls_context(ca))
    stored = _stored_manifests(oem["ddir"])
    manifest = _manifest(a)
    # no certificate; vehicle B's certificate for A's routes
    _refused(url, VIN_A, manifest, verify=tls_context(ca))
    _refused(url, VIN_A, manifest, verify=tls_context(ca, b["cert"], b["key"]))
    # a certificate naming A from a CA the Director does not trust: no handshake at all
    cert, key = foreign_cert(VIN_A, oem["tmp"] / "foreign")
    with pytest.raises(httpx.TransportError):
        httpx.get(
            f"{url}/vehicles/{VIN_A}/metadata/timestamp.json",
            verify=tls_context(ca, cert, key),
            timeout=30,
        )
    # A's own certificate, revoked at run time: refused from the next request on
    r = oem["admin"].delete(f"/api/v1/certificates/{a['fp']}")
    assert r.status_code == 200 and r.json()["revoked_at"]
    _refused(url, VIN_A, manifest, verify=tls_context(ca, a["cert"], a["key"]))
    assert Primary(a["cfg"]).run_cycle().error is not None
    # none of it reached the manifest code or the database
    after = _scrape(url, verify=tls_context(ca))
    assert metric(after, "uptane_manifest_seconds_count") == metric(
        before, "uptane_manifest_seconds_count"
    )
    refused = {
        reason: metric(after, "uptane_vehicle_refused_total", reason=reason)
        - metric(before, "uptane_vehicle_refused_total", reason=reason)
        for reason in ("none", "other-vehicle", "revoked")
    }
    # four requests each; the Primary's refused cycle adds its own with the revoked one
    assert refused["none"] == refused["other-vehicle"] == 4 and refused["revoked"] >= 5, refused
    assert _stored_manifests(oem["ddir"]) == stored
    # B still works; the audit log has the revocation
    with httpx.Client(base_url=url, timeout=30, verify=tls_context(ca, b["cert"], b["key"])) as c:
        assert c.get(f"/vehicles/{VIN_B}/metadata/timestamp.json").status_code == 200
    audit = oem["admin"].get("/api/v1/audit").json()["items"]
    assert audit[0]["action"] == f"DELETE /api/v1/certificates/{a['fp']}"


def test_behind_a_proxy_the_header_binds_only_from_the_proxy_address(oem):
    a, b = _vehicle(oem, VIN_A), _vehicle(oem, VIN_B)
    oem["director"].stop()
    # plain HTTP behind a TLS-terminating proxy at 127.0.0.2
    set_tls(
        oem["ddir"],
        {
            "vehicle_auth": "mtls",
            "trusted_proxies": ["127.0.0.2"],
            "client_cert_header": "x-client-cert",
        },
    )
    node = Service("director.director_cli", oem["ddir"], oem["tmp"] / "proxied.log")
    try:
        proxy = {"transport": httpx.HTTPTransport(local_address="127.0.0.2")}
        manifest = _manifest(a)
        with httpx.Client(base_url=node.url, timeout=30, **proxy) as c:  # type: ignore[arg-type]
            header = {"x-client-cert": escaped(a["cert"])}
            assert (
                c.get(f"/vehicles/{VIN_A}/metadata/timestamp.json", headers=header).status_code
                == 200
            )
            r = c.post(f"/vehicles/{VIN_A}/manifest", content=manifest, headers=header)
            assert r.status_code == 200, r.text
            wrong = {"x-client-cert": escaped(b["cert"])}
            assert (
                c.get(f"/vehicles/{VIN_A}/metadata/timestamp.json", headers=wrong).status_code
                == 403
            )
            assert c.get(f"/vehicles/{VIN_A}/metadata/timestamp.json").status_code == 403
        # the same header from another address (not the proxy) is ignored
        _refused(node.url, VIN_A, _manifest(a), headers={"x-client-cert": escaped(a["cert"])})
    finally:
        node.stop()


@pytest.mark.parametrize("public_read", [True, False])
def test_the_image_repository_over_tls_is_public_unless_configured(
    tmp_path: Path, now, public_read
):
    from director.image_config import ImageRepoConfig
    from director.tls import Ca, key_pem, new_key, pem

    image_dir = make_image_repo(tmp_path, now)
    ca = Ca.create("OEM test CA")
    server_key = new_key()
    server = ca.issue("127.0.0.1", server_key.public_key(), client=False, hosts=("127.0.0.1",))
    vehicle_key = new_key()
    vehicle = ca.issue("ANYCAR", vehicle_key.public_key())
    for name, data in {
        "ca.pem": pem(ca.cert).encode(),
        "server.pem": pem(server).encode(),
        "server.key": key_pem(server_key),
        "car.pem": pem(vehicle).encode(),
        "car.key": key_pem(vehicle_key),
    }.items():
        (tmp_path / name).write_bytes(data)
    cfg = ImageRepoConfig.load(image_dir)
    cfg.tls = {
        "cert": str(tmp_path / "server.pem"),
        "key": str(tmp_path / "server.key"),
        "client_ca": str(tmp_path / "ca.pem"),
        "public_read": public_read,
    }
    cfg.save(image_dir)
    service = TlsService(
        image_dir, tmp_path / "images.log", tmp_path / "ca.pem", module="director.image_cli"
    )
    try:
        anyone = httpx.Client(base_url=service.url, verify=tls_context(tmp_path / "ca.pem"))
        car = httpx.Client(
            base_url=service.url,
            verify=tls_context(tmp_path / "ca.pem", tmp_path / "car.pem", tmp_path / "car.key"),
        )
        r = anyone.get("/metadata/timestamp.json")
        assert r.status_code == (200 if public_read else 403), r.text
        assert car.get("/metadata/timestamp.json").status_code == 200
        assert car.get("/targets/nope.bin").status_code == 404
        # uploads go by token, with or without a client certificate
        assert anyone.get("/api/v1/status").status_code == 401
        assert "serving https://" in service.text()
    finally:
        service.stop()
