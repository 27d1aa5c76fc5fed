"""Accountable admin access (issue 19): named API tokens with scopes and an expiry, kept in
the inventory database (``api_tokens``, only each token's SHA-256), created, listed and
revoked at run time; every node and the CLI see a change on the very next request.

Scopes:

- ``read``: every ``GET`` of the admin API (vehicles, assignments, campaigns, groups,
  attacks, certificates, the audit log);
- ``assign``: assignments: make one, cancel one;
- ``campaign``: campaigns and saved groups;
- ``keys``: vehicles and ECUs (their keys), encryption keys and rules, vehicles' client
  certificates;
- ``admin``: everything, API tokens included.

Tokens from before (``director.json``: the admin token's hash and ``tokens``) keep
working: :meth:`Tokens.import_legacy` copies them in, the admin token as ``admin`` with
the admin scope, a viewer as ``legacy-viewer-HASH8`` with read.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from director import inventory as inv
from director.common import Conflict, Invalid, NotFound, epoch, iso
from director.config import ADMIN as ADMIN_ROLE
from director.config import Config, hash_token

READ, ASSIGN, CAMPAIGN, KEYS, ADMIN = "read", "assign", "campaign", "keys", "admin"
SCOPES = (READ, ASSIGN, CAMPAIGN, KEYS, ADMIN)
NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}\Z")
#: a token made without an expiry lives this long (the API and the CLI); ``None`` asks for
#: a token that never expires (a service account: revoke it when it is no longer used)
DEFAULT_LIFETIME = 90 * 24 * 3600
MAX_LIFETIME = 10 * 365 * 24 * 3600


@dataclass(frozen=True)
class Caller:
    """Who made an API request: the token's name and scopes."""

    name: str
    scopes: frozenset[str]

    def may(self, scope: str) -> bool:
        return ADMIN in self.scopes or scope in self.scopes


@dataclass(frozen=True)
class Refusal:
    """Why a bearer token was not accepted (HTTP 401, with this reason)."""

    reason: str


def check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    out = frozenset(scopes)
    unknown = sorted(out - set(SCOPES))
    if unknown or not out:
        raise Invalid(f"scopes must be some of {', '.join(SCOPES)} (not {unknown or 'none'})")
    return out


def _row(r: Any, now: int) -> dict[str, Any]:
    state = "revoked" if r.revoked_at else "expired" if _expired(r, now) else "active"
    return {
        "name": r.name,
        "scopes": r.scopes.split(),
        "created_at": iso(r.created_at),
        "created_by": r.created_by,
        "expires_at": iso(r.expires_at),
        "revoked_at": iso(r.revoked_at),
        "state": state,
    }


def _expired(r: Any, now: int) -> bool:
    return r.expires_at is not None and r.expires_at <= now


class Tokens:
    """The API tokens of one Director (its database), and the legacy ones of its
    ``director.json``."""

    def __init__(self, engine: Engine, config: Config, clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self.config = config
        self.clock = clock

    def create(
        self,
        name: str,
        scopes: Iterable[str],
        *,
        lifetime: int | None = DEFAULT_LIFETIME,
        created_by: str | None = None,
    ) -> dict[str, Any]:
        """Make a token; its description with ``token`` (shown once, only its hash is
        kept). ``lifetime`` in seconds, None: never expires."""
        if not NAME_RE.match(name):
            raise Invalid("a token name is 1-64 letters, digits and _ . @ -")
        wanted = check_scopes(scopes)
        if lifetime is not None and not 0 < lifetime <= MAX_LIFETIME:
            raise Invalid(f"a token's lifetime is 1 to {MAX_LIFETIME} seconds (or none)")
        token = secrets.token_urlsafe(32)
        now = epoch(self.clock())
        values = {
            "name": name,
            "token_sha256": hash_token(token),
            "scopes": " ".join(s for s in SCOPES if s in wanted),
            "created_at": now,
            "created_by": (created_by or "")[:128] or None,
            "expires_at": None if lifetime is None else now + lifetime,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(inv.api_tokens.insert().values(**values))
        except IntegrityError:
            raise Conflict(f"a token named {name!r} exists: choose another name") from None
        return {**self.describe(name), "token": token}

    def describe(self, name: str) -> dict[str, Any]:
        t = inv.api_tokens
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(t).where(t.c.name == name)).first()
        if r is None:
            raise NotFound(f"no token named {name[:64]!r}")
        return _row(r, epoch(self.clock()))

    def list_tokens(self) -> list[dict[str, Any]]:
        t = inv.api_tokens
        now = epoch(self.clock())
        with self.engine.connect() as conn:
            return [_row(r, now) for r in conn.execute(sa.select(t).order_by(t.c.id))]

    def revoke(self, name: str) -> dict[str, Any]:
        """Revoke a token: refused from the next request on, by every node."""
        t = inv.api_tokens
        with self.engine.begin() as conn:
            done = conn.execute(
                t.update()
                .where(t.c.name == name, t.c.revoked_at.is_(None))
                .values(revoked_at=epoch(self.clock()))
            ).rowcount
        out = self.describe(name)
        if not done and out["state"] != "revoked":
            raise NotFound(f"no token named {name[:64]!r}")
        return out

    def check(self, token: str) -> Caller | Refusal:
        """The caller a bearer token names, or why it is refused (one indexed lookup)."""
        digest = hash_token(token)
        t = inv.api_tokens
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(t).where(t.c.token_sha256 == digest)).first()
        if r is None:
            legacy = self._legacy(digest)
            if legacy is None:
                return Refusal("unknown bearer token")
            self.import_legacy()
            return legacy
        if r.revoked_at is not None:
            return Refusal(f"token {r.name!r} was revoked")
        if _expired(r, epoch(self.clock())):
            return Refusal(f"token {r.name!r} expired at {iso(r.expires_at)}: ask for a new one")
        return Caller(r.name, frozenset(r.scopes.split()))

    # --- tokens from before revision 0010 ----------------------------------------------------

    def _legacy(self, digest: str) -> Caller | None:
        for name, scopes, known in self._legacy_rows():
            if secrets.compare_digest(known, digest):
                return Caller(name, frozenset(scopes.split()))
        return None

    def _legacy_rows(self) -> list[tuple[str, str, str]]:
        out = []
        if self.config.admin_token_sha256:
            out.append(("admin", ADMIN, self.config.admin_token_sha256))
        for digest, role in self.config.tokens.items():
            scope = ADMIN if role == ADMIN_ROLE else READ
            out.append((f"legacy-{role}-{digest[:8]}", scope, digest))
        return out

    def import_legacy(self) -> int:
        """Copy the tokens of ``director.json`` into the database (once each; a name
        already taken gets the hash's first characters); returns how many."""
        added = 0
        now = epoch(self.clock())
        for name, scopes, digest in self._legacy_rows():
            try:
                added += self._import_one(name, scopes, digest, now)
            except IntegrityError:  # another node copied it meanwhile
                continue
        return added

    def _import_one(self, name: str, scopes: str, digest: str, now: int) -> int:
        t = inv.api_tokens
        with self.engine.begin() as conn:
            if conn.execute(sa.select(t.c.id).where(t.c.token_sha256 == digest)).first():
                return 0
            if conn.execute(sa.select(t.c.id).where(t.c.name == name)).first():
                name = f"{name}-{digest[:12]}"
            conn.execute(
                t.insert().values(
                    name=name,
                    token_sha256=digest,
                    scopes=scopes,
                    created_at=now,
                    created_by="director.json (init, or before revision 0010)",
                )
            )
        return 1


__all__ = [
    "ADMIN",
    "ASSIGN",
    "CAMPAIGN",
    "KEYS",
    "READ",
    "SCOPES",
    "Caller",
    "Refusal",
    "Tokens",
    "check_scopes",
]
