"""Interoperability with python-tuf (the TUF reference implementation).

(a) What RepositoryBuilder signs loads in ``tuf.api.metadata.Metadata`` and verifies there,
    role by role, delegations and hash bins included, Uptane fields and all.
(b) A repository written and signed by python-tuf's Metadata API with securesystemslib
    ``CryptoSigner`` keys (ed25519, ecdsa, rsa) refreshes and resolves targets through our
    :class:`uptane.trust.RepositoryTrust`.
(c) Path matching and hash-bin naming agree with python-tuf's.
(d) python-tuf's ngclient refreshes a RepositoryBuilder repository and resolves targets.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

import pytest
import tuf.api.metadata as tuf
from hypothesis import given, settings
from hypothesis import strategies as st
from securesystemslib.signer import CryptoSigner
from trust_support import NOW, VIN, director_entry, make_repo
from tuf.api.exceptions import DownloadHTTPError
from tuf.api.serialization.json import JSONSerializer
from tuf.ngclient import FetcherInterface, Updater

from uptane.errors import EndlessDataAttack, TargetNotFound, ThresholdNotMet
from uptane.keys import PrivateKey
from uptane.limits import PRIMARY
from uptane.metadata import JSON, DelegatedRole, Delegations, RoleRef, SuccinctRoles, TargetFile
from uptane.trust import RepositoryTrust, is_delegated_path

# --- (a) our metadata in python-tuf ----------------------------------------------------------


def _tuf(repo, role):
    name = "root.json" if role == "root" else f"{role}.json"
    return tuf.Metadata.from_bytes(repo.file(name))


def test_builder_metadata_verifies_in_python_tuf_role_by_role():
    repo = make_repo("image", targets=[TargetFile.from_data("fw/a.bin", b"a", hardware_ids=["hw"])])
    b = repo.builder
    # a normal delegation with Uptane hardware ids, a hash-prefix one, a multi-role one
    sup, hashed, m0, m1 = (PrivateKey.generate() for _ in range(4))
    b.delegate("targets", DelegatedRole("sup", [], 1, paths=["sup/*"], hardware_ids=["hw"]), [sup])
    b.add_target(TargetFile.from_data("sup/x.bin", b"x", release_counter=2), role="sup")
    b.delegate("targets", DelegatedRole("hashed", [], 1, path_hash_prefixes=["0", "8"]), [hashed])
    b.delegate("targets", DelegatedRole("m0", [], 1, paths=["never/*"]), [m0])
    b.delegate("targets", DelegatedRole("m1", [], 1, paths=["never/*"]), [m1])
    multi = DelegatedRole("multi", [], 1, paths=["fw/*"])
    multi.multi_roles = [RoleRef("m0", [m0.keyid], 1), RoleRef("m1", [m1.keyid], 1)]
    multi.min_roles_in_agreement = 2
    b.delegate("targets", multi, [])
    # and a second-level delegation below "sup"
    b.delegate("sup", DelegatedRole("sub", [], 1, paths=["sup/sub-*"]), [PrivateKey.generate()])
    b.rotate_keys("root", [PrivateKey.generate()], revoke=[repo.keys["root"][0].keyid])
    b.publish(NOW)

    root1 = tuf.Metadata.from_bytes(repo.file("1.root.json"))
    root = _tuf(repo, "root")
    root1.verify_delegate("root", root)  # the rotation: old keys ...
    root.verify_delegate("root", root)  # ... and new keys
    for role in ("timestamp", "snapshot", "targets"):
        root.verify_delegate(role, _tuf(repo, role))
    targets = _tuf(repo, "targets")
    for role in ("sup", "hashed", "m0", "m1"):
        targets.verify_delegate(role, _tuf(repo, role))
    _tuf(repo, "sup").verify_delegate("sub", _tuf(repo, "sub"))
    # the Uptane fields survive in python-tuf's unrecognized fields
    d = targets.signed.delegations.roles["sup"]
    assert d.unrecognized_fields["hardwareIds"] == ["hw"]
    assert (
        targets.signed.delegations.roles["multi"].unrecognized_fields["multiRole"][
            "minRolesInAgreement"
        ]
        == 2
    )
    assert targets.signed.targets["fw/a.bin"].custom == {"hardwareIds": ["hw"]}
    # python-tuf's snapshot/timestamp bindings hold for our bytes
    ts = _tuf(repo, "timestamp")
    ts.signed.snapshot_meta.verify_length_and_hashes(repo.file("snapshot.json"))
    snap = _tuf(repo, "snapshot")
    assert snap.signed.meta["sup.json"].version == b.role("sup").version


def test_director_metadata_with_vehicle_id_verifies_in_python_tuf():
    repo = make_repo(
        "director", vehicle_id=VIN, targets=[director_entry(b"i", "fw/i.bin", "ecu-1", "hw-1")]
    )
    root = _tuf(repo, "root")
    targets = _tuf(repo, "targets")
    root.verify_delegate("targets", targets)
    assert targets.signed.unrecognized_fields["vehicleId"] == VIN
    assert targets.signed.targets["fw/i.bin"].custom["ecuIdentifiers"] == {
        "ecu-1": {"hardwareId": "hw-1"}
    }


def test_succinct_hash_bins_verify_in_python_tuf():
    repo = make_repo()
    key = PrivateKey.generate()
    bins = SuccinctRoles([key.keyid], 1, 3, "bin")
    for i in range(8):
        repo.builder.delegate("targets", DelegatedRole(f"bin-{i}", [], 1, paths=["*"]), [key])
    repo.builder.targets.delegations = Delegations({key.keyid: key.key}, None, bins)
    repo.builder.mark("targets")
    repo.publish()
    targets = _tuf(repo, "targets")
    tuf_bins = targets.signed.delegations.succinct_roles
    for i in range(8):
        assert tuf_bins.is_delegated_role(f"bin-{i}")
        targets.verify_delegate(f"bin-{i}", _tuf(repo, f"bin-{i}"))


# --- (b) python-tuf's repository through our client --------------------------------------------


class DictSource:
    """A static repository held in a dict of file name -> bytes."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def fetch_metadata(self, role, version, max_bytes):
        name = f"{role}.json" if version is None else f"{version}.{role}.json"
        data = self.files.get(name)
        if data is not None and len(data) > max_bytes:
            raise EndlessDataAttack(f"{name}: over {max_bytes} bytes")
        return data


class TufRepo:
    """A repository written with python-tuf's Metadata API and securesystemslib signers."""

    def __init__(self, consistent: bool = True) -> None:
        exp = NOW + timedelta(days=30)
        self.signers = {
            "root": CryptoSigner.generate_ed25519(),
            "targets": CryptoSigner.generate_ecdsa(),
            "snapshot": CryptoSigner.generate_rsa(size=2048),
            "timestamp": CryptoSigner.generate_ed25519(),
        }
        self.delegate = CryptoSigner.generate_ecdsa()
        self.root = tuf.Metadata(tuf.Root(expires=exp, consistent_snapshot=consistent))
        for role, s in self.signers.items():
            self.root.signed.add_key(s.public_key, role)
        self.targets = tuf.Metadata(tuf.Targets(expires=exp))
        self.targets.signed.targets["fw/a.bin"] = tuf.TargetFile.from_data(
            "fw/a.bin", b"image a", ["sha256", "sha512"]
        )
        dkey = self.delegate.public_key
        self.targets.signed.delegations = tuf.Delegations(
            keys={dkey.keyid: dkey},
            roles={
                "supplier": tuf.DelegatedRole(
                    "supplier", [dkey.keyid], 1, True, paths=["supplier/*"]
                )
            },
        )
        self.supplier = tuf.Metadata(tuf.Targets(expires=exp))
        tf = tuf.TargetFile.from_data("supplier/b.bin", b"image b", ["sha256"])
        tf.unrecognized_fields["custom"] = {"hardwareIds": ["hw-b"], "releaseCounter": 4}
        self.supplier.signed.targets["supplier/b.bin"] = tf
        self.snapshot = tuf.Metadata(tuf.Snapshot(expires=exp))
        self.timestamp = tuf.Metadata(tuf.Timestamp(expires=exp))
        self.source = DictSource()
        self.consistent = consistent
        self.publish_root()
        self.publish()

    def _name(self, role: str, version: int) -> str:
        return f"{version}.{role}.json" if self.consistent else f"{role}.json"

    def publish_root(self, *extra: CryptoSigner) -> None:
        self.root.signatures.clear()
        for s in (self.signers["root"], *extra):
            self.root.sign(s, append=True)
        self.source.files[f"{self.root.signed.version}.root.json"] = self.root.to_bytes(
            JSONSerializer()
        )

    def publish(self) -> None:
        ser = JSONSerializer(compact=True)
        self.targets.sign(self.signers["targets"])
        self.supplier.sign(self.delegate)
        t_bytes = self.targets.to_bytes(ser)
        s_bytes = self.supplier.to_bytes(ser)
        self.source.files[self._name("targets", self.targets.signed.version)] = t_bytes
        self.source.files[self._name("supplier", self.supplier.signed.version)] = s_bytes
        self.snapshot.signed.meta = {
            "targets.json": tuf.MetaFile(self.targets.signed.version, len(t_bytes)),
            "supplier.json": tuf.MetaFile(
                self.supplier.signed.version,
                hashes={"sha256": hashlib.sha256(s_bytes).hexdigest()},
            ),
        }
        self.snapshot.sign(self.signers["snapshot"])
        snap = self.snapshot.to_bytes(ser)
        self.source.files[self._name("snapshot", self.snapshot.signed.version)] = snap
        self.timestamp.signed.snapshot_meta = tuf.MetaFile(
            self.snapshot.signed.version, len(snap), {"sha256": hashlib.sha256(snap).hexdigest()}
        )
        self.timestamp.sign(self.signers["timestamp"])
        self.source.files["timestamp.json"] = self.timestamp.to_bytes(ser)

    def client(self) -> RepositoryTrust:
        return RepositoryTrust("image", self.source.files["1.root.json"], PRIMARY)


@pytest.mark.parametrize("consistent", [True, False])
def test_python_tuf_repository_refreshes_and_resolves_targets(consistent):
    repo = TufRepo(consistent)
    trust = repo.client()
    result = trust.refresh(repo.source, NOW)
    assert result.targets_changed
    a = trust.find_target("fw/a.bin", repo.source, NOW)
    assert a.length == len(b"image a") and set(a.hashes) == {"sha256", "sha512"}
    b = trust.find_target("supplier/b.bin", repo.source, NOW, hardware_id="hw-b")
    assert (b.hardware_ids, b.release_counter) == (["hw-b"], 4)
    with pytest.raises(TargetNotFound):  # "supplier" is terminating
        trust.find_target("supplier/c.bin", repo.source, NOW)


def test_python_tuf_root_rotation_and_new_versions():
    repo = TufRepo()
    trust = repo.client()
    trust.refresh(repo.source, NOW)
    # rotate the root key (signed by old and new) and the timestamp key
    old_root = repo.signers["root"]
    new_root = CryptoSigner.generate_ecdsa()
    root = repo.root.signed
    root.revoke_key(old_root.public_key.keyid, "root")
    root.add_key(new_root.public_key, "root")
    new_ts = CryptoSigner.generate_rsa(size=2048)
    root.revoke_key(repo.signers["timestamp"].public_key.keyid, "timestamp")
    root.add_key(new_ts.public_key, "timestamp")
    root.version += 1
    repo.signers["root"], repo.signers["timestamp"] = new_root, new_ts
    repo.publish_root(old_root)
    for md in (repo.targets, repo.supplier, repo.snapshot, repo.timestamp):
        md.signed.version += 1
    repo.supplier.signed.targets["supplier/c.bin"] = tuf.TargetFile.from_data(
        "supplier/c.bin", b"c", ["sha256"]
    )
    repo.publish()
    result = trust.refresh(repo.source, NOW)
    assert result.root_rotations == 1 and "timestamp" in result.keys_rotated
    assert trust.find_target("supplier/c.bin", repo.source, NOW).length == 1
    # a root signed by the new keys only (no old-key signature) is refused
    repo.root.signed.version += 1
    repo.signers["root"] = CryptoSigner.generate_ed25519()
    repo.root.signed.revoke_key(new_root.public_key.keyid, "root")
    repo.root.signed.add_key(repo.signers["root"].public_key, "root")
    repo.publish_root()
    with pytest.raises(ThresholdNotMet):
        trust.refresh(repo.source, NOW)


# --- (c) matching rules agree with python-tuf ------------------------------------------------

_seg = st.text(alphabet="ab*?.[]-", min_size=0, max_size=4)
_pattern = st.lists(_seg, min_size=1, max_size=3).map("/".join)
_path = st.lists(st.text(alphabet="ab.-", min_size=1, max_size=4), min_size=1, max_size=3).map(
    "/".join
)


@settings(max_examples=200, deadline=None)
@given(patterns=st.lists(_pattern, max_size=3), path=_path)
def test_path_patterns_match_like_python_tuf(patterns, path):
    ours = DelegatedRole("r", [], 1, paths=patterns)
    theirs = tuf.DelegatedRole("r", [], 1, False, paths=patterns)
    assert is_delegated_path(ours, path) == theirs.is_delegated_path(path)


@settings(max_examples=100, deadline=None)
@given(bits=st.integers(1, 16), path=_path)
def test_hash_bins_are_named_like_python_tuf(bits, path):
    ours = SuccinctRoles([], 1, bits, "bins")
    theirs = tuf.SuccinctRoles([], 1, bits, "bins")
    assert ours.role_for_target(path) == theirs.get_role_for_target(path)


# --- (d) python-tuf's ngclient reads our repositories -----------------------------------------


class _BuilderFetcher(FetcherInterface):
    """ngclient's transport, served from a RepositoryBuilder's files in memory."""

    def __init__(self, repo) -> None:
        self.repo = repo

    def _fetch(self, url: str):
        name = unquote(url.rsplit("/", 1)[-1])
        data = self.repo.builder.versioned_files(JSON).get(name)
        if data is None:
            raise DownloadHTTPError(f"{name} not found", 404)
        return iter([data])


def test_python_tuf_ngclient_refreshes_our_repository_and_resolves_delegations(tmp_path):
    # ngclient checks expiry against the wall clock, so this repository is signed "now"
    now = datetime.now(UTC).replace(microsecond=0)
    repo = make_repo("image", now, targets=[TargetFile.from_data("fw/a.bin", b"a")])
    sup = PrivateKey.generate()
    repo.builder.delegate("targets", DelegatedRole("sup", [], 1, paths=["sup/*"]), [sup])
    repo.builder.add_target(TargetFile.from_data("sup/x.bin", b"xx"), role="sup")
    repo.builder.rotate_keys("root", [PrivateKey.generate()], revoke=[repo.keys["root"][0].keyid])
    repo.publish(now)
    updater = Updater(
        str(tmp_path),
        "https://repo.invalid/metadata/",
        fetcher=_BuilderFetcher(repo),
        bootstrap=repo.builder.trusted_root(JSON),
    )
    updater.refresh()
    assert updater.get_targetinfo("fw/a.bin").length == 1
    assert updater.get_targetinfo("sup/x.bin").length == 2
    assert updater.get_targetinfo("sup/none.bin") is None


def test_our_json_repository_with_ecdsa_keys_refreshes():
    from uptane.keys import ECDSA
    from uptane.repository import RepositoryBuilder

    keys = {r: [PrivateKey.generate(ECDSA)] for r in ("root", "targets", "snapshot", "timestamp")}
    b = RepositoryBuilder("image", keys, NOW, encodings=(JSON,))
    b.add_target(TargetFile.from_data("fw/a.bin", b"a"))
    b.publish(NOW)
    trust = RepositoryTrust("image", b.trusted_root(JSON), PRIMARY)
    trust.refresh(b.source(JSON), NOW)
    assert trust.find_target("fw/a.bin", b.source(JSON), NOW).length == 1
