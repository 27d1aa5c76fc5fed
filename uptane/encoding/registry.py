"""The codecs by name: the interface every wire encoding implements, and the lookups.

This module sits *below* the model: at run time it imports nothing but the errors, so
:mod:`uptane.metadata` and :mod:`uptane.manifest` ask it for the codec named by an
envelope's ``encoding`` (``"json"``, ``"der"``) without importing any codec. The codecs
sit *above* the model (:mod:`uptane.codec`, whose DER codec uses
:mod:`uptane.encoding.der`, which builds model objects) and register here when
:mod:`uptane.codec` is imported; ``uptane/__init__.py`` imports it, so importing any part
of the package registers them. The model depends on this interface, the codecs implement
it: the dependency points down, no import goes round in a circle.

Callers import the lookups from :mod:`uptane.codec` (see its docstring for examples).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from uptane.errors import MalformedInput

if TYPE_CHECKING:  # types only: the model imports this module
    from uptane.keys import Key
    from uptane.limits import Limits
    from uptane.manifest import EcuVersionReport, SignedManifest, VehicleVersionManifest
    from uptane.metadata import MapFile, Metadata, Signed, TargetFile, Targets

#: the names of the encodings (``Metadata.encoding``): TUF canonical JSON, the standard
#: DER of the Uptane ASN.1 modules, and this project's compact DER profile
JSON = "json"
DER = "der"
COMPACT_DER = "compact-der"


class TargetsView(Protocol):
    """Director targets as a partial-verification Secondary reads them (§5.4.4.1):
    ``metadata`` (signatures, version, expiry, vehicle id, entries), ``payload`` (the
    bytes the signatures cover; DER gives a view into the input, not a copy), ``mine``
    (the first entry naming the ECU asked for, or None) and ``floor()`` (what to keep as
    the rollback floor once verified)."""

    @property
    def metadata(self) -> Metadata[Targets]: ...

    @property
    def payload(self) -> bytes | memoryview: ...

    @property
    def mine(self) -> TargetFile | None: ...

    def floor(self) -> Metadata[Targets]: ...


class Codec(Protocol):
    """One wire encoding of metadata and manifests.

    ``name`` is what an envelope's ``encoding`` holds and the last part of its file names
    (``targets.der``); ``suffix`` the file suffix; ``media_type`` what a server sends and
    ``media_types`` what it accepts (``media_type`` among them); ``first_byte`` the byte
    every document starts with, or None when :func:`sniff` cannot tell it from others.
    Every decoder is bounded by ``limits`` and ``cap`` and raises only
    :mod:`uptane.errors` errors.
    """

    name: str
    suffix: str
    media_type: str
    media_types: frozenset[str]
    first_byte: int | None

    def signature_keyid(self, keyid: str) -> str:
        """How a new signature in this encoding names the key ``keyid``."""
        ...

    def signature_fields(self, key: Key) -> dict[str, Any]:
        """Fields a new signature by ``key`` carries besides its key id and value (the
        standard DER's ``method``), kept in :attr:`Signature.unrecognized`."""
        ...

    def metadata_payload(self, signed: Signed) -> bytes:
        """The bytes a metadata signature covers: the encoded signed part."""
        ...

    def encode_metadata(self, md: Metadata[Any]) -> bytes:
        """The whole envelope {signed, signatures}."""
        ...

    def decode_metadata(
        self, data: bytes, limits: Limits, *, role_type: str | None = None, cap: int | None = None
    ) -> Metadata[Any]:
        """Metadata decoded strictly; ``role_type`` pins the type, ``cap`` bounds the length
        (default: the cap of ``role_type``)."""
        ...

    def read_targets(
        self, data: bytes, limits: Limits, ecu_id: str, *, cap: int | None = None
    ) -> TargetsView:
        """Targets metadata as a partial-verification ECU needs it (default cap: the
        targets cap); as strict as :meth:`decode_metadata`, and no signature checked."""
        ...

    def manifest_payload(self, signed: EcuVersionReport | VehicleVersionManifest) -> bytes:
        """The bytes a report's or vehicle manifest's signature covers."""
        ...

    def received_manifest_payload(
        self, signed: EcuVersionReport | VehicleVersionManifest, received: dict[str, Any]
    ) -> bytes:
        """The signed bytes of a report or manifest built from ``received`` (its JSON
        shape, as decoded); refuses a model that does not write back what was received."""
        ...

    def encode_manifest(self, manifest: SignedManifest[Any]) -> bytes:
        """The whole signed report or vehicle manifest."""
        ...

    def decode_manifest(
        self, data: bytes, limits: Limits, *, kind: str | None = None, cap: int | None = None
    ) -> SignedManifest[Any]:
        """A signed report or vehicle manifest decoded strictly (``kind`` pins which one;
        default cap ``limits.manifest_bytes``); ``signed_bytes`` is what was signed."""
        ...

    def encode_map_file(self, map_file: MapFile) -> bytes:
        """The TAP 4 map file (not signed)."""
        ...

    def decode_map_file(self, data: bytes, limits: Limits) -> MapFile:
        """A map file decoded strictly, under ``limits.map_file_bytes``."""
        ...


_BY_NAME: dict[str, Codec] = {}
_BY_SUFFIX: dict[str, Codec] = {}
_BY_MEDIA: dict[str, Codec] = {}
_BY_FIRST_BYTE: dict[int, Codec] = {}


def register(codec: Codec) -> Codec:
    """Make ``codec`` known by its name, suffix, media types and first byte. A second codec
    claiming any of them is a programming error (ValueError), not input to refuse."""
    first = codec.first_byte
    taken = [
        what
        for what, clash in (
            ("name", codec.name in _BY_NAME),
            ("suffix", codec.suffix in _BY_SUFFIX),
            ("media type", any(m in _BY_MEDIA for m in codec.media_types)),
            ("first byte", first is not None and first in _BY_FIRST_BYTE),
        )
        if clash
    ]
    if taken or codec.media_type not in codec.media_types:
        raise ValueError(f"codec {codec.name!r}: {taken or 'media_type not in media_types'}")
    _BY_NAME[codec.name] = codec
    _BY_SUFFIX[codec.suffix] = codec
    _BY_MEDIA.update(dict.fromkeys(codec.media_types, codec))
    if first is not None:
        _BY_FIRST_BYTE[first] = codec
    return codec


def codecs() -> tuple[Codec, ...]:
    """Every registered codec, in the order registered (JSON first)."""
    return tuple(_BY_NAME.values())


def _known(table: dict[str, Codec]) -> str:
    return ", ".join(sorted(table))


def codec_for(name: str) -> Codec:
    """The codec named ``name`` (an envelope's ``encoding``, a configured encoding);
    :class:`~uptane.errors.MalformedInput` for a name no codec has."""
    codec = _BY_NAME.get(name) if isinstance(name, str) else None
    if codec is None:
        raise MalformedInput(f"unknown encoding {str(name)[:32]!r}; use one of {_known(_BY_NAME)}")
    return codec


def sniff(data: bytes | bytearray | memoryview) -> Codec:
    """The codec of a document, told by its first byte (``{`` JSON, ``0x30`` DER);
    :class:`~uptane.errors.MalformedInput` for empty input or any other first byte. Only
    a guess at the encoding: the codec's decoder still checks everything."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or not len(data):
        raise MalformedInput("cannot tell the encoding of empty or non-bytes input")
    first = data[0]
    codec = _BY_FIRST_BYTE.get(first)
    if codec is None:
        starts = ", ".join(f"0x{b:02x} {c.name}" for b, c in sorted(_BY_FIRST_BYTE.items()))
        raise MalformedInput(f"cannot tell the encoding: first byte 0x{first:02x}, not {starts}")
    return codec


def for_filename(name: str) -> Codec:
    """The codec of a file by its suffix (``targets.json``, ``3.root.der``);
    :class:`~uptane.errors.MalformedInput` for any other suffix."""
    text = str(name)
    dot = text.rfind(".")
    codec = _BY_SUFFIX.get(text[dot:]) if dot >= 0 else None
    if codec is None:
        raise MalformedInput(
            f"no encoding for file {text[-64:]!r}; name it with one of {_known(_BY_SUFFIX)}"
        )
    return codec


def for_media_type(content_type: str) -> Codec:
    """The codec of an HTTP ``Content-Type`` (parameters such as ``; charset=utf-8`` and
    case ignored); :class:`~uptane.errors.MalformedInput` for a type no codec accepts."""
    media = str(content_type).split(";", 1)[0].strip().lower()
    codec = _BY_MEDIA.get(media)
    if codec is None:
        raise MalformedInput(
            f"unsupported media type {media[:64]!r}; send one of {_known(_BY_MEDIA)}"
        )
    return codec
