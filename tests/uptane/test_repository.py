"""The in-memory repository builder: versions only grow, bindings hold, python-tuf agrees."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from tuf.api.metadata import Metadata as TufMetadata

from uptane.keys import PrivateKey
from uptane.limits import PRIMARY
from uptane.metadata import JSON, DelegatedRole, Metadata, TargetFile
from uptane.repository import RepositoryBuilder

NOW = datetime(2026, 11, 22, tzinfo=UTC)


def _builder() -> tuple[RepositoryBuilder, dict[str, list[PrivateKey]]]:
    keys = {r: [PrivateKey.generate()] for r in ("root", "targets", "snapshot", "timestamp")}
    return RepositoryBuilder("image", keys, NOW, encodings=(JSON,)), keys


def test_versions_grow_and_timestamp_binds_snapshot():
    b, _ = _builder()
    assert (b.targets.version, b.snapshot.version, b.timestamp.version) == (1, 1, 1)
    b.add_target(TargetFile.from_data("a.bin", b"a"))
    b.publish(NOW + timedelta(hours=1))
    assert (b.targets.version, b.snapshot.version, b.timestamp.version) == (2, 2, 2)
    b.refresh_timestamp(NOW + timedelta(hours=2))
    assert (b.snapshot.version, b.timestamp.version) == (2, 3)
    snap = b.files[JSON]["snapshot"]
    ts = Metadata.from_json(b.files[JSON]["timestamp"], PRIMARY)
    assert ts.signed.snapshot_meta.version == 2
    assert ts.signed.snapshot_meta.hashes == {"sha256": hashlib.sha256(snap).hexdigest()}
    assert ts.signed.expires == NOW + timedelta(hours=2, days=1)


def test_root_rotation_is_signed_by_old_and_new_keys():
    b, keys = _builder()
    new = PrivateKey.generate()
    b.rotate_keys("root", [new], revoke=[keys["root"][0].keyid])
    b.publish(NOW)
    files = b.versioned_files()
    v1 = TufMetadata.from_bytes(files["1.root.json"])
    v2 = TufMetadata.from_bytes(files["2.root.json"])
    v1.verify_delegate("root", v2)  # old keys
    v2.verify_delegate("root", v2)  # new keys
    assert {s for s in v2.signatures} == {keys["root"][0].keyid, new.keyid}


def test_delegation_is_listed_in_snapshot_and_verifies_in_python_tuf():
    b, _ = _builder()
    supplier = PrivateKey.generate()
    b.delegate("targets", DelegatedRole("supplier", [], 1, paths=["sup/*"]), [supplier])
    b.add_target(TargetFile.from_data("sup/x.bin", b"x"), role="supplier")
    b.publish(NOW)
    files = b.versioned_files()
    assert set(b.snapshot.meta) == {"targets.json", "supplier.json"}
    targets = TufMetadata.from_bytes(files[f"{b.targets.version}.targets.json"])
    sup = TufMetadata.from_bytes(files[f"{b.role('supplier').version}.supplier.json"])
    targets.verify_delegate("supplier", sup)
    assert "sup/x.bin" in sup.signed.targets
