"""Key ceremonies of issue 16, end to end: the Image repository's root 3-of-5 and top-level
targets 2-of-3 with every key in its holder's own directory (the targets keys on a SoftHSM2
token, the online keys of both services on tokens too); below threshold nothing is
published, at threshold a running Primary accepts; then a root rotation to a new 2-of-3 set
of another key type, followed by the Primary. Afterwards, no private key is anywhere in the
OEM's directories but the OEM's own offline keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cycle_support import VIN, Vehicle
from keys_support import (
    PIN_ENV,
    custody_backend,
    fresh_token,
    holding,
    image_version,
    key_source_spec,
    private_key_markers,
    secret_forms,
    token_uri,
)

from director import image_cli
from director.image_repo import default_offline_dir
from keystore import open_signer

PASS_ENV = "CEREMONY_TEST_PASSPHRASE"


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def run(*args: object) -> int:
    return image_cli.main([str(a) for a in args])


def ok(*args: object) -> None:
    assert run(*args) == 0, args


def holder(tmp: Path, name: str, scheme: str = "ed25519") -> tuple[Path, Path]:
    """A key holder makes a key pair in their own directory, encrypted at rest."""
    private = tmp / "holders" / name / f"{name}.pem"
    ok("keygen", private, "--scheme", scheme, "--passphrase-env", PASS_ENV)
    return private, private.with_name(f"{name}.pub.json")


def keyid(pub: Path) -> str:
    from uptane.keys import Key
    from uptane.limits import Limits

    return Key.from_bytes(pub.read_bytes(), Limits.primary()).keyid


def sign(pending: Path, key: object, name: str) -> None:
    ok("ceremony", "sign", pending, "--key", key, "--name", name,
       "--passphrase-env", PASS_ENV, "--pin-env", PIN_ENV)  # fmt: skip


def snapshot_of(metadata: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(metadata.iterdir())}


def test_16_ceremony_root_3_of_5_targets_2_of_3_then_rotation_to_another_key_type(
    tmp_path: Path, now: datetime, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv(PASS_ENV, "holder passphrase")
    image_token, director_token, targets_token = fresh_token(), fresh_token(), fresh_token()
    backend = custody_backend(
        tmp_path / "oem",
        now,
        image_keys=key_source_spec(image_token),
        director_keys=key_source_spec(director_token),
    )
    car = None
    try:
        car = Vehicle(tmp_path / "car", backend, now, secondaries={"brk-1": "brk-v1"})
        repo = backend.image_dir
        meta = repo / "metadata"
        root1 = json.loads((meta / "1.root.json").read_bytes())["signed"]
        old_root = root1["roles"]["root"]["keyids"]
        old_targets = root1["roles"]["targets"]["keyids"]

        # five root holders, each in their own directory; three targets keys on a token
        roots = {n: holder(tmp_path, n) for n in ("ana", "ben", "cem", "dia", "eli")}
        tpubs = []
        for n in ("t1", "t2", "t3"):
            pub = tmp_path / "holders" / f"{n}.pub.json"
            ok("keygen", token_uri(targets_token, n), "--public", pub, "--pin-env", PIN_ENV)
            tpubs.append(pub)

        pr, pt = tmp_path / "root-2.json", tmp_path / "targets-3.json"
        start = ["ceremony", "start", repo, "root", "--out", pr, "--threshold", "root:3"]
        start += ["--threshold", "targets:2", "--remove-key", f"root:{old_root[0]}"]
        start += ["--remove-key", f"targets:{old_targets[0]}"]
        start += [x for _, pub in roots.values() for x in ("--add-key", f"root:{pub}")]
        start += [x for pub in tpubs for x in ("--add-key", f"targets:{pub}")]
        ok(*start)
        ok("ceremony", "start", repo, "targets", "--under", pr, "--out", pt)
        assert b"PRIVATE" not in pr.read_bytes() + pt.read_bytes()

        # the current root's holder (the OEM's offline key) and two of the new five sign
        sign(pr, default_offline_dir(repo) / "root.pem", "oem")
        for n in ("ana", "ben"):
            sign(pr, roots[n][0], n)
        sign(pt, token_uri(targets_token, "t1"), "t1")
        capsys.readouterr()
        assert run("ceremony", "status", pr) == 3
        status = capsys.readouterr().out
        assert "root v2 (new) root keys: 2 of 3 (1 more needed)" in status
        assert "signed" in status and "ana" in status and "waiting" in status

        # below threshold: nothing is published, the vehicle still trusts version 1
        before = snapshot_of(meta)
        assert run("ceremony", "publish", repo, pr, pt) == 2
        assert "below threshold" in capsys.readouterr().err
        sign(pr, roots["cem"][0], "cem")
        assert run("ceremony", "publish", repo, pr, pt) == 2  # targets: 1 of 2
        assert snapshot_of(meta) == before
        assert car.cycle().error is None
        assert image_version(car) == 1

        # at threshold: published, and the running Primary follows and installs
        sign(pt, token_uri(targets_token, "t2"), "t2")
        ok("ceremony", "publish", repo, pr, pt)
        backend.assign(VIN, [("brk-1", "brakes/fw-2.bin")])
        result = car.cycle()
        assert result.error is None, result.error
        assert result.installed == {"brk-1": "brakes/fw-2.bin"}
        assert image_version(car) == 2

        # rotation to a new 2-of-3 set of ECDSA keys: 3 of the old five and 2 of the new
        news = {n: holder(tmp_path, n, "ecdsa-sha2-nistp256") for n in ("fay", "gus", "hal")}
        pr3 = tmp_path / "root-3.json"
        start = ["ceremony", "start", repo, "root", "--out", pr3, "--threshold", "root:2"]
        start += [x for _, pub in roots.values() for x in ("--remove-key", f"root:{keyid(pub)}")]
        start += [x for _, pub in news.values() for x in ("--add-key", f"root:{pub}")]
        ok(*start)
        for n in ("ana", "dia"):
            sign(pr3, roots[n][0], n)
        for n in ("fay", "gus"):
            sign(pr3, news[n][0], n)
        assert run("ceremony", "publish", repo, pr3) == 2  # the old root: 2 of 3
        sign(pr3, roots["eli"][0], "eli")
        ok("ceremony", "publish", repo, pr3)
        backend.assign(VIN, [("brk-1", "brakes/fw-3.bin")])
        result = car.cycle()
        assert result.error is None, result.error
        assert result.installed == {"brk-1": "brakes/fw-3.bin"}
        assert image_version(car) == 3
        _d, image = car.primary().load_trust()
        trusted = image.root.signed
        schemes = {trusted.keys[k].scheme for k in trusted.roles["root"].keyids}
        assert schemes == {"ecdsa-sha2-nistp256"}

        # no private key in the OEM's directories but its own offline keys (retired as
        # they left the root); every holder's directory holds its own key only
        assert private_key_markers(repo) == []
        assert private_key_markers(backend.director_dir) == []
        offline = private_key_markers(default_offline_dir(repo))
        assert all(p.startswith(("root.pem", "targets.pem")) for p in offline), offline
        for name, (private, _pub) in {**roots, **news}.items():
            assert private_key_markers(private.parent) == [f"{name}.pem"]
        assert private_key_markers(tmp_path / "holders") == sorted(
            f"{n}/{n}.pem" for n in [*roots, *news]
        )
        # nor, in any form (raw, hex, base64), the private value of any holder's key
        for name, (private, _pub) in {**roots, **news}.items():
            forms = secret_forms(open_signer(str(private), passphrase_env=PASS_ENV))
            for where in (repo, backend.director_dir, default_offline_dir(repo), tmp_path / "car"):
                assert holding(where, forms) == [], (name, where)
    finally:
        if car is not None:
            car.close()
        backend.stop()
