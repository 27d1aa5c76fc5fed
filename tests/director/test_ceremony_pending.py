"""The pending file of a ceremony (director/ceremony.py): it travels between people, so it
is checked like any input; a signer can only add a signature the file needs, in every
encoding; the thresholds are counted per unique key and every encoding."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from director.ceremony import BelowThreshold, Pending, RootChange
from uptane.errors import MalformedInput
from uptane.keys import ECDSA, PrivateKey
from uptane.metadata import DER, JSON
from uptane.repository import RepositoryBuilder

NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture
def setup() -> tuple[RepositoryBuilder, PrivateKey, list[PrivateKey], Pending]:
    old = PrivateKey.generate()
    others = {r: [PrivateKey.generate()] for r in ("targets", "snapshot", "timestamp")}
    b = RepositoryBuilder("image", {"root": [old], **others}, NOW, encodings=(JSON, DER))
    new = [PrivateKey.generate(ECDSA) for _ in range(3)]
    model = b.next_root(NOW)
    RootChange(
        add={"root": [k.key for k in new]},
        remove={"root": [old.keyid[:12]]},
        thresholds={"root": 2},
    ).apply(model)
    return b, old, new, Pending.start("image", model, b.encodings, b.files[JSON]["root"])


def test_signatures_accumulate_and_travel_in_the_file(setup, tmp_path: Path) -> None:
    b, old, new, pending = setup
    path = tmp_path / "p.json"
    pending.save(path)
    for who, key in (("oem", old), ("a", new[0])):
        p = Pending.load(path)
        p.sign(key, who)
        p.save(path)
    p = Pending.load(path)
    old_req, new_req = p.requirements()
    assert (old_req.missing, new_req.missing) == (0, 1)
    assert p.signers == {old.keyid: "oem", new[0].keyid: "a"}
    with pytest.raises(BelowThreshold, match="1 of 2"):
        p.check(b.root)
    p.sign(new[0], "a again")  # the same key twice counts once
    with pytest.raises(BelowThreshold):
        p.check(b.root)
    p.sign(new[2], "c")
    p.check(b.root)
    lines = "\n".join(p.status_lines())
    assert "root v2 (new) root keys: 2 of 2 (met)" in lines and "waiting" in lines
    assert b"PRIVATE" not in path.read_bytes()


def test_a_key_the_file_does_not_need_cannot_sign(setup) -> None:
    _b, _old, _new, pending = setup
    with pytest.raises(PermissionError, match="not one this root"):
        pending.sign(PrivateKey.generate(), "stranger")


def test_a_threshold_that_could_never_be_met_is_refused(setup) -> None:
    b, *_ = setup
    with pytest.raises(ValueError, match="could never be met"):
        RootChange(thresholds={"root": 2}).apply(b.next_root(NOW))
    with pytest.raises(ValueError, match="unknown role"):
        RootChange(thresholds={"bins": 1}).apply(b.next_root(NOW))


def _edit(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    d = json.loads(path.read_bytes())
    change(d)
    path.write_text(json.dumps(d))


def test_hostile_pending_files_are_refused(setup, tmp_path: Path) -> None:
    b, _old, _new, pending = setup
    path = tmp_path / "p.json"
    pending.save(path)
    other = b.next_root(NOW)
    other.version = 7
    bad = Pending.start("image", other, (JSON,), b.files[JSON]["root"])

    def mismatch(d: dict) -> None:  # JSON and DER that say different things
        d["metadata"]["json"] = base64.b64encode(bad.envelopes[JSON]).decode()

    for change in (
        mismatch,
        lambda d: d.__setitem__("format", 2),
        lambda d: d.__setitem__("role", "snapshot"),
        lambda d: d["metadata"].__setitem__("der", "not base64!"),
        lambda d: d.__setitem__("metadata", []),
    ):
        pending.save(path)
        _edit(path, change)
        with pytest.raises(MalformedInput):
            Pending.load(path)
    path.write_bytes(b"[" * 100_000)
    with pytest.raises(MalformedInput):
        Pending.load(path)
