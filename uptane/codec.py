"""The codec seam: every wire encoding of metadata and manifests behind one interface.

A :class:`Codec` knows everything that differs between encodings: its name (the value of
an envelope's ``encoding``: ``"json"``, ``"der"``), file suffix, HTTP media types, first
byte, how a signature names its key, and how to encode and decode metadata envelopes and
their signed payloads, ECU version reports and vehicle version manifests, the TAP 4 map
file, and Director targets for a partial-verification ECU. Three are registered:

- :data:`JSON_CODEC` (``json``): TUF canonical JSON, :mod:`uptane.encoding.json`;
- :data:`DER_CODEC` (``der``): the standard DER of the Uptane ASN.1 modules (uptane/asn1 as
  POUF 1 publishes them, with Standard 2.x extension additions),
  :mod:`uptane.encoding.uptane_der`; the default DER, what other Uptane implementations
  read;
- :data:`COMPACT_DER_CODEC` (``compact-der``): this project's own smaller DER profile
  (:mod:`uptane.encoding.der`), never called Uptane DER, for constrained links that
  negotiate it (bench figure 9: about 0.4 of the JSON size where the standard DER is
  about 0.5). docs/der-profile.md describes both.

Code outside this module asks for a codec instead of comparing encoding names::

    from uptane.codec import codec_for, for_filename, for_media_type, sniff

    codec = sniff(raw)                                   # by the first byte: { or 0x30 (der)
    report = codec.decode_manifest(raw, limits, kind=ECU_REPORT)
    codec = for_filename("3.root.der")                   # by the suffix
    md = codec.decode_metadata(data, limits, role_type="root")
    codec = for_media_type(request.headers["content-type"])
    response = Response(body, media_type=codec_for(enc).media_type)
    path = directory / f"{role}{codec_for(enc).suffix}"

Each lookup raises :class:`~uptane.errors.MalformedInput` (never KeyError) for an
unknown name, suffix, media type or first byte. The model keeps its encoding-neutral API
(``Metadata.to_bytes()``, ``decode(data, limits, encoding=...)``, ``SignedManifest``):
it asks the registry (:mod:`uptane.encoding.registry`) for the codec its ``encoding``
names. A new encoding (say a compact profile) is a class with the members of
:class:`Codec`, registered under its own name with :func:`register`; see docs/core.md,
"The codec seam".
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from uptane.encoding import der, uptane_der
from uptane.encoding.der_targets import walk_targets
from uptane.encoding.json import canonical, canonical_decoded, dumps, loads
from uptane.encoding.registry import (
    COMPACT_DER,
    DER,
    JSON,
    Codec,
    TargetsView,
    codec_for,
    codecs,
    for_filename,
    for_media_type,
    register,
    sniff,
)
from uptane.encoding.uptane_targets import walk_uptane_targets
from uptane.errors import NonCanonicalEncoding
from uptane.keys import Key
from uptane.limits import Limits
from uptane.manifest import EcuVersionReport, SignedManifest, VehicleVersionManifest
from uptane.metadata import KEYID_HINT_HEX, MapFile, Metadata, Signed, TargetFile, Targets

__all__ = [
    "COMPACT_DER",
    "COMPACT_DER_CODEC",
    "DER",
    "DER_CODEC",
    "JSON",
    "JSON_CODEC",
    "Codec",
    "CompactDerCodec",
    "JsonCodec",
    "TargetsView",
    "UptaneDerCodec",
    "codec_for",
    "codecs",
    "for_filename",
    "for_media_type",
    "register",
    "sniff",
]

_HEX_DIGITS = frozenset("0123456789abcdef")


@dataclass
class _DecodedTargets:
    """:class:`TargetsView` over targets decoded whole (no streaming reader): the floor
    is the whole metadata, and ``mine`` is looked up only when asked for."""

    metadata: Metadata[Targets]
    ecu_id: str

    @property
    def payload(self) -> bytes:
        signed = self.metadata.signed_bytes
        return signed if signed is not None else self.metadata.payload()

    @functools.cached_property
    def mine(self) -> TargetFile | None:
        # at most one entry names an ECU (check_director_targets refuses a repeated id)
        entries = self.metadata.signed.targets.values()
        return next((t for t in entries if self.ecu_id in t.ecu_ids), None)

    def floor(self) -> Metadata[Targets]:
        return self.metadata


class JsonCodec(Codec):
    """TUF canonical JSON: python-tuf's format, signed over the canonical form of
    ``signed``; signatures name the whole key id."""

    name = JSON
    suffix = ".json"
    media_type = "application/json"
    media_types = frozenset({"application/json"})
    first_byte: int | None = ord("{")

    def signature_keyid(self, keyid: str) -> str:
        return keyid

    def signature_fields(self, key: Key) -> dict[str, Any]:
        return {}

    def metadata_payload(self, signed: Signed) -> bytes:
        return canonical(signed.to_dict())

    def encode_metadata(self, md: Metadata[Any]) -> bytes:
        return dumps(md.to_dict())

    def decode_metadata(
        self, data: bytes, limits: Limits, *, role_type: str | None = None, cap: int | None = None
    ) -> Metadata[Any]:
        return Metadata.from_json(data, limits, role_type=role_type, cap=cap)

    def read_targets(
        self, data: bytes, limits: Limits, ecu_id: str, *, cap: int | None = None
    ) -> TargetsView:
        cap = limits.bytes_for_role("targets") if cap is None else cap
        md: Metadata[Targets] = self.decode_metadata(data, limits, role_type="targets", cap=cap)
        return _DecodedTargets(md, ecu_id)

    def manifest_payload(self, signed: EcuVersionReport | VehicleVersionManifest) -> bytes:
        return canonical(signed.to_dict())

    def received_manifest_payload(
        self, signed: EcuVersionReport | VehicleVersionManifest, received: dict[str, Any]
    ) -> bytes:
        # The model must write back exactly the signed part received. Comparing the trees
        # is comparing their canonical forms: the received tree came from the bounded
        # decoder (no floats, string keys only), and the model writes back str, non-bool
        # int (the readers refuse a bool where an int goes) or the very objects it kept of
        # that tree, so no two values are == without having one canonical form. Then the
        # bytes signed are those of the received part, encoded once, at C speed.
        if signed.to_dict() != received:
            raise NonCanonicalEncoding(
                f"{signed.type}: the signed part does not write back unchanged"
            )
        return canonical_decoded(received)

    def encode_manifest(self, manifest: SignedManifest[Any]) -> bytes:
        return dumps(manifest.to_dict())

    def decode_manifest(
        self, data: bytes, limits: Limits, *, kind: str | None = None, cap: int | None = None
    ) -> SignedManifest[Any]:
        cap = limits.manifest_bytes if cap is None else cap
        doc = loads(data, limits, cap=cap, what=f"{kind or 'manifest'} JSON")
        return SignedManifest.from_dict(doc, limits, kind=kind, encoding=self.name)

    def encode_map_file(self, map_file: MapFile) -> bytes:
        return map_file.to_json()

    def decode_map_file(self, data: bytes, limits: Limits) -> MapFile:
        return MapFile.from_json(data, limits)


class UptaneDerCodec(Codec):
    """The standard DER of the Uptane ASN.1 modules (docs/der-profile.md): strict,
    canonical; every signature is over the SHA-256 of the DER of the signed part, names
    its whole key id, its method and that hash (as POUF 1 and the reference
    implementation)."""

    name = DER
    suffix = ".der"
    media_type = "application/octet-stream"
    media_types = frozenset({"application/octet-stream", "application/der"})
    first_byte: int | None = 0x30  # SEQUENCE, constructed: every envelope is one

    def signature_keyid(self, keyid: str) -> str:
        return keyid

    def signature_fields(self, key: Key) -> dict[str, Any]:
        # Signature.method: the key's scheme (SignatureMethod); kept in the model's
        # Signature as the field "method", which only this codec writes
        return {"method": key.scheme}

    def metadata_payload(self, signed: Signed) -> bytes:
        return uptane_der.metadata_payload(signed)

    def encode_metadata(self, md: Metadata[Any]) -> bytes:
        return uptane_der.encode_metadata(md)

    def decode_metadata(
        self, data: bytes, limits: Limits, *, role_type: str | None = None, cap: int | None = None
    ) -> Metadata[Any]:
        return uptane_der.decode_metadata(data, limits, role_type=role_type, cap=cap)

    def read_targets(
        self, data: bytes, limits: Limits, ecu_id: str, *, cap: int | None = None
    ) -> TargetsView:
        # one entry at a time (uptane/encoding/uptane_targets.py), as for compact-der
        return walk_uptane_targets(bytes(data), limits, ecu_id, cap=cap)

    def manifest_payload(self, signed: EcuVersionReport | VehicleVersionManifest) -> bytes:
        return uptane_der.manifest_payload(signed.to_dict())

    def received_manifest_payload(
        self, signed: EcuVersionReport | VehicleVersionManifest, received: dict[str, Any]
    ) -> bytes:
        # the digest of the model's DER: decode_manifest checks that the whole input
        # re-encodes to itself, so this is the digest of the signed bytes received
        return self.manifest_payload(signed)

    def encode_manifest(self, manifest: SignedManifest[Any]) -> bytes:
        return uptane_der.encode_manifest(manifest.to_dict())

    def decode_manifest(
        self, data: bytes, limits: Limits, *, kind: str | None = None, cap: int | None = None
    ) -> SignedManifest[Any]:
        doc, digest = uptane_der.decode_manifest(data, limits, kind=kind, cap=cap)
        out: SignedManifest[Any] = SignedManifest.from_dict(
            doc, limits, kind=kind, encoding=self.name
        )
        der.require_same(bytes(data), self.encode_manifest(out), f"{out.kind} DER")
        out.signed_bytes = digest
        return out

    def encode_map_file(self, map_file: MapFile) -> bytes:
        return uptane_der.encode_map_file(map_file)

    def decode_map_file(self, data: bytes, limits: Limits) -> MapFile:
        return uptane_der.decode_map_file(data, limits)


class CompactDerCodec(Codec):
    """This project's compact DER profile (docs/der-profile.md, "compact-der"; not the
    Uptane modules): strict, canonical, signed over the DER of the signed part;
    signatures name an 8-byte key-id hint. It starts like the standard DER, so it is
    never sniffed: it is found by name, file name (``.cder``) or media type."""

    name = COMPACT_DER
    suffix = ".cder"
    media_type = "application/vnd.uptane-stack.compact-der"
    media_types = frozenset({media_type})
    first_byte: int | None = None

    def signature_keyid(self, keyid: str) -> str:
        # docs/der-profile.md, "Key-id hints in signatures": the first 8 bytes of a hex key
        # id. A verifier matches a hint against the role's authorized key ids only
        # (uptane.signatures.count_valid), so the 24 bytes saved per signature cost at most
        # an extra verify when two authorized ids share the prefix.
        if len(keyid) > KEYID_HINT_HEX and len(keyid) % 2 == 0 and _HEX_DIGITS.issuperset(keyid):
            return keyid[:KEYID_HINT_HEX]
        return keyid

    def signature_fields(self, key: Key) -> dict[str, Any]:
        return {}

    def metadata_payload(self, signed: Signed) -> bytes:
        return der.encode_signed(signed)

    def encode_metadata(self, md: Metadata[Any]) -> bytes:
        return der.encode_metadata(md)

    def decode_metadata(
        self, data: bytes, limits: Limits, *, role_type: str | None = None, cap: int | None = None
    ) -> Metadata[Any]:
        return der.decode_metadata(data, limits, role_type=role_type, cap=cap)

    def read_targets(
        self, data: bytes, limits: Limits, ecu_id: str, *, cap: int | None = None
    ) -> TargetsView:
        # one entry at a time (uptane/encoding/der_targets.py): a constrained ECU never
        # holds the whole model
        return walk_targets(bytes(data), limits, ecu_id, cap=cap)

    def manifest_payload(self, signed: EcuVersionReport | VehicleVersionManifest) -> bytes:
        return der.encode_manifest_signed(signed.to_dict())

    def received_manifest_payload(
        self, signed: EcuVersionReport | VehicleVersionManifest, received: dict[str, Any]
    ) -> bytes:
        # the DER of the model: decode_manifest checks that the whole input re-encodes
        # to itself, so this equals the signed bytes received
        return self.manifest_payload(signed)

    def encode_manifest(self, manifest: SignedManifest[Any]) -> bytes:
        return der.encode_manifest(manifest.to_dict())

    def decode_manifest(
        self, data: bytes, limits: Limits, *, kind: str | None = None, cap: int | None = None
    ) -> SignedManifest[Any]:
        doc, signed_span = der.decode_manifest(data, limits, kind=kind, cap=cap)
        out: SignedManifest[Any] = SignedManifest.from_dict(
            doc, limits, kind=kind, encoding=self.name
        )
        der.require_same(bytes(data), self.encode_manifest(out), f"{out.kind} DER")
        out.signed_bytes = signed_span
        return out

    def encode_map_file(self, map_file: MapFile) -> bytes:
        # a map file is not signed: compact-der has no form of its own for it
        return uptane_der.encode_map_file(map_file)

    def decode_map_file(self, data: bytes, limits: Limits) -> MapFile:
        return uptane_der.decode_map_file(data, limits)


JSON_CODEC: Codec = register(JsonCodec())
DER_CODEC: Codec = register(UptaneDerCodec())
COMPACT_DER_CODEC: Codec = register(CompactDerCodec())
