"""Threshold signing ceremonies: metadata that several key holders sign one after another.

A ceremony starts from the next version of a role (root, or an Image repository's
top-level targets) and writes it, unsigned, to a **pending file** (JSON, no secret in it:
give it to each signer by any means). Each signer adds their signature in every encoding
with their own key (a key file in their own directory, or a key in their token):
:meth:`Pending.sign`. :meth:`Pending.status` shows who signed and what is missing;
publishing (the repositories' own code) checks the thresholds again against the
repository's current root and refuses below them.

What must sign:

- a root: a threshold of the **current** root's root keys and a threshold of the **new**
  root's root keys (§5.4.4.3: a vehicle accepts version N+1 only with both), so a change
  of keys, of threshold or of key types is signed by both sets;
- a top-level targets: a threshold of the targets keys of the root it will be published
  under (the current root, or a root whose ceremony is published together with it).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage import read_capped, write_json
from uptane.codec import codec_for
from uptane.encoding.json import loads
from uptane.errors import MalformedInput
from uptane.keys import Key, Signer
from uptane.limits import Limits
from uptane.metadata import JSON, Metadata, Root, Signed, decode
from uptane.repository import TOP
from uptane.signatures import count_valid

FORMAT = 1
#: pending files hold only public data (readable by anyone who checks them)
PENDING_MODE = 0o644
#: the largest pending file read: a root and its authority in two encodings, many signers
MAX_PENDING = 8 * 1024 * 1024
CEREMONY_ROLES = ("root", "targets")


class BelowThreshold(PermissionError):
    """A pending file short of signatures: not an attack, a ceremony not finished yet."""


@dataclass
class Requirement:
    """One threshold a pending file must meet, and how far it is."""

    what: str
    keys: dict[str, Key]
    threshold: int
    signed: list[str] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return max(0, self.threshold - len(self.signed))

    @property
    def unsigned(self) -> list[str]:
        return sorted(k for k in self.keys if k not in self.signed)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise MalformedInput(f"pending file: {what} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedInput(f"pending file: {what} is not base64") from None


@dataclass
class Pending:
    """A role's next version waiting for signatures (see the module docstring)."""

    repository: str
    role: str
    #: encoding -> the whole metadata envelope, with the signatures so far
    envelopes: dict[str, bytes]
    #: the root (JSON bytes) whose keys authorise it: the current root
    authority: bytes
    #: key id -> who signed with it (as the signer named themselves)
    signers: dict[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits.primary)
    #: encoding -> (the envelope bytes, their decoded metadata): a publish asks for the
    #: same decode a dozen times (bench figure 13: 14 decodes of a 1,000-entry targets,
    #: 1.7 s an add); decoding is a pure function of the bytes, so it is kept per bytes
    _decoded: dict[str, tuple[bytes, Metadata[Any]]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    #: the envelopes :meth:`model` last checked, and the model it found
    _checked: tuple[tuple[bytes, ...], Any] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    # --- making, reading, writing ---------------------------------------------------------

    @classmethod
    def start(
        cls, repository: str, model: Signed, encodings: tuple[str, ...], authority: bytes
    ) -> Pending:
        if model.type not in CEREMONY_ROLES:
            raise ValueError(f"ceremonies sign root or targets, not {model.type}")
        envelopes = {e: Metadata(model, encoding=e).to_bytes() for e in encodings}
        return cls(repository, model.type, envelopes, authority)

    @classmethod
    def load(cls, path: Path, limits: Limits | None = None) -> Pending:
        """A pending file from someone else: read capped, decoded by the bounded decoder
        (depth, sizes), every field checked; MalformedInput otherwise."""
        limits = limits or Limits.primary()
        # the envelopes are long base64 strings; what they hold is decoded under ``limits``
        outer = dataclasses.replace(limits, max_string=MAX_PENDING)
        d = loads(read_capped(path, MAX_PENDING), outer, cap=MAX_PENDING, what="pending file")
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise MalformedInput(f"{path} is not a pending metadata file")
        role = d.get("role")
        if role not in CEREMONY_ROLES or not isinstance(d.get("repository"), str):
            raise MalformedInput("pending file: bad role or repository")
        env = d.get("metadata")
        signers = d.get("signers", {})
        if not isinstance(env, dict) or not env or not isinstance(signers, dict):
            raise MalformedInput("pending file: metadata and signers must be objects")
        p = cls(
            d["repository"],
            role,
            {str(e): _unb64(v, f"metadata.{e}") for e, v in env.items()},
            _unb64(d.get("authority"), "authority"),
            {str(k): str(v)[:64] for k, v in signers.items()},
            limits,
        )
        p.model()  # every encoding decodes, and all carry the same signed content
        return p

    def save(self, path: Path) -> None:
        write_json(
            path,
            {
                "format": FORMAT,
                "repository": self.repository,
                "role": self.role,
                "version": self.model().version,
                "authority": _b64(self.authority),
                "metadata": {e: _b64(v) for e, v in self.envelopes.items()},
                "signers": self.signers,
            },
            mode=PENDING_MODE,
        )

    def _decode(self, encoding: str) -> Metadata[Any]:
        return decode(self.envelopes[encoding], self.limits, encoding=encoding, role_type=self.role)

    def metadata(self, encoding: str) -> Metadata[Any]:
        """The envelope of ``encoding``, decoded once per envelope bytes (read it only:
        :meth:`sign` decodes a fresh copy to change)."""
        data = self.envelopes[encoding]
        hit = self._decoded.get(encoding)
        if hit is None or hit[0] is not data:
            hit = self._decoded[encoding] = (data, self._decode(encoding))
        return hit[1]

    def model(self) -> Any:
        """The signed part (the same in every encoding, or MalformedInput)."""
        key = tuple(self.envelopes.values())
        if (
            self._checked is not None
            and all(a is b for a, b in zip(self._checked[0], key, strict=False))
            and len(self._checked[0]) == len(key)
        ):
            return self._checked[1]
        models = [self.metadata(e).signed for e in self.envelopes]
        first = models[0].to_dict()
        if any(m.to_dict() != first for m in models[1:]):
            raise MalformedInput("pending file: the encodings carry different content")
        self._checked = (key, models[0])
        return models[0]

    def authority_root(self) -> Root:
        root = decode(self.authority, self.limits, encoding=JSON, role_type="root").signed
        assert isinstance(root, Root)
        return root

    # --- the ceremony ---------------------------------------------------------------------

    def requirements(self, authority: Root | None = None) -> list[Requirement]:
        """The thresholds to meet, judged against ``authority`` (default: the root the
        file names); each with the key ids that signed it validly in every encoding."""
        auth = authority or self.authority_root()
        model = self.model()
        if self.role == "root":
            old_keys, old = auth.role_keys("root")
            new_keys, new = model.role_keys("root")
            reqs = [
                Requirement(f"root v{auth.version} (current) root keys", old_keys, old.threshold),
                Requirement(f"root v{model.version} (new) root keys", new_keys, new.threshold),
            ]
        else:
            keys, entry = auth.role_keys("targets")
            reqs = [Requirement(f"targets keys of root v{auth.version}", keys, entry.threshold)]
        for req in reqs:
            req.signed = self._valid(req.keys)
        return reqs

    def _valid(self, keys: dict[str, Key]) -> list[str]:
        """The key ids among ``keys`` whose signature verifies in every encoding."""
        good = set(keys)
        for enc in self.envelopes:
            md = self.metadata(enc)
            assert md.signed_bytes is not None
            ok = {
                kid
                for kid in good
                if count_valid(md.signed_bytes, md.signatures, {kid: keys[kid]}, [kid]) == 1
            }
            good &= ok
        return sorted(good)

    def sign(self, signer: Signer, who: str) -> None:
        """Add ``signer``'s signature in every encoding. Refused when the key is not one
        this file needs, or when an encoding would not keep its signed bytes."""
        needed = {k for req in self.requirements() for k in req.keys}
        if signer.key.keyid not in needed:
            raise PermissionError(
                f"key {signer.key.keyid[:16]} is not one this {self.role} v"
                f"{self.model().version} needs (run `ceremony status` to see which are)"
            )
        out = {}
        for enc in self.envelopes:
            md = self._decode(enc)
            before = md.signed_bytes
            md.sign(signer)
            if md.signed_bytes != before:
                raise MalformedInput(f"pending file: the {enc} signed part does not re-encode")
            out[enc] = codec_for(enc).encode_metadata(md)
        self.envelopes = out
        self.signers[signer.key.keyid] = who[:64]

    def check(self, authority: Root | None = None) -> None:
        """BelowThreshold unless every requirement is met (publishing calls it)."""
        short = [r for r in self.requirements(authority) if r.missing]
        if short:
            raise BelowThreshold(
                f"{self.role} v{self.model().version} is below threshold, nothing published: "
                + "; ".join(f"{r.what}: {len(r.signed)} of {r.threshold}" for r in short)
                + " (more holders sign with `ceremony sign`; `ceremony status` shows who)"
            )

    def files(self) -> dict[str, bytes]:
        """The signed bytes to publish, by encoding."""
        return dict(self.envelopes)

    def status_lines(self, authority: Root | None = None) -> list[str]:
        """What ``ceremony status`` prints: per threshold, who signed and what is missing."""
        model = self.model()
        lines = [
            f"{self.repository} {self.role} version {model.version}"
            f" (expires {model.expires.isoformat()}), encodings {', '.join(self.envelopes)}"
        ]
        for req in self.requirements(authority):
            state = "met" if not req.missing else f"{req.missing} more needed"
            lines.append(f"  {req.what}: {len(req.signed)} of {req.threshold} ({state})")
            for kid in req.signed:
                lines.append(f"    signed   {kid[:16]}  {self.signers.get(kid, '?')}")
            for kid in req.unsigned:
                lines.append(f"    waiting  {kid[:16]}  ({req.keys[kid].scheme})")
        return lines


@dataclass
class RootChange:
    """Keys added and removed, and thresholds set, per top-level role."""

    add: dict[str, list[Key]] = field(default_factory=dict)
    remove: dict[str, list[str]] = field(default_factory=dict)
    thresholds: dict[str, int] = field(default_factory=dict)

    def apply(self, root: Root) -> None:
        """Change ``root`` in place; ValueError if a role would be left unable to sign."""
        for role in {*self.add, *self.remove, *self.thresholds} - set(TOP):
            raise ValueError(f"unknown role {role!r}: use one of {TOP}")
        for role, keyids in self.remove.items():
            for kid in keyids:
                full = _expand(root, role, kid)
                root.revoke_key(full, role)
        for role, keys in self.add.items():
            for key in keys:
                root.add_key(key, role)
        for role, t in self.thresholds.items():
            root.roles[role].threshold = t
        for role in TOP:
            entry = root.roles[role]
            if not 1 <= entry.threshold <= len(entry.keyids):
                raise ValueError(
                    f"{role}: threshold {entry.threshold} of {len(entry.keyids)} key(s) could"
                    " never be met"
                )


def _expand(root: Root, role: str, kid: str) -> str:
    """A key id, or a unique prefix of one (what ``status`` prints), of ``role``."""
    found = [k for k in root.roles[role].keyids if k.startswith(kid.lower())]
    if len(found) != 1:
        raise ValueError(f"{role} has {len(found)} key(s) whose id starts {kid[:16]!r}")
    return found[0]


@dataclass
class Outcome:
    """What a change came to: published at once, or waiting in a pending file."""

    role: str
    version: int
    published: bool
    pending: Path | None = None
    status: list[str] = field(default_factory=list)


def summary(model: Signed) -> list[str]:
    """What a signer is asked to sign, in a few lines (printed before signing)."""
    lines = [f"{model.type} version {model.version}, expires {model.expires.isoformat()}"]
    if isinstance(model, Root):
        for role, entry in sorted(model.roles.items()):
            schemes = sorted({model.keys[k].scheme for k in entry.keyids if k in model.keys})
            lines.append(
                f"  {role}: {entry.threshold} of {len(entry.keyids)} ({', '.join(schemes)})"
            )
    else:
        targets = getattr(model, "targets", {})
        dels = getattr(model, "delegations", None)
        roles = [d.name for d in (dels.roles or [])] if dels is not None else []
        lines.append(f"  {len(targets)} target(s); delegations: {', '.join(roles) or 'none'}")
    return lines


__all__ = [
    "CEREMONY_ROLES",
    "BelowThreshold",
    "Outcome",
    "Pending",
    "Requirement",
    "RootChange",
    "summary",
]
