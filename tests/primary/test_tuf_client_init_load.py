"""``TufClient.load`` right after ``init`` on the same client: the root ``init`` checked is
taken only while the metadata directory holds exactly those bytes and nothing else.

Whoever can write the metadata directory between the two commands must gain nothing: a
changed byte, another root or an added file sends ``load`` through full verification.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from primary.tuf_client import TufClient
from uptane.errors import UptaneError
from uptane.keys import ED25519, PrivateKey
from uptane.metadata import JSON
from uptane.repository import RepositoryBuilder

ROLES = ("root", "targets", "snapshot", "timestamp")


def _root() -> bytes:
    keys = {r: [PrivateKey.generate(ED25519)] for r in ROLES}
    builder = RepositoryBuilder("image", keys, datetime.now(UTC), encodings=(JSON,))
    return builder.trusted_root(JSON)


@pytest.fixture
def client(tmp_path: Path) -> TufClient:
    (tmp_path / "root-in.json").write_bytes(_root())
    c = TufClient(tmp_path / "meta")
    c.init(tmp_path / "root-in.json")
    return c


def test_unchanged_root_is_taken_as_init_left_it_once(client: TufClient) -> None:
    initialised = client._initialised
    assert initialised is not None
    assert client.load() is initialised
    again = client.load()  # good for one load: the next one verifies
    assert again is not initialised
    assert again.raw == initialised.raw and again.dropped == [] == initialised.dropped


def test_a_changed_byte_is_verified(client: TufClient) -> None:
    path = client.metadata_dir / "root.json"
    doc = json.loads(path.read_bytes())
    sig = doc["signatures"][0]["sig"]
    doc["signatures"][0]["sig"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    path.write_bytes(json.dumps(doc).encode())
    with pytest.raises(UptaneError):
        client.load()


def test_the_same_root_in_other_bytes_is_verified(client: TufClient) -> None:
    initialised = client._initialised
    path = client.metadata_dir / "root.json"
    path.write_bytes(json.dumps(json.loads(path.read_bytes()), indent=1).encode())
    trust = client.load()  # still validly signed (over the canonical form), so accepted
    assert trust is not initialised
    assert trust.raw["root"] == path.read_bytes()


def test_another_valid_root_is_verified_not_taken(client: TufClient, tmp_path: Path) -> None:
    other = _root()
    (client.metadata_dir / "root.json").write_bytes(other)
    trust = client.load()
    assert trust is not client._initialised and trust.raw["root"] == other


def test_an_added_file_is_verified(client: TufClient) -> None:
    initialised = client._initialised
    (client.metadata_dir / "timestamp.json").write_bytes(b'{"signatures":[],"signed":{}}')
    trust = client.load()
    assert trust is not initialised
    assert trust.dropped == ["timestamp"]


def test_a_failed_init_forgets_the_earlier_one(client: TufClient, tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_bytes(b"{}")
    with pytest.raises(UptaneError):
        client.init(tmp_path / "bad.json")
    assert client._initialised is None
    assert client.load().raw["root"] == (client.metadata_dir / "root.json").read_bytes()
