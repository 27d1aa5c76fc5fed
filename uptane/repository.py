"""The signing side of the core: build, version and sign one repository in memory.

:class:`RepositoryBuilder` keeps the model of every role, bumps versions of what changed,
and renders signed bytes in each encoding. Both services (`director/`) and the tests use
it; it does no I/O, and takes ``now`` from the caller. Roles whose keys are offline can be
signed elsewhere and handed in with :meth:`RepositoryBuilder.put_signed`.

A timestamp names the hashes of the snapshot *in its own encoding*, so each encoding has
its own signed timestamp; the other roles differ only in their signature bytes.

A change costs what it touches (issue 20): a builder restored from storage decodes a role
and reads its bytes only when something needs them (:class:`StoredRole`, the callbacks of
:meth:`RepositoryBuilder.restore`), :meth:`~RepositoryBuilder.publish` signs only the roles
that changed plus snapshot and timestamp, and :attr:`RepositoryBuilder.unsaved` names the
roles whose bytes changed, so storage writes only those. With ``limits``, publish refuses
(:class:`PublishRefused`, nothing changed) a file that a reader holding those limits, the
repository itself included, would refuse.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from uptane.codec import codec_for
from uptane.errors import UptaneError
from uptane.keys import Key, Signer
from uptane.limits import Limits
from uptane.metadata import (
    DER,
    JSON,
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Role,
    Root,
    Signed,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
    Timestamp,
)

TOP = ("root", "targets", "snapshot", "timestamp")

DEFAULT_EXPIRY = {
    "root": timedelta(days=365),
    "targets": timedelta(days=90),
    "snapshot": timedelta(days=7),
    "timestamp": timedelta(days=1),
    "delegated": timedelta(days=90),
}


def metadata_filename(role: str, version: int | None, encoding: str = JSON) -> str:
    """``VERSION.ROLE.EXT`` for consistent snapshots, ``ROLE.EXT`` otherwise (§5.2.7); EXT
    is the codec's file suffix (``.json``, ``.der``, ``.cder``), so that
    :func:`uptane.codec.for_filename` reads every name back."""
    suffix = codec_for(encoding).suffix
    return f"{role}{suffix}" if version is None else f"{version}.{role}{suffix}"


@dataclass(frozen=True)
class StoredRole:
    """What an index of stored files says of a role, so that the role's file is read and
    decoded only when something needs its content: its current version and expiry (None:
    not indexed, read from the file when asked)."""

    version: int
    expires: datetime | None = None


class PublishRefused(ValueError):
    """A file :meth:`RepositoryBuilder.publish` would write that its ``limits`` refuse (too
    many bytes, too many entries): nothing was published. ``role`` and ``encoding`` name
    it, ``size`` and ``cap`` give its bytes when that is the reason."""

    def __init__(
        self,
        role: str,
        encoding: str,
        reason: str,
        *,
        size: int = 0,
        cap: int = 0,
        advice: str = "split the role (hash bins, or more of them)",
    ) -> None:
        self.role, self.encoding, self.reason = role, encoding, reason
        self.size, self.cap = size, cap
        super().__init__(
            f"{role} in {encoding} would be refused by any reader with this repository's"
            f" limits ({reason}): nothing was published; {advice}"
        )


class _RoleState:
    """A role's model (decoded on first use when restored lazily), its signers and the
    bytes signed elsewhere (offline), by encoding, used instead of ``signers``."""

    __slots__ = ("_load", "_signed", "presigned", "signers", "stored")

    def __init__(
        self,
        signed: Signed | None,
        signers: Iterable[Signer] = (),
        *,
        load: Callable[[], Signed] | None = None,
        stored: StoredRole | None = None,
    ) -> None:
        self._signed = signed
        self._load = load
        self.stored = stored
        self.signers = list(signers)
        self.presigned: dict[str, bytes] = {}

    @property
    def signed(self) -> Signed:
        if self._signed is None:
            assert self._load is not None
            self._signed = self._load()
            self._load = None
        return self._signed

    @signed.setter
    def signed(self, value: Signed) -> None:
        self._signed, self._load = value, None

    @property
    def loaded(self) -> bool:
        return self._signed is not None

    @property
    def version(self) -> int:
        if self._signed is None and self.stored is not None:
            return self.stored.version
        return self.signed.version

    @property
    def expires(self) -> datetime:
        if self._signed is None and self.stored is not None and self.stored.expires:
            return self.stored.expires
        return self.signed.expires


class _Files(dict[str, bytes]):
    """One encoding's current file of each role (role -> bytes). Roles restored lazily
    are read through ``read`` the first time they are looked up, and count as present."""

    def __init__(
        self, read: Callable[[str], bytes] | None = None, stored: Iterable[str] = ()
    ) -> None:
        super().__init__()
        self._read = read
        self._stored = set(stored) if read is not None else set()

    def __missing__(self, role: str) -> bytes:
        if self._read is None or role not in self._stored:
            raise KeyError(role)
        data = self._read(role)
        self[role] = data
        return data

    def __contains__(self, role: object) -> bool:
        return dict.__contains__(self, role) or role in self._stored

    def get(self, role: str, default: Any = None) -> Any:
        """The role's bytes (read if stored and not read yet), else ``default``."""
        return self[role] if role in self else default  # noqa: SIM401 (get reads no store)

    def pop(self, role: str, *default: Any) -> Any:
        self._stored.discard(role)
        return super().pop(role, *default)

    def names(self) -> list[str]:
        """Every role with a current file, read or not."""
        return [*dict.keys(self), *(r for r in self._stored if not dict.__contains__(self, r))]


def _reader(read: Callable[[str, str], bytes], encoding: str) -> Callable[[str], bytes]:
    return lambda role: read(role, encoding)


def _loader(
    decode: Callable[[str, bytes], Signed], files: _Files, role: str
) -> Callable[[], Signed]:
    return lambda: decode(role, files[role])


class RepositoryBuilder:
    """One repository's metadata, built and signed in memory.

    ``signers`` maps each top-level role to the signers it has *online*; a role with no
    signer must be handed in signed with :meth:`put_signed`. ``keys`` (optional) adds
    authorised public keys for roles whose private halves are offline.
    """

    def __init__(
        self,
        name: str,
        signers: dict[str, list[Signer]],
        now: datetime,
        *,
        keys: dict[str, list[Key]] | None = None,
        thresholds: dict[str, int] | None = None,
        expiry: dict[str, timedelta] | None = None,
        consistent_snapshot: bool = True,
        vehicle_id: str | None = None,
        encodings: Iterable[str] = (JSON, DER),
        limits: Limits | None = None,
    ) -> None:
        self.name = name
        self.expiry = {**DEFAULT_EXPIRY, **(expiry or {})}
        self.encodings = tuple(encodings)
        #: with limits, :meth:`publish` refuses a file such a reader would refuse
        self.limits = limits
        root = Root(consistent_snapshot=consistent_snapshot)
        for role in TOP:
            root.roles[role] = Role([], (thresholds or {}).get(role, 1))
            for s in signers.get(role, []):
                root.add_key(s.key, role)
            for k in (keys or {}).get(role, []):
                root.add_key(k, role)
        self._roles: dict[str, _RoleState] = {
            "root": _RoleState(root, list(signers.get("root", []))),
            "targets": _RoleState(Targets(vehicle_id=vehicle_id), list(signers.get("targets", []))),
            "snapshot": _RoleState(Snapshot(), list(signers.get("snapshot", []))),
            "timestamp": _RoleState(Timestamp(), list(signers.get("timestamp", []))),
        }
        self.delegated: list[str] = []
        self.parents: dict[str, str] = {}
        self.root_history: list[dict[str, bytes]] = []
        self.files: dict[str, _Files] = {e: _Files() for e in self.encodings}
        #: roles whose current bytes changed since the builder was made or restored (and
        #: root versions from ``saved_roots`` on): what storage has yet to write
        self.unsaved: set[str] = set()
        self.saved_roots = 0
        self._dirty: set[str] = {"root", "targets"}
        self._published = False
        self._old_root_signers: list[Signer] = []
        self.publish(now)

    @classmethod
    def restore(
        cls,
        name: str,
        signers: dict[str, list[Signer]],
        *,
        models: dict[str, Signed],
        files: dict[str, dict[str, bytes]],
        root_history: list[dict[str, bytes]],
        delegated: Iterable[str] = (),
        parents: dict[str, str] | None = None,
        expiry: dict[str, timedelta] | None = None,
        stored: dict[str, StoredRole] | None = None,
        read: Callable[[str, str], bytes] | None = None,
        decode: Callable[[str, bytes], Signed] | None = None,
        limits: Limits | None = None,
    ) -> RepositoryBuilder:
        """Rebuild a builder from stored signed files without re-signing anything, so that
        versions continue from what was published.

        ``models`` are the decoded signed parts of the current files (by role), ``files``
        their bytes by encoding then role, ``root_history`` every root version's bytes by
        encoding. A role with no signer in ``signers`` keeps its stored bytes (it was signed
        offline) until it is changed.

        Roles in ``stored`` but not in ``models`` are restored lazily: ``read(role,
        encoding)`` gives their bytes and ``decode(role, bytes)`` their model (from the
        first encoding), each only when something needs it; their version and expiry come
        from ``stored`` until then.
        """
        self = cls.__new__(cls)
        self.name = name
        self.expiry = {**DEFAULT_EXPIRY, **(expiry or {})}
        self.encodings = tuple(files)
        self.limits = limits
        lazy = {r: s for r, s in (stored or {}).items() if r not in models}
        if lazy and (read is None or decode is None):
            raise ValueError("lazily restored roles need read and decode")
        self.files = {}
        for e, f in files.items():
            ef = _Files(_reader(read, e), lazy) if read is not None else _Files()
            ef.update(f)
            self.files[e] = ef
        self._roles = {}
        for role, model in models.items():
            state = _RoleState(model, signers.get(role, []))
            if not state.signers:
                state.presigned = {e: files[e][role] for e in self.encodings}
            self._roles[role] = state
        first = self.encodings[0] if self.encodings else JSON
        for role, info in lazy.items():
            assert read is not None and decode is not None
            load = _loader(decode, self.files[first], role)
            self._roles[role] = _RoleState(None, signers.get(role, []), load=load, stored=info)
        missing = [r for r in TOP if r not in self._roles]
        if missing:
            raise ValueError(f"restore needs every top-level role; missing {missing}")
        self.delegated = list(delegated)
        self.parents = dict(parents or {})
        self.root_history = [dict(h) for h in root_history]
        self.unsaved = set()
        self.saved_roots = len(self.root_history)
        self._dirty = set()
        self._published = True
        self._old_root_signers = []
        return self

    # --- accessors ----------------------------------------------------------------------

    @property
    def root(self) -> Root:
        return self._roles["root"].signed  # type: ignore[return-value]

    @property
    def targets(self) -> Targets:
        return self._roles["targets"].signed  # type: ignore[return-value]

    @property
    def snapshot(self) -> Snapshot:
        return self._roles["snapshot"].signed  # type: ignore[return-value]

    @property
    def timestamp(self) -> Timestamp:
        return self._roles["timestamp"].signed  # type: ignore[return-value]

    def role(self, name: str) -> Signed:
        """The model of a top-level or delegated role (edit it, then :meth:`mark`)."""
        return self._roles[name].signed

    def version_of(self, name: str) -> int:
        """The current version of ``name``, without decoding a lazily restored role."""
        return self._roles[name].version

    def expires_of(self, name: str) -> datetime:
        """When ``name`` expires, without decoding a lazily restored role."""
        return self._roles[name].expires

    def loaded_roles(self) -> list[str]:
        """The roles whose model has been decoded (every role unless restored lazily)."""
        return [r for r, st in self._roles.items() if st.loaded]

    def trusted_root(self, encoding: str = JSON) -> bytes:
        """Version 1 of root: what a client is provisioned with."""
        return self.root_history[0][encoding]

    # --- changes --------------------------------------------------------------------------

    def mark(self, role: str) -> None:
        """Note that ``role`` changed, so the next :meth:`publish` re-signs it."""
        self._dirty.add(role)
        self._roles[role].presigned = {}

    def add_target(self, target: TargetFile, role: str = "targets") -> None:
        """List ``target`` in ``role``."""
        t = self._roles[role].signed
        assert isinstance(t, Targets)
        t.targets[target.path] = target
        self.mark(role)

    def remove_target(self, path: str, role: str = "targets") -> None:
        t = self._roles[role].signed
        assert isinstance(t, Targets)
        t.targets.pop(path, None)
        self.mark(role)

    def clear_targets(self, role: str = "targets") -> None:
        t = self._roles[role].signed
        assert isinstance(t, Targets)
        t.targets.clear()
        self.mark(role)

    def delegate(
        self,
        parent: str,
        delegation: DelegatedRole,
        signers: list[Signer],
        *,
        keys: Iterable[Key] = (),
        create: bool = True,
    ) -> None:
        """Add ``delegation`` to ``parent`` (in priority order: appended last) and create
        the delegated role, signed by ``signers`` (plus offline ``keys``). With ``create``
        False only the delegation is written: the role's holder signs its first version
        elsewhere, and it is listed once handed in (:meth:`install_signed`)."""
        p = self._roles[parent].signed
        assert isinstance(p, Targets)
        if p.delegations is None:
            p.delegations = Delegations()
        if p.delegations.roles is None:
            raise ValueError(f"{parent} delegates to hash bins; it cannot list roles too")
        pub = [s.key for s in signers] + list(keys)
        for k in pub:
            p.delegations.keys[k.keyid] = k
            if k.keyid not in delegation.keyids:
                delegation.keyids.append(k.keyid)
        p.delegations.roles.append(delegation)
        self.mark(parent)
        if create:
            self._add_role(delegation.name, parent, signers)

    def _add_role(self, name: str, parent: str, signers: list[Signer]) -> None:
        self._roles[name] = _RoleState(Targets(), list(signers))
        self.delegated.append(name)
        self.parents[name] = parent
        self.mark(name)

    def add_role(self, name: str, parent: str, signers: list[Signer]) -> None:
        """Create the delegated role ``name`` (empty, signed by ``signers`` on the next
        :meth:`publish`) under a delegation ``parent`` already lists."""
        if name in self._roles:
            raise ValueError(f"role {name!r} exists")
        self._add_role(name, parent, signers)

    def drop_roles(self, names: Iterable[str]) -> list[str]:
        """Remove roles and every role below them from the repository and its snapshot;
        returns the roles removed. Clients that listed them refuse the next snapshot (TUF
        §5.5.5): only for a repository no client has read yet."""
        gone = [n for n in names if n in self._roles]
        while True:
            more = [r for r, par in self.parents.items() if par in gone and r not in gone]
            if not more:
                break
            gone += more
        for r in gone:
            self._roles.pop(r, None)
            self.parents.pop(r, None)
            self.unsaved.discard(r)
            for files in self.files.values():
                files.pop(r, None)
        self.delegated = [r for r in self.delegated if r not in gone]
        self._dirty.add("snapshot")
        return gone

    def delegate_bins(
        self,
        parent: str,
        bins: SuccinctRoles,
        signers: list[Signer],
        *,
        keys: Iterable[Key] = (),
    ) -> list[str]:
        """Make ``parent`` delegate every path to ``2**bins.bit_length`` hash bins (TUF's
        succinct delegation), each a role signed by ``signers``; returns the bin names."""
        p = self._roles[parent].signed
        assert isinstance(p, Targets)
        if p.delegations is not None and (p.delegations.roles or p.delegations.succinct_roles):
            raise ValueError(f"{parent} already delegates; hash bins need a role of their own")
        p.delegations = Delegations(roles=None, succinct_roles=bins)
        for k in [s.key for s in signers] + list(keys):
            p.delegations.keys[k.keyid] = k
            if k.keyid not in bins.keyids:
                bins.keyids.append(k.keyid)
        names = [f"{bins.name_prefix}-{i:0{bins.suffix_len}x}" for i in range(1 << bins.bit_length)]
        for name in names:
            self._add_role(name, parent, signers)
        self.mark(parent)
        return names

    def undelegate(self, parent: str, name: str) -> None:
        """Remove the delegation ``name`` from ``parent`` (revocation). The role's last
        metadata stays listed in snapshot: a client refuses a snapshot that drops a role
        it listed (TUF §5.5.5, rollback), and no delegation leads to it any more."""
        p = self._roles[parent].signed
        assert isinstance(p, Targets)
        if p.delegations is None or p.delegations.roles is None:
            raise KeyError(f"{parent} delegates no role {name!r}")
        kept = [d for d in p.delegations.roles if d.name != name]
        if len(kept) == len(p.delegations.roles):
            raise KeyError(f"{parent} delegates no role {name!r}")
        p.delegations.roles = kept
        used = {k for d in kept for k in d.keyids}
        used |= {k for d in kept for r in d.multi_roles or [] for k in r.keyids}
        p.delegations.keys = {k: v for k, v in p.delegations.keys.items() if k in used}
        self.mark(parent)

    def rotate_keys(
        self,
        role: str,
        new_signers: list[Signer],
        *,
        revoke: Iterable[str] = (),
        threshold: int | None = None,
    ) -> None:
        """Change which keys sign a top-level role; re-signs root (signed by the old and the
        new root keys when ``role`` is root, §5.4.4.3)."""
        root = self.root
        for kid in list(revoke):
            root.revoke_key(kid, role)
        for s in new_signers:
            root.add_key(s.key, role)
        if threshold is not None:
            root.roles[role].threshold = threshold
        state = self._roles[role]
        revoked = set(revoke)
        kept = [s for s in state.signers if s.key.keyid not in revoked]
        if role == "root":
            self._old_root_signers = list(state.signers)
        state.signers = kept + list(new_signers)
        self.mark("root")
        if role != "root":
            self.mark(role)

    def set_signers(self, role: str, signers: list[Signer]) -> None:
        """The keys that sign ``role`` from now on (a rotation made elsewhere)."""
        self._roles[role].signers = list(signers)

    def signers_of(self, role: str) -> list[Signer]:
        return list(self._roles[role].signers)

    def next_root(self, now: datetime) -> Root:
        """A copy of the current root at the next version with a fresh expiry: edit it,
        have it signed (a ceremony), and hand it in with :meth:`install_root`."""
        root = copy.deepcopy(self.root)
        root.version += 1
        root.expires = (now + self.expiry["root"]).replace(microsecond=0)
        return root

    def install_root(self, model: Root, files: dict[str, bytes]) -> None:
        """Take the next root as signed elsewhere (every encoding). Roles whose keys it
        changed must be re-signed: the next :meth:`publish` signs snapshot and timestamp
        again; the caller hands in the new signers first (:meth:`set_signers`)."""
        if model.version != self.root.version + 1:
            raise ValueError(f"root version {model.version} does not follow {self.root.version}")
        missing = [e for e in self.encodings if e not in files]
        if missing:
            raise ValueError(f"root signed bytes missing for {missing}")
        self._check_limits({e: {"root": files[e]} for e in self.encodings})
        state = self._roles["root"]
        state.signed = copy.deepcopy(model)
        state.presigned = dict(files)
        entry = {e: files[e] for e in self.encodings}
        self.root_history.append(entry)
        for e in self.encodings:
            self.files[e]["root"] = entry[e]
        self.unsaved.add("root")
        self._dirty.add("snapshot")

    def put_signed(self, role: str, encoding: str, data: bytes) -> None:
        """Hand in ``role`` signed offline in ``encoding`` (its model must already match)."""
        self._roles[role].presigned[encoding] = data

    def install_signed(
        self, role: str, model: Signed, files: dict[str, bytes], *, parent: str | None = None
    ) -> None:
        """Take ``role`` as signed elsewhere (an offline key, a supplier upload): its model
        and its signed bytes in every encoding, at the version it was signed with. The next
        :meth:`publish` lists it in snapshot without re-signing or re-versioning it. A
        delegated role's first version names its ``parent``. With ``limits``, bytes such
        a reader would refuse raise :class:`PublishRefused` and nothing changes."""
        missing = [e for e in self.encodings if e not in files]
        if missing:
            raise ValueError(f"{role} signed bytes missing for {missing}")
        self._check_limits({e: {role: files[e]} for e in self.encodings})
        if role not in self._roles:
            if parent is None:
                raise KeyError(f"no role {role!r}: name its parent")
            self._roles[role] = _RoleState(Targets())
            self.delegated.append(role)
            self.parents[role] = parent
        state = self._roles[role]
        state.signed = copy.deepcopy(model)
        state.presigned = dict(files)
        for enc, data in files.items():
            if enc in self.files:
                self.files[enc][role] = data
        self.unsaved.add(role)
        self._dirty.add("snapshot")

    # --- publishing -----------------------------------------------------------------------

    def lifetime(self, role: str) -> timedelta:
        """How long ``role`` is signed for: its own entry in ``expiry`` (top-level roles, a
        delegated role by name, hash bins by their name prefix), else ``delegated``."""
        if role in self.expiry:
            return self.expiry[role]
        prefix = role.rpartition("-")[0]
        if role not in TOP and prefix in self.expiry:
            return self.expiry[prefix]
        return self.expiry["delegated"]

    def has_role(self, name: str) -> bool:
        return name in self._roles

    def _bump(self, role: str, now: datetime) -> None:
        s = self._roles[role].signed
        if self._published:
            s.version += 1
        s.expires = (now + self.lifetime(role)).replace(microsecond=0)

    def _sign(self, role: str, encoding: str, extra: list[Signer] | None = None) -> bytes:
        state = self._roles[role]
        if encoding in state.presigned:
            return state.presigned[encoding]
        # the envelope only reads the model while it encodes and signs it: no copy
        md: Metadata[Any] = Metadata(state.signed, encoding=encoding)
        signers = list(state.signers) + list(extra or [])
        seen: set[str] = set()
        for s in signers:
            if s.key.keyid in seen:
                continue
            seen.add(s.key.keyid)
            md.sign(s)
        return md.to_bytes()

    def publish(self, now: datetime, *, force_timestamp: bool = True) -> None:
        """Re-sign what changed: changed targets roles, then snapshot, then timestamp (always,
        so its expiry moves on), and root if it changed. With ``limits``, every new file is
        checked first: if one would be refused, :class:`PublishRefused` is raised and the
        builder is as it was (the changes stay marked)."""
        touched = {r for r in self._dirty if r in self._roles} | {"root", *TOP[2:]}
        before = {r: (self._roles[r].signed.version, self._roles[r].signed.expires)
                  for r in touched}  # fmt: skip
        snap_meta, ts_meta = dict(self.snapshot.meta), self.timestamp.snapshot_meta
        try:
            out, root_entry = self._render(now, force_timestamp)
            self._check_limits(out)
        except BaseException:
            for r, (version, expires) in before.items():
                self._roles[r].signed.version, self._roles[r].signed.expires = version, expires
            self.snapshot.meta, self.timestamp.snapshot_meta = snap_meta, ts_meta
            raise
        if root_entry is not None:
            self._old_root_signers = []
            self.root_history.append(root_entry)
        for e, files in out.items():
            self.files[e].update(files)
            self.unsaved.update(files)
        self._dirty.clear()
        self._published = True

    def _render(
        self, now: datetime, force_timestamp: bool
    ) -> tuple[dict[str, dict[str, bytes]], dict[str, bytes] | None]:
        """Bump and sign what changed: the new files by encoding then role, and the new
        root version's files (None if root did not change). Nothing is kept yet."""
        targets_roles = ["targets", *self.delegated]
        changed_targets = [r for r in targets_roles if r in self._dirty]
        root_entry = None
        if "root" in self._dirty:
            self._bump("root", now)
            old = self._old_root_signers
            root_entry = {e: self._sign("root", e, extra=old) for e in self.encodings}
        for r in changed_targets:
            self._bump(r, now)
        snap_dirty = bool(changed_targets) or "snapshot" in self._dirty or not self._published
        if snap_dirty:
            self.snapshot.meta = {
                f"{r}.json": MetaFile(self._roles[r].version) for r in targets_roles
            }
            self._bump("snapshot", now)
        if snap_dirty or force_timestamp or "timestamp" in self._dirty:
            self._bump("timestamp", now)
        out: dict[str, dict[str, bytes]] = {}
        for e in self.encodings:
            new = out[e] = {} if root_entry is None else {"root": root_entry[e]}
            for r in targets_roles:
                if r in changed_targets or r not in self.files[e]:
                    new[r] = self._sign(r, e)
            if snap_dirty or "snapshot" not in self.files[e]:
                new["snapshot"] = self._sign("snapshot", e)
            snap_bytes = new.get("snapshot") or self.files[e]["snapshot"]
            self.timestamp.snapshot_meta = MetaFile(
                self.snapshot.version,
                len(snap_bytes),
                {"sha256": hashlib.sha256(snap_bytes).hexdigest()},
            )
            self._roles["timestamp"].presigned.pop(e, None)
            new["timestamp"] = self._sign("timestamp", e)
        return out, root_entry

    def _check_limits(self, out: dict[str, dict[str, bytes]]) -> None:
        """Refuse a new file that a reader with ``limits`` would refuse: its bytes against
        the role's cap, then the decoder itself (every count and length it bounds)."""
        limits = self.limits
        if limits is None:
            return
        for e, files in out.items():
            codec = codec_for(e)
            for role, data in files.items():
                cap = limits.bytes_for_role(role if role in TOP else "delegated")
                if len(data) > cap:
                    raise PublishRefused(
                        role,
                        e,
                        f"{len(data):,} bytes, above the {cap:,}-byte cap",
                        size=len(data),
                        cap=cap,
                    )
                rtype = role if role in TOP else "targets"
                try:
                    codec.decode_metadata(data, limits, role_type=rtype, cap=cap)
                except UptaneError as err:
                    raise PublishRefused(role, e, err.message) from err

    def mark_saved(self) -> None:
        """Storage has written every role in :attr:`unsaved` and every root version."""
        self.unsaved.clear()
        self.saved_roots = len(self.root_history)

    def refresh_timestamp(self, now: datetime) -> None:
        """Re-sign only the timestamp with a new version and expiry."""
        self.publish(now, force_timestamp=True)

    def versioned_files(self, encoding: str = JSON) -> dict[str, bytes]:
        """Every file a static repository serves: ``N.root``, ``N.snapshot``, ``N.targets``
        and delegated roles versioned, ``timestamp`` and the current roles unversioned."""
        out: dict[str, bytes] = {}
        for i, entry in enumerate(self.root_history, start=1):
            out[metadata_filename("root", i, encoding)] = entry[encoding]
        files = self.files[encoding]
        for role in files.names():
            data = files[role]
            out[metadata_filename(role, None, encoding)] = data
            if role not in ("root", "timestamp"):
                out[metadata_filename(role, self._roles[role].version, encoding)] = data
        return out

    def source(self, encoding: str = JSON) -> InMemorySource:
        """An in-memory :class:`uptane.trust.MetadataSource` over the current files."""
        return InMemorySource(self, encoding)


class InMemorySource:
    """Serves a :class:`RepositoryBuilder`'s files to a client, as a static server would.
    Tests may edit ``overrides`` (file name -> bytes, or None for 'not found') to play a
    man in the middle."""

    def __init__(self, builder: RepositoryBuilder, encoding: str = JSON) -> None:
        self.builder = builder
        self.encoding = encoding
        self.overrides: dict[str, bytes | None] = {}
        self.requests: list[str] = []

    def fetch_metadata(self, role: str, version: int | None, max_bytes: int) -> bytes | None:
        name = metadata_filename(role, version, self.encoding)
        self.requests.append(name)
        if name in self.overrides:
            data = self.overrides[name]
        else:
            data = self.builder.versioned_files(self.encoding).get(name)
        if data is not None and len(data) > max_bytes:
            from uptane.errors import EndlessDataAttack

            raise EndlessDataAttack(f"{name}: more than {max_bytes} bytes", role=role)
        return data
