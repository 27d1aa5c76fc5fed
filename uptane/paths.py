"""Safe names on disk and in URLs (§5.2.7): target paths and role names never escape a
directory, whatever a repository sends."""

from __future__ import annotations

from urllib.parse import quote

from uptane.errors import MalformedInput


def check_target_path(path: str) -> str:
    """Refuse target paths that could traverse: empty, absolute, ``..``, NUL, backslash."""
    if not path or "\x00" in path or "\\" in path or path.startswith("/"):
        raise MalformedInput(f"unsafe target path {path[:64]!r}")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise MalformedInput(f"unsafe target path {path[:64]!r}")
    return path


def encode_name(name: str) -> str:
    """Percent-encode a role or target name so it is one safe file name component
    (``../x`` becomes ``..%2Fx``; ``.`` and ``..`` alone are encoded too)."""
    enc = quote(name, safe="")
    if enc in ("", ".", ".."):
        enc = enc.replace(".", "%2E") or "%00empty"
    return enc
