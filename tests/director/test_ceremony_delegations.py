"""Delegation management of issue 16 through the Image repository's own code: thresholds
over several supplier keys, TAP 3 multi-role delegations, hardware-id restrictions and the
terminating flag, delegations made in a targets ceremony when the targets keys are held by
several people, and lifetimes per role with online roles re-signed before they expire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from director import director_cli, image_cli
from director.ceremony import BelowThreshold, Pending
from director.image_keys import publish, rotate_offline
from director.image_repo import Forbidden, ImageRepository, default_offline_dir
from director.image_server import ImageService
from director.imageview import DirectorySource
from uptane.errors import TargetNotFound
from uptane.keys import PrivateKey
from uptane.limits import Limits
from uptane.metadata import Metadata, Targets
from uptane.trust import RepositoryTrust

NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture
def repo(tmp_path: Path) -> ImageRepository:
    d = tmp_path / "repo"
    ImageRepository.init(d, default_offline_dir(d), NOW, expiry_days={"timestamp": 0.25})
    return ImageRepository(d, NOW, offline_dir=default_offline_dir(d))


def upload(repo: ImageRepository, role: str, keys: list[PrivateKey], n: int, hw: str) -> None:
    path, data = f"{role}/fw-{n}.bin", b"firmware %d of %s" % (n, role.encode())
    tf = repo.upload_image(role, path, data)
    tf.hardware_ids, tf.release_counter = [hw], n
    cur = repo.builder.role(role).version if repo.builder.has_role(role) else 0
    model = Targets(version=cur + 1, expires=NOW + timedelta(days=30))
    model.targets[path] = tf
    for enc in repo.builder.encodings:
        md = Metadata(model, encoding=enc)
        for k in keys:
            md.sign(k)
        repo.upload_metadata(role, role, md.to_bytes(), enc, NOW)


def client(repo: ImageRepository) -> tuple[RepositoryTrust, DirectorySource]:
    d = repo.paths.metadata
    trust = RepositoryTrust("image", (d / "1.root.json").read_bytes(), Limits.primary())
    src = DirectorySource(d)
    trust.refresh(src, NOW)
    return trust, src


def test_a_supplier_role_signed_by_2_of_3_keys_with_hardware_ids(repo: ImageRepository) -> None:
    keys = [PrivateKey.generate() for _ in range(3)]
    out, _tokens = repo.delegate(
        "acme", ["acme/*"], ["acme-hw"], NOW, keys=[k.key for k in keys], threshold=2
    )
    assert out.published
    with pytest.raises(Forbidden, match="valid signature"):
        upload(repo, "acme", keys[:1], 1, "acme-hw")
    upload(repo, "acme", keys[1:], 1, "acme-hw")
    with pytest.raises(Forbidden, match="hardware"):
        upload(repo, "acme", keys[:2], 2, "other-hw")
    trust, src = client(repo)
    d = trust.targets.signed.delegations.roles[0]
    assert (d.threshold, len(d.keyids), d.terminating, d.hardware_ids) == (2, 3, True, ["acme-hw"])
    assert trust.find_target("acme/fw-1.bin", src, NOW, hardware_id="acme-hw").length > 0
    with pytest.raises(TargetNotFound):
        trust.find_target("acme/fw-1.bin", src, NOW, hardware_id="other-hw")


def test_tap3_multi_role_delegation_needs_the_members_to_agree(repo: ImageRepository) -> None:
    ka, kb = PrivateKey.generate(), PrivateKey.generate()
    _out, tokens = repo.delegate(
        "pair",
        ["pair/*"],
        [],
        NOW,
        members=[("pair-a", [ka.key], 1), ("pair-b", [kb.key], 1)],
        agree=2,
        terminating=False,
    )
    assert set(tokens) == {"pair-a", "pair-b"}

    def both(n: int, role: str, key: PrivateKey) -> None:
        path, data = f"pair/fw-{n}.bin", b"paired firmware %d" % n
        tf = repo.upload_image(role, path, data)
        tf.hardware_ids, tf.release_counter = ["hw"], n
        cur = repo.builder.role(role).version if repo.builder.has_role(role) else 0
        model = Targets(version=cur + 1, expires=NOW + timedelta(days=30))
        model.targets[path] = tf
        for enc in repo.builder.encodings:
            md = Metadata(model, encoding=enc)
            md.sign(key)
            repo.upload_metadata(role, role, md.to_bytes(), enc, NOW)

    both(1, "pair-a", ka)
    trust, src = client(repo)
    with pytest.raises(TargetNotFound, match="fewer than 2 roles agree"):
        trust.find_target("pair/fw-1.bin", src, NOW)
    both(1, "pair-b", kb)
    trust, src = client(repo)
    assert trust.find_target("pair/fw-1.bin", src, NOW).release_counter == 1
    entry = trust.targets.signed.delegations.roles[0]
    assert entry.min_roles_in_agreement == 2 and not entry.terminating
    # the service shows the delegations (changing them needs the offline targets keys)
    from fastapi.testclient import TestClient

    from director.image_server import create_app

    admin = repo.add_token("admin")
    api = TestClient(create_app(repo.paths.root))
    shown = api.get("/api/delegations", headers={"Authorization": f"Bearer {admin}"}).json()
    (pair,) = shown["roles"]
    assert pair["agree"] == 2 and [m["version"] for m in pair["members"]] == [1, 1]
    assert shown["bins"] is None
    assert api.get("/api/delegations").status_code == 401


def test_a_delegation_under_a_2_of_2_targets_is_signed_in_a_ceremony(
    repo: ImageRepository, tmp_path: Path
) -> None:
    t1, t2 = PrivateKey.generate(), PrivateKey.generate()
    outs = rotate_offline(repo, NOW, "targets", [t1.key, t2.key], threshold=2)
    assert [o.published for o in outs] == [False, False]  # the new keys are not held here
    root_p, targets_p = (Pending.load(o.pending) for o in outs if o.pending)
    for k in (t1, t2):
        targets_p.sign(k, "holder")
    publish(repo, NOW, root=root_p, targets=targets_p)
    supplier = PrivateKey.generate()
    out, _ = repo.delegate("acme", ["acme/*"], [], NOW, keys=[supplier.key])
    assert not out.published and out.pending is not None  # needs 2 of the targets holders
    pending = Pending.load(out.pending)
    pending.sign(t1, "t1")
    with pytest.raises(BelowThreshold, match="1 of 2"):
        publish(repo, NOW, targets=pending)
    pending.sign(t2, "t2")
    publish(repo, NOW, targets=pending)
    upload(repo, "acme", [supplier], 1, "hw")
    trust, src = client(repo)
    assert trust.find_target("acme/fw-1.bin", src, NOW).release_counter == 1


def test_lifetimes_per_role_and_online_roles_re_signed_before_they_expire(
    repo: ImageRepository, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    b = repo.builder
    assert b.timestamp.expires == NOW + timedelta(hours=6)  # init --expiry timestamp=0.25
    assert image_cli.main(["lifetimes", str(repo.paths.root), "--set", "snapshot=2"]) == 0
    assert "snapshot: 2 days" in capsys.readouterr().out
    clock = [NOW]
    service = ImageService(repo.paths.root, clock=lambda: clock[0])
    ts = service.repo.builder.timestamp.version
    clock[0] = NOW + timedelta(hours=2)
    assert not service.tick()  # more than half of the 6 hours left
    clock[0] = NOW + timedelta(hours=4)
    assert service.tick()
    b = service.repo.builder
    assert b.timestamp.version > ts and b.timestamp.expires == clock[0] + timedelta(hours=6)
    # a new lifetime counts from the role's next signing: the snapshot signed for 7 days
    # is re-signed once less than half of the new lifetime (1 day) is left, for 2 days
    assert b.snapshot.expires == NOW + timedelta(days=7)
    clock[0] = NOW + timedelta(days=6, hours=1)
    assert service.tick()
    assert service.repo.builder.snapshot.expires == clock[0] + timedelta(days=2)
    assert image_cli.main(["lifetimes", str(repo.paths.root), "--set", "timestamp=0"]) == 2


def test_director_lifetimes_are_set_and_taken(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from oem import make_image_repo

    from director.director import Director

    image_dir = make_image_repo(tmp_path, NOW)
    ddir = tmp_path / "director"
    Director.init(
        ddir,
        str(image_dir / "metadata"),
        (image_dir / "metadata" / "1.root.json").read_bytes(),
        now=NOW,
    )
    argv = ["lifetimes", str(ddir), "--set", "timestamp=0.5", "--set", "root=730"]
    assert director_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "timestamp: 0.5 days" in out and "root: 730 days" in out
    d = Director(ddir, clock=lambda: NOW)
    try:
        assert d.config.expiry["timestamp"] == timedelta(hours=12)
        assert d.rotate_key("timestamp", tmp_path / "director.offline-keys", NOW) == 2
        assert d.publisher.root().expires == NOW + timedelta(days=730)
    finally:
        d.dispose()
    assert director_cli.main(["lifetimes", str(ddir), "--set", "bogus=1"]) == 2
