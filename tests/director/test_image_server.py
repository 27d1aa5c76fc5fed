"""The Image repository service through HTTP (§5.3.1): public download from the cache,
authorised upload checked against the uploader's delegation, automatic re-signing."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from test_image_repo import _cli, supplier_key
from tuf.ngclient import Updater

from director.image_repo import ImageRepository, default_offline_dir
from director.image_server import create_app
from uptane.keys import PrivateKey
from uptane.limits import Limits
from uptane.metadata import DER, JSON, Metadata, TargetFile, Targets


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def repo(tmp_path: Path, now: datetime):
    d = tmp_path / "repo"
    token = ImageRepository.init(d, default_offline_dir(d), now)
    img = tmp_path / "fw.bin"
    img.write_bytes(b"brakes 1.0" * 300)
    _cli("add-target", d, img, "--path", "brakes/fw-1.0.bin", "--hardware-id", "brk-v1")
    _cli("sign", d)
    key, pub = supplier_key(tmp_path)
    _cli("delegate", d, "acme", "--path", "acme/*", "--hardware-id", "acme-ecu", "--key", pub)
    acme_token = ImageRepository(d, now).add_token("acme")
    key_file = pub.with_name("acme.pem")
    return {"dir": d, "admin": token, "acme": acme_token, "acme_key": key, "key_file": key_file}


def _entry(stored: dict) -> dict:
    """The targets entry of what an image upload stored: its length and hashes (the answer
    also names the path, which a targets entry does not carry)."""
    return {k: v for k, v in stored.items() if k != "path"}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _supplier_md(
    key: PrivateKey, targets: list[TargetFile], version: int, now: datetime, enc: str = JSON
) -> bytes:
    t = Targets(version=version, expires=now + timedelta(days=30))
    for tf in targets:
        t.targets[tf.path] = tf
    md = Metadata(t, encoding=enc)
    md.sign(key)
    return md.to_bytes()


def _ngclient(base: str, root: bytes, tmp: Path) -> Updater:
    mdir, tdir = tmp / "ng-meta", tmp / "ng-targets"
    mdir.mkdir()
    tdir.mkdir()
    (mdir / "root.json").write_bytes(root)
    return Updater(
        metadata_dir=str(mdir),
        metadata_base_url=f"{base}/metadata/",
        target_dir=str(tdir),
        target_base_url=f"{base}/targets/",
        bootstrap=root,
    )


def test_5_3_1_supplier_upload_then_ngclient_downloads_from_the_service(
    repo, serve_app, tmp_path: Path, now
):
    base = serve_app(create_app(repo["dir"]))
    with httpx.Client(base_url=base, timeout=60) as c:
        data = b"acme tcu 2.0" * 100
        r = c.put("/api/images/acme/tcu-2.0.bin", content=data, headers=_auth(repo["acme"]))
        assert r.status_code == 201, r.text
        tf = TargetFile.from_dict("acme/tcu-2.0.bin", _entry(r.json()), Limits())
        tf.hardware_ids = ["acme-ecu"]
        v = c.get("/api/status", headers=_auth(repo["acme"])).json()["roles"]["acme"] + 1
        r = c.put(
            "/api/metadata/acme.der",
            content=_supplier_md(repo["acme_key"], [tf], v, now, DER),
            headers=_auth(repo["acme"]),
        )
        assert r.status_code == 202, r.text  # waits for the JSON encoding
        assert r.json() == {"role": "acme", "version": v, "published": False}
        r = c.put(
            "/api/metadata/acme.json",
            content=_supplier_md(repo["acme_key"], [tf], v, now),
            headers=_auth(repo["acme"]),
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"role": "acme", "version": v, "published": True}
        assert c.get(f"/metadata/{v}.acme.der").status_code == 200
        root = c.get("/metadata/1.root.json").content
    updater = _ngclient(base, root, tmp_path)
    updater.refresh()
    for path, expected in (("acme/tcu-2.0.bin", data), ("brakes/fw-1.0.bin", b"brakes 1.0" * 300)):
        info = updater.get_targetinfo(path)
        assert info is not None, path
        assert Path(updater.download_target(info)).read_bytes() == expected


def _snapshot_state(c: httpx.Client, token: str) -> tuple[dict, bytes]:
    return c.get("/api/status", headers=_auth(token)).json(), c.get(
        "/metadata/timestamp.json"
    ).content


def test_5_3_1_uploads_outside_the_delegation_get_403_and_change_nothing(repo, serve_app, now):
    base = serve_app(create_app(repo["dir"]))
    key = repo["acme_key"]
    with httpx.Client(base_url=base, timeout=60) as c:
        before = _snapshot_state(c, repo["admin"])
        v = before[0]["roles"]["acme"] + 1
        # image outside the delegated paths
        r = c.put("/api/images/brakes/evil.bin", content=b"evil", headers=_auth(repo["acme"]))
        assert r.status_code == 403
        ok = TargetFile.from_dict(
            "acme/ok.bin",
            c.put("/api/images/acme/ok.bin", content=b"ok", headers=_auth(repo["acme"])).json(),
            Limits(),
        )
        ok.hardware_ids = ["acme-ecu"]
        evil = TargetFile.from_data("brakes/fw-1.0.bin", b"ok", hardware_ids=["acme-ecu"])
        wrong_hw = TargetFile.from_data("acme/ok.bin", b"ok", hardware_ids=["brk-v1"])
        cases = [
            ("acme.json", _supplier_md(key, [evil], v, now)),  # path not delegated
            ("acme.json", _supplier_md(key, [wrong_hw], v, now)),  # hardware id not delegated
            ("acme.json", _supplier_md(PrivateKey.generate(), [ok], v, now)),  # wrong key
            ("targets.json", _supplier_md(key, [ok], 99, now)),  # another role's metadata
        ]
        for name, body in cases:
            r = c.put(f"/api/metadata/{name}", content=body, headers=_auth(repo["acme"]))
            assert r.status_code == 403, (name, r.text)
            assert r.json()["detail"]
        # the OEM admin cannot push top-level targets that the offline key did not sign
        r = c.put(
            "/api/metadata/targets.json",
            content=_supplier_md(key, [ok], 99, now),
            headers=_auth(repo["admin"]),
        )
        assert r.status_code == 403
        assert _snapshot_state(c, repo["admin"]) == before


def test_unauthenticated_writes_get_401(repo, serve_app):
    base = serve_app(create_app(repo["dir"]))
    with httpx.Client(base_url=base, timeout=60) as c:
        assert c.put("/api/images/acme/x.bin", content=b"x").status_code == 401
        r = c.put("/api/images/acme/x.bin", content=b"x", headers=_auth("not-a-token"))
        assert r.status_code == 401
        assert c.put("/api/metadata/acme.json", content=b"{}").status_code == 401
        assert c.get("/api/status").status_code == 401


def test_bad_input_gets_400_413_and_traversal_is_refused(repo, serve_app, now):
    base = serve_app(create_app(repo["dir"], max_image_upload=1024))
    with httpx.Client(base_url=base, timeout=60) as c:
        h = _auth(repo["acme"])
        r = c.put("/api/metadata/acme.json", content=b"{not json", headers=h)
        assert r.status_code == 400 and "JSON" in r.json()["detail"]
        r = c.put("/api/metadata/acme.json", content=b'{"signed": {}}', headers=h)
        assert r.status_code == 400
        big = b" " * (Limits().bytes_for_role("acme") + 1)
        assert c.put("/api/metadata/acme.json", content=big, headers=h).status_code == 413
        assert c.put("/api/images/acme/big.bin", content=b"x" * 2048, headers=h).status_code == 413
        for bad in ("acme/..%2F..%2Fetc", "acme/%2e%2e/x"):
            r = c.put(f"/api/images/{bad}", content=b"x", headers=h)
            assert r.status_code in (400, 403, 404), bad
        assert not list((repo["dir"].parent).glob("etc"))
        assert c.get("/targets/a%2F..%2F..%2Fonline-keys%2Ftimestamp.pem").status_code == 400
        assert c.get("/targets/brakes/fw-1.0.bin").status_code == 404  # only HASH.name
        assert c.get("/metadata/nope.json").status_code == 404


def test_timestamp_and_snapshot_are_resigned_before_expiry_and_offline_changes_picked_up(
    repo, now, tmp_path
):
    clock = Clock(now)
    app = create_app(repo["dir"], clock=clock)
    service = app.state.service
    ts0 = json.loads(service.metadata["timestamp.json"])["signed"]
    snap0 = service.repo.builder.snapshot.version
    assert service.tick() is False  # nothing near expiry
    clock.now = now + timedelta(hours=13)  # past half of the 1-day timestamp lifetime
    assert service.tick() is True
    ts1 = json.loads(service.metadata["timestamp.json"])["signed"]
    assert ts1["version"] > ts0["version"] and ts1["expires"] > ts0["expires"]
    clock.now = now + timedelta(days=4)  # past half of the 7-day snapshot lifetime
    assert service.tick() is True
    assert service.repo.builder.snapshot.version > snap0
    assert f"{service.repo.builder.snapshot.version}.snapshot.json" in service.metadata
    # an offline `sign` is served after the next tick
    img = tmp_path / "fw2.bin"
    img.write_bytes(b"brakes 2.0")
    _cli("add-target", repo["dir"], img, "--path", "brakes/fw-2.0.bin", "--hardware-id", "brk-v1")
    _cli("sign", repo["dir"])
    assert service.tick() is True
    v = service.repo.builder.targets.version
    assert (
        "brakes/fw-2.0.bin"
        in json.loads(service.metadata[f"{v}.targets.json"])["signed"]["targets"]
    )


def test_5_3_1_oem_uploads_offline_signed_top_level_targets(repo, serve_app, now, tmp_path):
    """The top-level targets key never reaches the server: the OEM signs offline and uploads
    the signed metadata; the server checks it against root's targets keys."""
    base = serve_app(create_app(repo["dir"]))
    admin = _auth(repo["admin"])
    targets_key = PrivateKey.from_pem(
        (default_offline_dir(repo["dir"]) / "targets.pem").read_bytes()
    )
    with httpx.Client(base_url=base, timeout=60) as c:
        data = b"brakes 3.0" * 77
        r = c.put("/api/images/brakes/fw-3.0.bin", content=data, headers=admin)
        assert r.status_code == 201
        tf = TargetFile.from_dict("brakes/fw-3.0.bin", _entry(r.json()), Limits())
        tf.hardware_ids, tf.release_counter = ["brk-v1"], 3
        v = c.get("/api/status", headers=admin).json()["roles"]["targets"]
        current = json.loads(c.get(f"/metadata/{v}.targets.json").content)["signed"]
        model = Targets.from_dict(current, Limits())
        model.version += 1
        model.expires = now + timedelta(days=60)
        model.targets[tf.path] = tf
        statuses = []
        for enc in (DER, JSON):
            md = Metadata(model, encoding=enc)
            md.sign(targets_key)
            r = c.put(f"/api/metadata/targets.{enc}", content=md.to_bytes(), headers=admin)
            statuses.append(r.status_code)
        assert statuses == [202, 200]
        listed = json.loads(c.get(f"/metadata/{v + 1}.targets.json").content)["signed"]["targets"]
        assert "brakes/fw-3.0.bin" in listed and "brakes/fw-1.0.bin" in listed
        # the supplier's token cannot do the same
        r = c.put("/api/metadata/targets.json", content=md.to_bytes(), headers=_auth(repo["acme"]))
        assert r.status_code == 403


def test_5_3_1_supplier_release_command_publishes_through_the_service(
    repo, serve_app, tmp_path, now
):
    from director import image_cli

    base = serve_app(create_app(repo["dir"]))
    key_file = repo["key_file"]
    token_file = tmp_path / "acme.token"
    token_file.write_text(repo["acme"])
    fw = tmp_path / "gw.bin"
    fw.write_bytes(b"acme gateway 8" * 64)
    args = ["supplier-release", base, str(fw), "--role", "acme", "--key", str(key_file)]
    args += ["--token-file", str(token_file), "--hardware-id", "acme-ecu"]
    assert image_cli.main([*args, "--path", "acme/gw-8.bin", "--release-counter", "8"]) == 0
    # outside the delegation: refused by the service, reported by the command
    assert image_cli.main([*args, "--path", "brakes/gw-8.bin"]) == 2
    with httpx.Client(base_url=base, timeout=60) as c:
        v = c.get("/api/status", headers=_auth(repo["acme"])).json()["roles"]["acme"]
        listed = json.loads(c.get(f"/metadata/{v}.acme.json").content)["signed"]["targets"]
    assert list(listed) == ["acme/gw-8.bin"]
    assert listed["acme/gw-8.bin"]["custom"]["releaseCounter"] == 8
