"""The Image repository's offline flow (§5.3.1): init, stage, sign, delegate, rotate the
root, publish a static repository that python-tuf's ngclient reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata as TufMetadata
from tuf.ngclient import Updater

from director import image_cli
from director.image_repo import Forbidden, ImageRepository, default_offline_dir
from uptane.keys import PrivateKey
from uptane.limits import Limits
from uptane.metadata import JSON, Metadata, TargetFile, Targets, decode

IMAGE = b"brake controller firmware 1.0\n" * 100


def _cli(*args: str) -> None:
    assert image_cli.main([str(a) for a in args]) == 0


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    d = tmp_path / "repo"
    _cli("init", d)
    return d


def _ngclient(base: str, root: bytes, tmp: Path) -> Updater:
    mdir = tmp / "client-metadata"
    mdir.mkdir()
    (mdir / "root.json").write_bytes(root)
    tdir = tmp / "client-targets"
    tdir.mkdir()
    return Updater(
        metadata_dir=str(mdir),
        metadata_base_url=f"{base}/metadata/",
        target_dir=str(tdir),
        target_base_url=f"{base}/targets/",
        bootstrap=root,
    )


def test_5_3_1_init_keeps_offline_keys_outside_the_repository(repo_dir: Path):
    offline = default_offline_dir(repo_dir)
    assert (offline / "root.pem").exists() and (offline / "targets.pem").exists()
    assert sorted(p.name for p in (repo_dir / "online-keys").iterdir()) == [
        "snapshot.pem",
        "timestamp.pem",
    ]
    assert not list(repo_dir.rglob("root.pem")) and not list(repo_dir.rglob("targets.pem"))
    assert (offline / "root.pem").stat().st_mode & 0o077 == 0
    names = {p.name for p in (repo_dir / "metadata").iterdir()}
    assert {"1.root.json", "1.targets.json", "1.snapshot.json", "timestamp.json"} <= names


def test_5_3_1_offline_flow_then_ngclient_downloads_the_target(
    repo_dir: Path, tmp_path: Path, static_server, now
):
    img = tmp_path / "fw.bin"
    img.write_bytes(IMAGE)
    _cli(
        "add-target",
        repo_dir,
        img,
        "--path",
        "brakes/fw-1.0.bin",
        "--hardware-id",
        "brk-v1",
        "--release-counter",
        "3",
    )
    # staged only: not yet in signed metadata
    repo = ImageRepository(repo_dir, now)
    assert "brakes/fw-1.0.bin" not in repo.builder.targets.targets
    _cli("sign", repo_dir)
    out = tmp_path / "static"
    _cli("publish", repo_dir, out)
    assert (out / "metadata" / "2.targets.json").exists()
    assert (out / "metadata" / "timestamp.json").exists()
    digest = json.loads((out / "metadata" / "2.targets.json").read_bytes())["signed"]["targets"][
        "brakes/fw-1.0.bin"
    ]["hashes"]["sha256"]
    assert (out / "targets" / "brakes" / f"{digest}.fw-1.0.bin").read_bytes() == IMAGE

    base = static_server(out)
    updater = _ngclient(base, (out / "metadata" / "1.root.json").read_bytes(), tmp_path)
    updater.refresh()
    info = updater.get_targetinfo("brakes/fw-1.0.bin")
    assert info is not None
    assert info.custom["hardwareIds"] == ["brk-v1"] and info.custom["releaseCounter"] == 3
    path = updater.download_target(info)
    assert Path(path).read_bytes() == IMAGE
    # python-tuf's own Metadata API verifies what we signed
    tuf_root = TufMetadata.from_bytes((out / "metadata" / "1.root.json").read_bytes())
    tuf_targets = TufMetadata.from_bytes((out / "metadata" / "2.targets.json").read_bytes())
    tuf_root.verify_delegate("targets", tuf_targets)


def test_5_2_7_add_target_refuses_path_traversal(repo_dir: Path, tmp_path: Path):
    img = tmp_path / "x.bin"
    img.write_bytes(b"x")
    for bad in ("../etc/passwd", "/abs", "a/../b", "a\x00b", "a\\b"):
        assert (
            image_cli.main(
                ["add-target", str(repo_dir), str(img), "--path", bad, "--hardware-id", "h"]
            )
            == 2
        )
    assert json.loads((repo_dir / "staged.json").read_text()) == []


def test_sign_without_offline_key_is_refused(repo_dir: Path, tmp_path: Path):
    assert image_cli.main(["sign", str(repo_dir), "--offline-keys", str(tmp_path / "none")]) == 2


def test_5_4_4_3_rotate_root_signed_by_old_and_new_keys(
    repo_dir: Path, tmp_path: Path, static_server
):
    offline = default_offline_dir(repo_dir)
    old_key = PrivateKey.from_pem((offline / "root.pem").read_bytes())
    _cli("rotate-root", repo_dir)
    new_key = PrivateKey.from_pem((offline / "root.pem").read_bytes())
    assert new_key.keyid != old_key.keyid
    md2 = decode((repo_dir / "metadata" / "2.root.json").read_bytes(), Limits(), role_type="root")
    assert {s.keyid for s in md2.signatures} == {old_key.keyid, new_key.keyid}
    assert md2.signed.roles["root"].keyids == [new_key.keyid]
    # a client that trusts version 1 follows the rotation
    out = tmp_path / "static"
    _cli("publish", repo_dir, out)
    updater = _ngclient(
        static_server(out), (out / "metadata" / "1.root.json").read_bytes(), tmp_path
    )
    updater.refresh()
    assert updater._trusted_set.root.version == 2
    # and the next rotation is signed by the key of version 2
    _cli("rotate-root", repo_dir)
    md3 = decode((repo_dir / "metadata" / "3.root.json").read_bytes(), Limits(), role_type="root")
    assert new_key.keyid in {s.keyid for s in md3.signatures}


def supplier_key(where: Path, role: str = "acme") -> tuple[PrivateKey, Path]:
    """The supplier makes its key pair on its own side (``keygen``, in its own directory,
    never the OEM's); the OEM gets the public key file only."""
    private = where / f"{role}-supplier" / f"{role}.pem"
    _cli("keygen", private, "--unencrypted")
    return PrivateKey.from_pem(private.read_bytes()), private.with_name(f"{role}.pub.json")


def _supplier_metadata(
    repo: ImageRepository, role: str, key: PrivateKey, targets: list[TargetFile], version: int
) -> bytes:
    return _signed(repo, key, targets, version)[JSON]


def _signed(
    repo: ImageRepository, key: PrivateKey, targets: list[TargetFile], version: int
) -> dict[str, bytes]:
    """A supplier's targets metadata, signed in every encoding the repository publishes."""
    t = Targets(version=version, expires=repo.builder.targets.expires)
    for tf in targets:
        t.targets[tf.path] = tf
    out = {}
    for enc in repo.builder.encodings:
        md = Metadata(t, encoding=enc)
        md.sign(key)
        out[enc] = md.to_bytes()
    return out


def test_5_3_1_delegated_supplier_target_reaches_ngclient(
    repo_dir: Path, tmp_path: Path, static_server, now
):
    key, pub = supplier_key(tmp_path)
    # the OEM makes no key for the supplier: a delegation without its public key is refused
    args = ["delegate", str(repo_dir), "acme", "--path", "acme/*", "--hardware-id", "acme-ecu"]
    assert image_cli.main(args) == 2
    _cli(
        "delegate", repo_dir, "acme", "--path", "acme/*", "--hardware-id", "acme-ecu", "--key", pub
    )
    repo = ImageRepository(repo_dir, now)
    data = b"acme telematics 2.0" * 50
    tf = repo.upload_image("acme", "acme/tcu-2.0.bin", data)
    tf.hardware_ids = ["acme-ecu"]
    tf.release_counter = 1
    assert not repo.builder.has_role("acme")  # delegated; listed once the supplier signs
    v = 1
    files = _signed(repo, key, [tf], v)
    results = [repo.upload_metadata("acme", "acme", data, enc, now) for enc, data in files.items()]
    assert results[-1] == (v, True)
    assert all(done is False for _, done in results[:-1])
    out = tmp_path / "static"
    repo.publish(out)
    updater = _ngclient(
        static_server(out), (out / "metadata" / "1.root.json").read_bytes(), tmp_path
    )
    updater.refresh()
    info = updater.get_targetinfo("acme/tcu-2.0.bin")
    assert info is not None
    assert Path(updater.download_target(info)).read_bytes() == data


def test_5_3_1_supplier_outside_its_paths_or_unsigned_is_forbidden(
    repo_dir: Path, tmp_path: Path, now
):
    key, pub = supplier_key(tmp_path)
    _cli(
        "delegate", repo_dir, "acme", "--path", "acme/*", "--hardware-id", "acme-ecu", "--key", pub
    )
    assert not list(default_offline_dir(repo_dir).rglob("acme*"))  # no supplier key at the OEM
    repo = ImageRepository(repo_dir, now)
    before = sorted(p.name for p in (repo_dir / "metadata").iterdir())
    v0 = 0
    with pytest.raises(Forbidden):
        repo.upload_image("acme", "brakes/evil.bin", b"evil")
    ok = repo.upload_image("acme", "acme/ok.bin", b"ok")
    ok.hardware_ids = ["acme-ecu"]
    # a target outside the delegated paths, in otherwise valid metadata
    evil = TargetFile.from_data("brakes/evil.bin", b"ok", hardware_ids=["acme-ecu"])
    with pytest.raises(Forbidden):
        repo.upload_metadata(
            "acme", "acme", _supplier_metadata(repo, "acme", key, [evil], v0 + 1), JSON, now
        )
    # a hardware id the delegation does not allow
    wrong_hw = TargetFile.from_data("acme/ok.bin", b"ok", hardware_ids=["brk-v1"])
    with pytest.raises(Forbidden):
        repo.upload_metadata(
            "acme", "acme", _supplier_metadata(repo, "acme", key, [wrong_hw], v0 + 1), JSON, now
        )
    # signed by a key that is not the role's
    with pytest.raises(Forbidden, match="valid signature"):
        repo.upload_metadata(
            "acme",
            "acme",
            _supplier_metadata(repo, "acme", PrivateKey.generate(), [ok], v0 + 1),
            JSON,
            now,
        )
    # another role's metadata
    with pytest.raises(Forbidden):
        repo.upload_metadata(
            "acme", "targets", _supplier_metadata(repo, "acme", key, [ok], v0 + 1), JSON, now
        )
    assert sorted(p.name for p in (repo_dir / "metadata").iterdir()) == before
    assert not repo.builder.has_role("acme")


def test_concurrent_writers_never_issue_a_version_twice(repo_dir: Path, tmp_path: Path, now):
    """An offline command loaded before the server re-signed still continues from what is
    on disk: each change happens under the directory lock on freshly loaded state."""
    from datetime import timedelta

    from director.imageview import DirectorySource
    from uptane.trust import RepositoryTrust

    stale_offline = ImageRepository(repo_dir, now, offline_dir=default_offline_dir(repo_dir))
    server = ImageRepository(repo_dir, now)
    later = now + timedelta(days=4)  # timestamp and snapshot both due
    assert server.refresh(later)
    ts_server = server.builder.timestamp.version
    img = tmp_path / "fw.bin"
    img.write_bytes(b"new firmware")
    stale_offline.stage_target("brakes/fw-9.bin", img.read_bytes(), ["brk-v1"], 9)
    stale_offline.sign(later)
    assert stale_offline.builder.timestamp.version > ts_server
    trust = RepositoryTrust("image", (repo_dir / "metadata" / "1.root.json").read_bytes(), Limits())
    src = DirectorySource(repo_dir / "metadata")
    trust.refresh(src, later)
    assert trust.find_target("brakes/fw-9.bin", src, later).release_counter == 9
