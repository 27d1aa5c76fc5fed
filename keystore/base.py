"""The interface every key source fills: signers for a role, and (for sources that hold
keys the owner may create) making and retiring keys.

A source only ever hands out :class:`uptane.keys.Signer` objects: something with a public
``key`` and a ``sign(bytes)`` method. Whether the private half is a file in memory or an
object inside a token that never leaves it is the source's business.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from uptane.keys import Key, Signer


@runtime_checkable
class KeySource(Protocol):
    """Signers for a role. ``signers(role)`` returns every key held here for ``role``
    (empty if none)."""

    def signers(self, role: str) -> list[Signer]: ...


@runtime_checkable
class KeyStore(KeySource, Protocol):
    """A key source that can also make new keys and put old ones aside (rotation)."""

    def describe(self) -> str:
        """Where the keys are, for a service's start-up lines (never a secret)."""
        ...

    def generate(self, role: str, scheme: str) -> Signer:
        """Make and keep a new key for ``role``; its signer."""
        ...

    def retire(self, role: str, keep: Iterable[str]) -> list[str]:
        """Put aside every key of ``role`` whose key id is not in ``keep`` (it signs no
        more); the key ids put aside."""
        ...


def authorized(source: KeySource, role: str, keyids: Iterable[str]) -> list[Signer]:
    """The signers of ``source`` for ``role`` whose keys the current root lists for it: a
    key made for a rotation signs only once a root naming it is published, and a retired
    one never again."""
    wanted = set(keyids)
    return [s for s in source.signers(role) if s.key.keyid in wanted]


def public_keys(source: KeySource, role: str) -> list[Key]:
    """The public halves of ``role``'s keys in ``source``."""
    return [s.key for s in source.signers(role)]


__all__ = ["KeySource", "KeyStore", "authorized", "public_keys"]
