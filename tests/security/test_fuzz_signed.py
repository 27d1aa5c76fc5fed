"""Structure-aware fuzzing of signed content in CI (issue 15; fuzz/signed.py).

Valid documents are mutated inside ``signed``, re-signed with the right keys and fed to
the core (a repository refresh; a manifest's §5.3.2.1 checks), to the Director's FastAPI
app in-process, to a real Secondary agent in-process, and here also to whole Primary
cycles (the test support of tests/primary, with the Director's online keys re-signing the
mutated targets, snapshot and timestamp). Only the project's own errors, no 500, no hang,
no growth of memory. ``make fuzz`` runs the same feeds for 10^5 inputs each
(``python -m fuzz.signed``); the bounded runs here take a few seconds per target."""

from __future__ import annotations

import collections
import copy
import hashlib
import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from cycle_support import VIN, backend_and_vehicle

from fuzz import signed
from fuzz.signed import mutate, resign
from uptane.errors import UptaneError

#: inputs per target in CI (seeds are fixed: the same inputs every run)
BOUNDED = {
    "signed_metadata": 800,
    "signed_manifest": 800,
    "signed_director": 300,
    "signed_secondary": 400,
}


@pytest.mark.parametrize("name", sorted(BOUNDED))
def test_signed_content_fuzzing_finds_nothing(name: str) -> None:
    r = signed.run(name, BOUNDED[name], start=10_000, slow=10.0)
    assert r["findings"] == [], r["findings"]
    assert r["rss_growth_mb"] < 200, r


def test_mutations_reach_past_the_signatures_into_every_check() -> None:
    """The generator is worth its name: re-signed inputs pass the signature checks and
    are refused by many different checks further on, and some are accepted whole."""
    errors: collections.Counter[str] = collections.Counter()
    for i in range(600):
        try:
            signed.signed_metadata(i.to_bytes(8, "big"))
            errors["accepted"] += 1
        except UptaneError as e:
            errors[type(e).__name__] += 1
    assert errors["accepted"] > 10
    assert errors["ThresholdNotMet"] + errors["BadSignature"] < 300, errors
    assert len(errors) >= 6, errors


def test_every_field_of_a_targets_entry_can_be_hit() -> None:
    """Over many seeds, each field of a Director targets entry gets mutated."""
    base = signed.repos()["director"].role("targets").to_dict()
    hit: set[str] = set()
    for i in range(400):
        doc = copy.deepcopy(base)
        mutate(doc, random.Random(i))
        listed = doc.get("targets")
        entry = listed.get("fw/a.bin") if isinstance(listed, dict) else None
        original = base["targets"]["fw/a.bin"]
        if isinstance(entry, dict):
            hit |= {k for k in original if entry.get(k) != original[k]}
            if isinstance(entry.get("custom"), dict):
                c = entry["custom"]
                hit |= {
                    f"custom.{k}" for k in original["custom"] if c.get(k) != original["custom"][k]
                }
        for k in ("version", "expires", "spec_version", "vehicleId"):
            if doc.get(k) != base.get(k):
                hit.add(k)
    assert {"length", "hashes", "version", "expires", "vehicleId"} <= hit, hit


# --- whole Primary cycles ---------------------------------------------------------------------

BRAKES = "brakes/fw-2.bin"
CYCLES = 16


def _director_chain(backend, rng: random.Random, bump: int) -> dict[str, bytes]:
    """The Director's current targets mutated, and a snapshot and timestamp that vouch
    for it, each re-signed with the Director's online keys: what a man in the middle
    holding those keys serves. File suffix -> bytes."""
    d = backend.director
    signers = d.publisher.signers()
    ts = json.loads(d.metadata_file(VIN, "timestamp.json"))["signed"]
    sv = ts["meta"]["snapshot.json"]["version"]
    snap = json.loads(d.metadata_file(VIN, f"{sv}.snapshot.json"))["signed"]
    tv = snap["meta"]["targets.json"]["version"]
    targets = json.loads(d.metadata_file(VIN, f"{tv}.targets.json"))["signed"]
    mutate(targets, rng)
    t_bytes = resign(targets, signers["targets"], "json")
    version = targets.get("version")
    snap["meta"]["targets.json"] = {"version": version if isinstance(version, int) else tv}
    s_bytes = resign(snap, signers["snapshot"], "json")
    ts["meta"]["snapshot.json"].update(
        length=len(s_bytes), hashes={"sha256": hashlib.sha256(s_bytes).hexdigest()}
    )
    ts["version"] += bump  # above every timestamp served before, so none is "unchanged"
    return {
        "timestamp.json": resign(ts, signers["timestamp"], "json"),
        "snapshot.json": s_bytes,
        "targets.json": t_bytes,
    }


def test_primary_cycles_on_mutated_re_signed_director_metadata(tmp_path) -> None:
    """Each cycle gets Director targets mutated and re-signed (with a snapshot and a
    timestamp that vouch for them): it ends with no error or with one of the project's
    errors, never an exception, and the Secondary always runs a whole image."""
    now = datetime.now(UTC).replace(microsecond=0)
    with backend_and_vehicle(tmp_path, now, secondaries={"brk-1": "brk-v1"}) as (backend, car):
        backend.assign(VIN, [("brk-1", BRAKES)])
        outcomes: collections.Counter[str] = collections.Counter()
        for i in range(CYCLES):
            chain = _director_chain(backend, random.Random(i), bump=i + 1)
            rules = backend.director_proxy.rules.tamper
            rules.update({suffix: (lambda _body, new=new: new) for suffix, new in chain.items()})
            result = car.cycle()  # an exception escaping here is a finding
            assert result.error is None or isinstance(result.error, UptaneError)
            outcomes[type(result.error).__name__ if result.error else "ok"] += 1
            backend.director_proxy.reset()
            backend.advance(timedelta(seconds=5))
        print("Primary cycle outcomes:", dict(outcomes))
        assert len(outcomes) >= 2, outcomes  # the mutations reach different checks
        # the Secondary runs a whole image, old or new, and a cycle after the attack ends
        # cleanly (the fast-forwarded timestamp is kept: the honest one is now a rollback
        # until the Director's timestamp key is rotated, as TUF has it)
        assert car.installed("brk-1") in (None, "factory.bin", BRAKES), car.installed("brk-1")
        after = car.cycle()
        assert after.error is None or isinstance(after.error, UptaneError)
