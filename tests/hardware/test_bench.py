"""The bench tool's file handling (hardware/bench.py): which files of a metadata directory
it sends, in which order and encoding (told by the codec seam), and how it decodes an
ECU's report. The tool against a live ECU is tested in tests/secondary."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from hardware import bench
from uptane.codec import DER, JSON
from uptane.errors import MalformedInput
from uptane.keys import ED25519, PrivateKey
from uptane.manifest import EcuVersionReport, InstalledImage, SignedManifest
from uptane.metadata import TargetFile


def files(d: Path, *names: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name in names:
        (d / name).write_bytes(name.encode())
    return d


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("3.root.der", (3, "root", DER)),
        ("root.json", (-1, "root", JSON)),
        ("targets.der", (-1, "targets", DER)),
        ("12.brake.supplier.json", (12, "brake.supplier", JSON)),
        ("3.json", (-1, "3", JSON)),
        ("2.map.json", (2, "map", JSON)),
        ("map.json", None),
        ("targets.txt", None),
        ("README", None),
        (".der", None),
        ("targets.der.bak", None),
    ],
)
def test_file_names_and_their_encodings(name: str, parsed) -> None:
    assert bench._parse_name(name) == parsed


def test_partial_layout_sends_roots_ascending_then_the_targets(tmp_path: Path) -> None:
    d = files(tmp_path, "2.root.der", "10.root.der", "root.der", "targets.json", "notes.txt")
    sent = bench.load_metadata(d)
    assert [(f.role, f.encoding, f.data) for f in sent] == [
        ("root", DER, b"2.root.der"),
        ("root", DER, b"10.root.der"),
        ("targets", JSON, b"targets.json"),
    ]


def test_full_layout_sends_the_directors_targets_last(tmp_path: Path) -> None:
    files(tmp_path / "image", "1.root.der", "timestamp.der", "snapshot.der", "targets.der")
    files(tmp_path / "director", "1.root.der", "targets.der", "2.targets.der")
    files(tmp_path, "map.json")
    sent = [(f.repository, f.role, f.encoding) for f in bench.load_metadata(tmp_path)]
    assert sent == [
        ("director", "map", JSON),
        ("image", "root", DER),
        ("image", "timestamp", DER),
        ("image", "snapshot", DER),
        ("image", "targets", DER),
        ("director", "root", DER),
        ("director", "targets", DER),
    ]


def test_a_directory_without_targets_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no Director targets"):
        bench.load_metadata(files(tmp_path, "root.der", "targets.bin"))


@pytest.mark.parametrize("encoding", [JSON, DER])
def test_describe_report_tells_the_encoding_by_its_first_byte(encoding: str) -> None:
    tf = TargetFile.from_data("fw.bin", b"firmware", ("sha256",))
    now = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    body = EcuVersionReport("ECU-1", InstalledImage.from_target(tf), now, nonce=b"\x07" * 16)
    report = SignedManifest(body, encoding=encoding)
    report.sign(PrivateKey.generate(ED25519))
    shown = bench.describe_report(report.to_bytes())
    assert shown["encoding"] == encoding
    assert shown["signed"]["ecu_id"] == "ECU-1"
    assert shown["signed"]["installed_image"]["filename"] == "fw.bin"


@pytest.mark.parametrize("data", [b"", b"\x00junk", b"<xml/>"])
def test_describe_report_refuses_what_no_codec_starts_with(data: bytes) -> None:
    with pytest.raises(MalformedInput):
        bench.describe_report(data)
