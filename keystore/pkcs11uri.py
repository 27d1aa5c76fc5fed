"""PKCS#11 URIs (RFC 7512): which module, which token, which object, and where the PIN
comes from, in one string.

``pkcs11:token=uptane-image;object=timestamp?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/hsm.pin``

Path attributes (``;``-separated) pick the token and the object; query attributes
(``&``-separated) name the module and the PIN. Values are percent-encoded (§2.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote, unquote_to_bytes

#: RFC 7512 §2.3: the attributes this project reads; any other is refused, not ignored
PATH_ATTRS = {
    "token",
    "manufacturer",
    "serial",
    "model",
    "object",
    "type",
    "id",
    "slot-id",
    "slot-description",
    "slot-manufacturer",
    "library-manufacturer",
    "library-description",
    "library-version",
}
QUERY_ATTRS = {"module-path", "module-name", "pin-source", "pin-value"}
SCHEME = "pkcs11:"
#: an URI longer than this is not a configuration value
MAX_URI = 4096


class BadUri(ValueError):
    """A string that is not a PKCS#11 URI this project can use."""


def _pairs(text: str, sep: str, allowed: set[str], where: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for part in filter(None, text.split(sep)):
        name, eq, value = part.partition("=")
        if not eq or name not in allowed:
            raise BadUri(f"PKCS#11 URI: unknown or malformed {where} attribute {part[:40]!r}")
        if name in out:
            raise BadUri(f"PKCS#11 URI: {name} appears twice")
        out[name] = unquote_to_bytes(value)
    return out


@dataclass(frozen=True)
class Pkcs11Uri:
    """A parsed ``pkcs11:`` URI: path attributes and query attributes, decoded."""

    path: dict[str, bytes] = field(default_factory=dict)
    query: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Pkcs11Uri:
        if len(text) > MAX_URI or not text.startswith(SCHEME):
            raise BadUri("a PKCS#11 URI starts with 'pkcs11:' (RFC 7512)")
        body = text[len(SCHEME) :]
        path, _, query = body.partition("?")
        return cls(_pairs(path, ";", PATH_ATTRS, "path"), _pairs(query, "&", QUERY_ATTRS, "query"))

    def text(self, name: str) -> str | None:
        value = self.path.get(name, self.query.get(name))
        return None if value is None else value.decode("utf-8")

    @property
    def token(self) -> str | None:
        return self.text("token")

    @property
    def object(self) -> str | None:
        return self.text("object")

    @property
    def object_id(self) -> bytes | None:
        return self.path.get("id")

    @property
    def module_path(self) -> str | None:
        return self.text("module-path")

    def with_object(self, label: str) -> Pkcs11Uri:
        """The same token, naming the object ``label``."""
        path = {k: v for k, v in self.path.items() if k not in ("object", "id", "type")}
        path["object"] = label.encode("utf-8")
        return Pkcs11Uri(path, dict(self.query))

    def __str__(self) -> str:
        """The URI without ``pin-value`` (for logs and start-up lines)."""
        path = ";".join(f"{k}={quote(v, safe='')}" for k, v in self.path.items())
        query = "&".join(
            f"{k}={quote(v, safe='/:')}" for k, v in self.query.items() if k != "pin-value"
        )
        return f"{SCHEME}{path}" + (f"?{query}" if query else "")


def is_uri(text: str) -> bool:
    return text.startswith(SCHEME)


__all__ = ["BadUri", "Pkcs11Uri", "is_uri"]
