"""Hostile JSON never escapes as anything but an :class:`uptane.errors.UptaneError`.

Random bytes, byte-level mutations of real metadata (flips, cuts, insertions) and
structure-level mutations (a random field replaced by a random JSON value) go through
``Metadata.from_json``, ``metadata.decode``, ``MapFile.from_json`` and every
``RepositoryTrust.update_*`` step. Bounded: ~300 examples each, no deadline.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trust_support import NOW, make_repo

from uptane.encoding.json import canonical
from uptane.errors import UptaneError
from uptane.keys import PrivateKey
from uptane.limits import CONSTRAINED, PRIMARY
from uptane.metadata import JSON, DelegatedRole, MapFile, Metadata, TargetFile, decode
from uptane.trust import RepositoryTrust

FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


@functools.cache
def sample_repo():
    repo = make_repo(targets=[TargetFile.from_data("fw/a.bin", b"a", hardware_ids=["hw"])])
    repo.builder.delegate(
        "targets",
        DelegatedRole("sup", [], 1, paths=["sup/*"], hardware_ids=["hw"]),
        [PrivateKey.generate()],
    )
    repo.builder.add_target(TargetFile.from_data("sup/x.bin", b"x", release_counter=1), "sup")
    repo.publish(NOW)
    return repo


def samples() -> dict[str, bytes]:
    repo = sample_repo()
    files = {r: repo.file(f"{r}.json") for r in ("root", "timestamp", "snapshot", "targets", "sup")}
    files["map"] = MapFile.default("https://d", "https://i").to_json()
    return files


def only_uptane_errors(fn, *args: Any, **kwargs: Any) -> None:
    with contextlib.suppress(UptaneError):
        fn(*args, **kwargs)


def named_errors_only(repository: str, fn, *args: Any, **kwargs: Any) -> None:
    """Like :func:`only_uptane_errors`, and the error says where it happened."""
    try:
        fn(*args, **kwargs)
    except UptaneError as e:
        assert e.repository == repository and e.role, (e, e.repository, e.role)


# --- strategies -----------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.text(max_size=20),
    st.sampled_from(["", "root", "targets", "sha256", "ed25519", "2030-01-01T00:00:00Z", "*"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def byte_mutations(draw: st.DrawFn) -> bytes:
    data = bytearray(samples()[draw(st.sampled_from(sorted(samples())))])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[i:]
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and data:
            del data[i : i + draw(st.integers(1, 16))]
    return bytes(data)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_paths(v, (*prefix, i)))
    return out


def mutate_fields(draw: st.DrawFn, doc: Any) -> Any:
    """One or two fields of a decoded JSON document replaced by any JSON value, removed or
    added (shared with tests/security/test_fuzz_decoders.py)."""
    for _ in range(draw(st.integers(1, 2))):
        path = draw(st.sampled_from(_paths(doc)))
        value = draw(json_values)
        if not path:
            doc = value
            continue
        parent = doc
        for p in path[:-1]:
            parent = parent[p]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "delete" and isinstance(parent, dict):
            parent.pop(path[-1], None)
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = value
        else:
            parent[path[-1]] = value
    return doc


@st.composite
def structure_mutations(draw: st.DrawFn, name: str | None = None) -> bytes:
    """A real file with one field replaced, removed or added (then re-encoded)."""
    files = samples()
    name = name or draw(st.sampled_from(sorted(files)))
    doc = json.loads(files[name])
    doc = mutate_fields(draw, doc)
    try:
        return canonical(copy.deepcopy(doc))
    except UptaneError:
        return json.dumps(doc).encode()


any_bytes = st.one_of(st.binary(max_size=512), byte_mutations(), structure_mutations())


# --- decoders ---------------------------------------------------------------------------------


@FUZZ
@given(data=any_bytes)
def test_metadata_from_json_raises_only_uptane_errors(data):
    only_uptane_errors(Metadata.from_json, data, PRIMARY)
    only_uptane_errors(Metadata.from_json, data, CONSTRAINED, role_type="targets")


@FUZZ
@given(data=any_bytes, role=st.sampled_from([None, "root", "timestamp", "snapshot", "targets"]))
def test_decode_json_raises_only_uptane_errors(data, role):
    only_uptane_errors(decode, data, PRIMARY, encoding=JSON, role_type=role)


@FUZZ
@given(data=st.one_of(st.binary(max_size=256), structure_mutations("map"), byte_mutations()))
def test_map_file_from_json_raises_only_uptane_errors(data):
    only_uptane_errors(MapFile.from_json, data, PRIMARY)


# --- the client steps -------------------------------------------------------------------------


def fresh_client() -> RepositoryTrust:
    repo = sample_repo()
    return RepositoryTrust("image", repo.builder.trusted_root(), PRIMARY)


@functools.cache
def refreshed_raw() -> dict[str, bytes]:
    repo = sample_repo()
    t = RepositoryTrust("image", repo.builder.trusted_root(), PRIMARY)
    t.refresh(repo.source, NOW)
    return dict(t.raw)


@FUZZ
@given(data=any_bytes)
def test_update_root_and_timestamp_raise_only_uptane_errors(data):
    t = fresh_client()
    named_errors_only("image", t.update_root, data)
    assert t.root.signed.version in (1, 2)
    t = fresh_client()
    named_errors_only("image", t.update_timestamp, data, NOW)


@FUZZ
@given(data=any_bytes)
def test_update_snapshot_targets_and_delegated_raise_only_uptane_errors(data):
    raw = refreshed_raw()
    partial = {k: v for k, v in raw.items() if k in ("root", "timestamp")}
    t = RepositoryTrust.load("image", partial, PRIMARY)
    named_errors_only("image", t.update_snapshot, data, NOW)
    t = RepositoryTrust.load("image", raw, PRIMARY)
    before = t.state()
    named_errors_only("image", t.update_targets, data, NOW)
    named_errors_only("image", t.update_delegated, "sup", "targets", data, NOW)
    # nothing hostile is trusted: a changed state means the *signed part* is genuine (fields
    # outside "signed" are not covered by signatures and are ignored, as in TUF)
    if t.state() != before:
        genuine = {
            Metadata.from_json(samples()[r], PRIMARY).signed_bytes for r in ("targets", "sup")
        }
        trusted = [t.targets, *t.delegated.values()]
        assert all(md.signed_bytes in genuine for md in trusted if md is not None)


@FUZZ
@given(files=st.dictionaries(st.sampled_from(["root", "timestamp", "targets", "sup"]), any_bytes))
def test_load_raises_only_uptane_errors(files):
    only_uptane_errors(RepositoryTrust.load, "image", files, PRIMARY)


@functools.cache
def director_sample():
    from trust_support import VIN, director_entry

    return make_repo(
        "director",
        vehicle_id=VIN,
        targets=[director_entry(b"img", "fw/a.bin", "ecu-1", "hw-1", release_counter=1)],
    )


@FUZZ
@given(
    data=st.one_of(any_bytes, st.builds(lambda: director_sample().file("targets.json"))),
    as_root=st.booleans(),
)
def test_partial_verification_raises_only_uptane_errors(data, as_root):
    from uptane.partial import PartialVerifier

    repo = director_sample()
    pv = PartialVerifier(repo.builder.trusted_root(), "ecu-1", "hw-1", CONSTRAINED, encoding=JSON)
    named_errors_only("director", pv.verify, data, NOW, root_updates=[data] if as_root else [])
    if pv.targets is not None:  # only the genuine signed part is ever trusted
        genuine = Metadata.from_json(repo.file("targets.json"), PRIMARY).signed_bytes
        assert pv.targets.signed_bytes == genuine
