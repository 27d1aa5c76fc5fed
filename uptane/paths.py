"""Safe names on disk and in URLs (§5.2.7): target paths and role names never escape a
directory, whatever a repository sends."""

from __future__ import annotations

from urllib.parse import quote

from uptane.policy import check_target_name


def check_target_path(path: str) -> str:
    """Refuse target paths that could traverse or mislead: the one target-name rule of
    :func:`uptane.policy.check_target_name` (empty, absolute, ``.``/``..`` or empty
    segments, backslash, control and bidi characters, not NFC)."""
    return check_target_name(path, "target path")


def encode_name(name: str) -> str:
    """Percent-encode a role or target name so it is one safe file name component
    (``../x`` becomes ``..%2Fx``; ``.`` and ``..`` alone are encoded too)."""
    enc = quote(name, safe="")
    if enc in ("", ".", ".."):
        enc = enc.replace(".", "%2E") or "%00empty"
    return enc
