"""The codec seam (uptane/codec.py): lookups by name, bytes, file name and media type; the
codecs give the very bytes the model's own methods give; and the import graph of
``uptane`` has no circle and no encoding branch outside the codecs."""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from uptane.codec import (
    COMPACT_DER,
    COMPACT_DER_CODEC,
    DER,
    DER_CODEC,
    JSON,
    JSON_CODEC,
    Codec,
    CompactDerCodec,
    codec_for,
    codecs,
    for_filename,
    for_media_type,
    register,
    sniff,
)
from uptane.errors import MalformedInput
from uptane.keys import PrivateKey
from uptane.limits import PRIMARY
from uptane.manifest import (
    ECU_REPORT,
    EcuVersionReport,
    InstalledImage,
    SignedManifest,
    decode_report,
)
from uptane.metadata import Metadata, TargetFile, Targets, decode, signature_keyid
from uptane.partial import listed_target

UPTANE = Path(__file__).resolve().parents[2] / "uptane"
NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
KEY = PrivateKey.generate()


# --- lookups ----------------------------------------------------------------------------------


def test_codecs_by_name_file_name_media_type_and_first_byte() -> None:
    assert codecs() == (JSON_CODEC, DER_CODEC, COMPACT_DER_CODEC)
    assert codec_for(JSON) is JSON_CODEC and codec_for(DER) is DER_CODEC
    # compact-der starts like the standard DER: found by name, file name, media type only
    assert codec_for(COMPACT_DER) is COMPACT_DER_CODEC and COMPACT_DER_CODEC.first_byte is None
    assert for_filename("3.root.cder") is COMPACT_DER_CODEC
    assert for_media_type("application/vnd.uptane-stack.compact-der") is COMPACT_DER_CODEC
    assert for_filename("targets.json") is JSON_CODEC
    assert for_filename("3.root.der") is DER_CODEC
    assert for_filename(str(Path("/x/y/1.root.json"))) is JSON_CODEC
    assert for_media_type("application/json") is JSON_CODEC
    assert for_media_type("Application/JSON; charset=utf-8") is JSON_CODEC
    assert for_media_type("application/octet-stream") is DER_CODEC
    assert for_media_type("application/der") is DER_CODEC
    assert sniff(b'{"signed":{}}') is JSON_CODEC
    assert sniff(b"\x30\x03\x02\x01\x01") is DER_CODEC
    assert sniff(memoryview(b"{}")) is JSON_CODEC and sniff(bytearray(b"0")) is DER_CODEC
    for codec in codecs():
        assert codec.media_type in codec.media_types
        assert for_filename(f"timestamp{codec.suffix}") is codec
        assert for_media_type(codec.media_type) is codec


@pytest.mark.parametrize(
    "lookup, value",
    [
        (codec_for, "cbor"),
        (codec_for, "JSON"),
        (codec_for, ""),
        (codec_for, None),
        (codec_for, 3),
        (for_filename, "targets.cbor"),
        (for_filename, "targets"),
        (for_filename, ""),
        (for_filename, "json"),
        (for_media_type, "text/plain"),
        (for_media_type, ""),
        (sniff, b""),
        (sniff, b" {}"),
        (sniff, b"\xa1"),
        (sniff, "{}"),
        (sniff, None),
    ],
)
def test_an_unknown_encoding_is_malformed_input_never_a_key_error(lookup, value) -> None:
    with pytest.raises(MalformedInput) as e:
        lookup(value)
    assert len(str(e.value)) < 300  # bounded: hostile names are cut, not echoed whole


def test_the_model_refuses_an_unknown_encoding_instead_of_falling_back_to_der() -> None:
    md = Metadata(Targets(), encoding="cbor")
    for call in (md.payload, md.to_bytes, lambda: md.sign(KEY)):
        with pytest.raises(MalformedInput, match="unknown encoding 'cbor'"):
            call()
    with pytest.raises(MalformedInput):
        decode(b"{}", PRIMARY, encoding="cbor")
    with pytest.raises(MalformedInput):
        signature_keyid(KEY.keyid, "cbor")


class _Clash(CompactDerCodec):
    name = "compact"
    suffix = ".compact"
    media_types = frozenset({"application/x-compact"})
    media_type = "application/x-compact"
    first_byte: int | None = None


@pytest.mark.parametrize(
    "field, value",
    [
        ("name", DER),
        ("suffix", ".json"),
        ("media_types", frozenset({"application/x-compact", "application/json"})),
        ("first_byte", 0x30),
        ("media_type", "application/x-other"),  # not among its own media_types
    ],
)
def test_register_refuses_a_second_claim_and_changes_nothing(field: str, value: object) -> None:
    codec = _Clash()
    setattr(codec, field, value)
    with pytest.raises(ValueError):
        register(codec)
    assert codecs() == (JSON_CODEC, DER_CODEC, COMPACT_DER_CODEC)
    with pytest.raises(MalformedInput):
        codec_for("compact")
    with pytest.raises(MalformedInput):
        for_filename("targets.compact")


# --- the codecs give the model's bytes ----------------------------------------------------------


def _targets(encoding: str) -> Metadata[Targets]:
    entries = [
        TargetFile.from_data(f"fw/{i}.bin", bytes([i]) * 9, ecu_ids={f"ecu-{i}": "hw"})
        for i in range(4)
    ]
    md = Metadata(Targets(version=7, targets={t.path: t for t in entries}), encoding=encoding)
    md.sign(KEY)
    return md


@pytest.mark.parametrize("encoding", [JSON, DER, COMPACT_DER])
def test_metadata_through_the_codec_is_the_model_s_bytes(encoding: str) -> None:
    codec: Codec = codec_for(encoding)
    md = _targets(encoding)
    data = md.to_bytes()
    assert codec.encode_metadata(md) == data
    assert codec.metadata_payload(md.signed) == md.payload() == md.signed_bytes
    assert codec.first_byte is None or sniff(data) is codec
    back = codec.decode_metadata(data, PRIMARY, role_type="targets")
    assert back.encoding == encoding and back.to_bytes() == data
    assert back.signed_bytes == md.signed_bytes
    assert decode(data, PRIMARY, encoding=encoding).to_bytes() == data


def test_a_signature_names_the_key_id_or_its_compact_der_hint() -> None:
    kid = KEY.keyid
    assert JSON_CODEC.signature_keyid(kid) == kid == signature_keyid(kid, JSON)
    assert DER_CODEC.signature_keyid(kid) == kid == signature_keyid(kid, DER)
    assert COMPACT_DER_CODEC.signature_keyid(kid) == kid[:16] == signature_keyid(kid, COMPACT_DER)
    # only a hex id longer than the hint is shortened
    for odd in ("a-key-name-that-is-long", kid.upper(), kid[:16], kid[:16] + "f"):
        assert COMPACT_DER_CODEC.signature_keyid(odd) == odd
    assert _targets(COMPACT_DER).signatures[0].keyid == kid[:16]
    # the standard DER's signatures name the whole id and the method (POUF 1)
    assert _targets(DER).signatures[0].keyid == kid
    assert _targets(DER).signatures[0].unrecognized == {"method": "ed25519"}


@pytest.mark.parametrize("encoding", [JSON, DER, COMPACT_DER])
def test_reports_through_the_codec_are_the_model_s_bytes(encoding: str) -> None:
    codec = codec_for(encoding)
    tf = TargetFile.from_data("fw/a.bin", b"a")
    body = EcuVersionReport("ecu-1", InstalledImage.from_target(tf), NOW, nonce=b"\x01" * 8)
    report = SignedManifest(body, encoding=encoding)
    report.sign(KEY)
    data = report.to_bytes()
    assert codec.encode_manifest(report) == data
    assert codec.manifest_payload(body) == report.payload() == report.signed_bytes
    back = codec.decode_manifest(data, PRIMARY, kind=ECU_REPORT)
    assert back.to_bytes() == data and back.signed_bytes == report.signed_bytes
    again = decode_report(data, PRIMARY, encoding)
    assert again.signed == body and again.encoding == encoding


@pytest.mark.parametrize("encoding", [JSON, DER, COMPACT_DER])
def test_read_targets_finds_this_ecu_s_entry_in_either_encoding(encoding: str) -> None:
    data = _targets(encoding).to_bytes()
    view = codec_for(encoding).read_targets(data, PRIMARY, "ecu-2")
    assert view.mine is not None and view.mine.path == "fw/2.bin"
    assert view.metadata.signed.version == 7
    assert bytes(view.payload) == _targets(encoding).signed_bytes
    assert view.floor().signed.version == 7
    assert codec_for(encoding).read_targets(data, PRIMARY, "ecu-9").mine is None
    assert listed_target(data, "fw/3.bin", PRIMARY, encoding=encoding) is not None


# --- structure: no circle, no encoding branch --------------------------------------------------


def _module_name(path: Path) -> str:
    parts = path.relative_to(UPTANE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The ``uptane`` modules ``module`` imports when it runs: every import statement, at
    any depth (a local import inside a function counts), except under ``if
    TYPE_CHECKING:``, which never runs. Like import-linter/grimp, the implicit import
    of a module's parent package is not an edge."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in known}


def _import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in UPTANE.rglob("*.py")}
    known = set(files)
    return {
        name: _imports(ast.parse(path.read_text()), name, path.name == "__init__.py", known)
        for name, path in files.items()
    }


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := walk(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := walk(start)) is not None:
            return found
    return None


def test_the_import_graph_of_uptane_has_no_cycle() -> None:
    graph = _import_graph()
    assert "uptane.metadata" in graph and "uptane.codec" in graph["uptane"]
    assert _find_cycle(graph) is None, " -> ".join(_find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_local_import_cycle() -> None:
    a = ast.parse("def f():\n    from uptane import b\n")
    b = ast.parse("from uptane.a import x\nif TYPE_CHECKING:\n    from uptane import c\n")
    known = {"uptane", "uptane.a", "uptane.b", "uptane.c"}
    graph = {
        "uptane.a": _imports(a, "uptane.a", False, known),
        "uptane.b": _imports(b, "uptane.b", False, known),
        "uptane.c": set(),
        "uptane": set(),
    }
    assert graph["uptane.b"] == {"uptane.a"}  # the TYPE_CHECKING import is no edge
    assert _find_cycle(graph) == ["uptane.a", "uptane.b", "uptane.a"]


def test_the_model_reaches_neither_der_nor_the_codecs() -> None:
    graph = _import_graph()
    for model in ("uptane.metadata", "uptane.manifest"):
        seen, todo = set(), [model]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        assert not seen & {"uptane.encoding.der", "uptane.codec"}, (model, sorted(seen))


_BRANCH = re.compile(
    r"""(?:==|!=)\s*(?:JSON|DER|["'](?:json|der)["'])(?![\w.])"""
    r"""|(?<![\w.])(?:JSON|DER|["'](?:json|der)["'])\s*(?:==|!=)"""
    r"""|\bin\s*[(\[{]\s*(?:JSON|DER)\b"""
)


def test_no_encoding_branch_outside_the_codec_module() -> None:
    hits = [
        f"{path.relative_to(UPTANE.parent)}:{n}: {line.strip()}"
        for path in sorted(UPTANE.rglob("*.py"))
        if path.name != "codec.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if _BRANCH.search(line.split("#", 1)[0])
    ]
    assert not hits, "\n".join(hits)


def test_the_branch_pattern_sees_the_forms_it_forbids() -> None:
    for line in ("if encoding == JSON:", 'if enc != "der":', "if DER == e:", "x in (JSON, DER)"):
        assert _BRANCH.search(line), line
    for line in ("encoding: str = JSON", "codec_for(DER)", "JSON_CODEC == x", "a == DER_CODEC"):
        assert not _BRANCH.search(line), line
