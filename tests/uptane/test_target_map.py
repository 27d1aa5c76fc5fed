"""Decoded targets roles build their ``TargetFile``s on lookup (``TargetMap``), yet check
every entry when decoded: a decoded role refuses exactly what building every entry at
once refuses, and a lookup gives the entry that building it at once gives."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz_json import FUZZ, json_values, mutate_fields

from uptane import metadata
from uptane.encoding.json import canonical
from uptane.errors import LimitExceeded, MalformedInput, UptaneError
from uptane.limits import CONSTRAINED, PRIMARY, Limits
from uptane.metadata import (
    EncryptedImage,
    Metadata,
    TargetFile,
    TargetMap,
    Targets,
    _plain_entry,
)


def _entries() -> dict[str, TargetFile]:
    return {
        "fw/a.bin": TargetFile.from_data("fw/a.bin", b"a", hardware_ids=["hw-1"]),
        "fw/b.bin": TargetFile.from_data(
            "fw/b.bin", b"b", ("sha256", "sha512"), hardware_ids=["hw-1", "hw-2"], release_counter=3
        ),
        "fw/c.bin": TargetFile.from_data("fw/c.bin", b"c"),
        "fw/d.bin": TargetFile.from_data(
            "fw/d.bin", b"d", url="https://x/d", shall_match={"k": 1}, release_counter=0
        ),
        "fw/e.bin": TargetFile.from_data(
            "fw/e.bin",
            b"e",
            encrypted=EncryptedImage("e.enc", 2, {"sha256": "ab" * 32}, b"k", "aes"),
            ecu_ids={"ecu-1": "hw-1"},
        ),
    }


def _doc(*, plain_only: bool = False) -> dict[str, Any]:
    entries = _entries()
    if plain_only:  # only the entries of the common shape (a, b and c)
        entries = {p: e for p, e in entries.items() if p < "fw/d"}
    return json.loads(canonical(Targets(version=2, targets=entries).to_dict()))


def _eager(d: Any, limits: Limits) -> Targets:
    """The reference: the decoder as it was before TargetMap, every entry built at once
    (``_plain_entry`` answering "not decided here" for every entry)."""
    real = metadata._plain_entry
    metadata._plain_entry = lambda td, limits: False
    try:
        return Targets.from_dict(copy.deepcopy(d), limits)
    finally:
        metadata._plain_entry = real


def test_decoded_targets_are_built_on_lookup() -> None:
    t = Targets.from_dict(_doc(), PRIMARY)
    assert isinstance(t.targets, TargetMap)
    # the plain entries wait, the others (url, shallMatch, ECU ids, encryption) are built
    waiting = [p for p, v in t.targets._entries.items() if isinstance(v, dict)]
    assert waiting == ["fw/a.bin", "fw/b.bin", "fw/c.bin"]
    assert t.targets["fw/b.bin"] == _entries()["fw/b.bin"]
    assert isinstance(t.targets._entries["fw/b.bin"], TargetFile)  # built once, kept
    assert t.targets["fw/b.bin"] is t.targets["fw/b.bin"]


def test_target_map_is_a_mapping_of_built_entries() -> None:
    t = Targets.from_dict(_doc(), PRIMARY)
    m = t.targets
    assert list(m) == sorted(_entries()) and len(m) == 5
    assert "fw/a.bin" in m and "nope" not in m and m.get("nope") is None
    assert m == _entries() and _entries() == m
    assert dict(m.items()) == _entries() and list(m.values()) == list(_entries().values())
    assert not any(isinstance(v, dict) for v in m._entries.values())  # items() built them
    assert t == Targets(version=2, targets=_entries(), expires=t.expires)
    assert "TargetMap({" in repr(m)
    # the repository builder edits targets in place
    m["fw/z.bin"] = TargetFile.from_data("fw/z.bin", b"z")
    del m["fw/a.bin"]
    assert list(m)[-1] == "fw/z.bin" and "fw/a.bin" not in m
    m.clear()
    assert m == {} and not m
    with pytest.raises(KeyError):
        m["fw/a.bin"]


def test_metadata_round_trip_with_unbuilt_entries() -> None:
    t = Targets.from_dict(_doc(), PRIMARY)
    assert canonical(t.to_dict()) == canonical(_doc())


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(entry: dict[str, Any]) -> None:
        for key in path[:-1]:
            entry = entry.setdefault(key, {})
        entry[path[-1]] = value

    return edit


#: (edit of a plain entry, the error, caps lowered for the case)
BAD_ENTRIES: list[
    tuple[Callable[[dict[str, Any]], None], type[Exception] | None, dict[str, int]]
] = [
    (_set(("hashes", "sha256"), "xyz"), MalformedInput, {}),
    (_set(("hashes", "sha256"), "abc"), MalformedInput, {}),
    (_set(("hashes", "sha256"), 7), MalformedInput, {}),
    (_set(("hashes",), {}), MalformedInput, {}),
    (_set(("hashes", "sha256"), "ab" * 513), LimitExceeded, {}),
    (_set(("hashes", "sha512"), "ab"), LimitExceeded, {"max_hashes": 1}),
    (_set(("length",), -1), MalformedInput, {}),
    (_set(("length",), True), MalformedInput, {}),
    (_set(("length",), "1"), MalformedInput, {}),
    (_set(("custom",), []), MalformedInput, {}),
    (_set(("custom", "releaseCounter"), None), MalformedInput, {}),
    (_set(("custom", "releaseCounter"), -1), MalformedInput, {}),
    (_set(("custom", "releaseCounter"), False), MalformedInput, {}),
    (_set(("custom", "hardwareIds"), ["hw", 3]), MalformedInput, {}),
    (_set(("custom", "hardwareIds"), "hw"), MalformedInput, {}),
    (_set(("custom", "hardwareIds"), ["h"] * 3), LimitExceeded, {"max_hardware_ids": 2}),
    (_set(("custom", "hardwareIds"), ["h" * 9]), LimitExceeded, {"max_string": 8}),
    (_set(("custom", "releaseCounter"), 1), LimitExceeded, {"max_custom_items": 1}),
    (lambda entry: entry.pop("hashes"), MalformedInput, {}),
    (lambda entry: entry.pop("length"), MalformedInput, {}),
    (None, LimitExceeded, {"max_string": 7}),  # the path "fw/c.bin" itself
    # fine: a second hash, a null hardwareIds (none), an unknown field
    (_set(("hashes", "sha512"), "ab"), None, {}),
    (_set(("custom", "hardwareIds"), None), None, {}),
    (_set(("x",), [1]), None, {}),
]


@pytest.mark.parametrize(("edit", "error", "caps"), BAD_ENTRIES)
@pytest.mark.parametrize("base", [PRIMARY, CONSTRAINED], ids=["primary", "constrained"])
def test_every_entry_is_checked_at_decode_not_only_the_one_looked_up(
    edit: Callable[[dict[str, Any]], None] | None,
    error: type[Exception] | None,
    caps: dict[str, int],
    base: Limits,
) -> None:
    """A bad entry that no lookup will ever reach still fails the whole role, at decode
    (python-tuf does the same), with the error that building every entry at once gives."""
    limits = base.replace(**caps)
    d = _doc(plain_only=True)  # so that the lowered caps fail this entry only
    entry = d["targets"]["fw/c.bin"]
    entry["custom"] = {"hardwareIds": ["hw"]}
    if edit is not None:
        edit(entry)
    else:  # the others' paths are no longer than this one: shorten them
        d["targets"] = {"fw/c.bin": entry, "a": d["targets"]["fw/a.bin"]}
    if error is None:
        got = Targets.from_dict(copy.deepcopy(d), limits)
        assert got.targets["fw/c.bin"] == _eager(d, limits).targets["fw/c.bin"]
        return
    with pytest.raises(error):
        Targets.from_dict(copy.deepcopy(d), limits)
    with pytest.raises(error):
        _eager(d, limits)


def test_a_decoded_role_fails_at_decode_in_the_full_decoder_too() -> None:
    from test_fuzz_json import sample_repo

    repo = sample_repo()
    md = json.loads(repo.file("targets.json"))
    md["signed"]["targets"]["fw/a.bin"]["hashes"]["sha256"] = "0"  # odd-length hex
    with pytest.raises(MalformedInput):
        Metadata.from_json(json.dumps(md).encode(), PRIMARY)


@st.composite
def mutated_docs(draw: st.DrawFn) -> Any:
    return mutate_fields(draw, _doc())


@FUZZ
@given(mutated_docs(), st.sampled_from([PRIMARY, CONSTRAINED]))
def test_lazy_decode_refuses_and_builds_exactly_what_eager_decode_does(
    d: Any, limits: Limits
) -> None:
    try:
        want = _eager(d, limits)
    except UptaneError as e:
        with pytest.raises(type(e)):
            Targets.from_dict(copy.deepcopy(d), limits)
        return
    got = Targets.from_dict(copy.deepcopy(d), limits)
    assert not any(isinstance(v, dict) for v in want.targets._entries.values())
    for path in want.targets:  # each lookup builds what the eager decode built
        assert got.targets[path] == want.targets[path]
    assert got == want


def _or_junk(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, strategy, strategy, json_values)


_hex = st.binary(max_size=40).map(bytes.hex) | st.integers(510, 514).map(lambda n: "ab" * n)
#: entries close to the common shape, each field sometimes out of shape or out of bounds
plain_ish_entries = st.fixed_dictionaries(
    {
        "length": _or_junk(st.integers(-3, 2**64)),
        "hashes": _or_junk(
            st.dictionaries(
                st.sampled_from(["sha256", "sha512", "x"]),
                _or_junk(st.one_of(_hex, _hex.map(lambda h: h + "0"), _hex.map(str.upper))),
                max_size=10,
            )
        ),
    },
    optional={
        "custom": _or_junk(
            st.fixed_dictionaries(
                {},
                optional={
                    "hardwareIds": _or_junk(
                        st.lists(_or_junk(st.text(max_size=3)), max_size=70)
                        | st.integers(1020, 1030).map(lambda n: ["h" * n])
                    ),
                    "releaseCounter": _or_junk(st.integers(-3, 3) | st.booleans()),
                    "uri": st.text(max_size=3),
                },
            )
        ),
        "extra": json_values,
    },
)


@FUZZ
@given(st.one_of(plain_ish_entries, json_values))
def test_a_plain_entry_always_builds(td: Any) -> None:
    """``_plain_entry`` True promises that ``TargetFile.from_dict`` succeeds later; and for
    entries close to the common shape, the lazy decode refuses what the eager one does."""
    for limits in (PRIMARY, CONSTRAINED):
        if _plain_entry(td, limits):
            TargetFile.from_dict("p", copy.deepcopy(td), limits)
        d = _doc()
        d["targets"]["fw/c.bin"] = td
        try:
            want = _eager(d, limits)
        except UptaneError as e:
            with pytest.raises(type(e)):
                Targets.from_dict(copy.deepcopy(d), limits)
            continue
        assert Targets.from_dict(copy.deepcopy(d), limits) == want
