"""``uptane-tuf-client``: the Image-repository half of the Primary as a TUF conformance client.

It runs the TUF client workflow with the same core (:class:`uptane.trust.RepositoryTrust`:
root loop, timestamp, snapshot, targets, delegations) and the same fetcher as the Primary,
and follows the command-line protocol of issue 4 (see ``docs/tuf-client.md``)::

    uptane-tuf-client --metadata-dir DIR init TRUSTED_ROOT_FILE
    uptane-tuf-client --metadata-url URL --metadata-dir DIR refresh
    uptane-tuf-client --metadata-url URL --metadata-dir DIR --target-name PATH [...]
                      --target-dir DIR --target-base-url URL download

Exit status 0 on success, 1 on any failure (the reason goes to stderr, one line).

This module holds no verification logic: every decision is the core's. What it adds is
storage and naming: trusted metadata lives unversioned in DIR (``root.json``,
``timestamp.json``, ``snapshot.json``, ``targets.json``, ``<encoded role>.json``), each file
written atomically, and nothing else named ``*.json`` is ever written there. Targets are
saved in the target directory as ``encode_name(path)`` (``a/b.bin`` -> ``a%2Fb.bin``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
import tempfile
import threading
import traceback
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from primary.fetcher import Fetcher, file_holds
from primary.sources import HttpMetadataSource, target_url
from primary.timesource import SystemTime, TimeSource
from storage import LOCAL, read_capped
from storage.fs import write_all
from uptane.errors import EndlessDataAttack, MalformedInput, UptaneError
from uptane.limits import Limits
from uptane.metadata import JSON, TargetFile
from uptane.paths import encode_name
from uptane.trust import RefreshResult, RepositoryTrust
from uptane.verify import ImageVerifier

PROG = "uptane-tuf-client"
REPOSITORY = "image"
#: the signature checks behind a metadata directory's trusted files (docs/tuf-client.md,
#: "Checks not made twice") are kept in the user's cache directory, never in the metadata
#: directory itself (which holds exactly the trusted files; conformance suites list it)
CHECKS_DIR = "uptane-tuf-client"
#: one 64-hex-digit line per trusted file; the record is ignored if larger
CHECKS_CAP = 512 * 1024
#: an unfinished download in the target directory is ``.<encoded name>#part``: hidden
#: (a dot file) so it is never taken for a downloaded artifact, and "#" never appears in
#: an encoded name (encode_name writes it as %23), so no target can collide with it
PART_PREFIX = "."
PART_SUFFIX = "#part"


class UsageError(Exception):
    """The command line does not follow the protocol."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as exit status 1 (the protocol has only 0/1)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="TUF conformance client on the Uptane core.")
    p.add_argument("--metadata-dir", required=True, help="trusted metadata directory")
    p.add_argument("--metadata-url", help="base URL of the repository's metadata")
    p.add_argument(
        "--target-name", action="append", default=[], help="target path to download (repeat)"
    )
    p.add_argument("--target-dir", help="where downloaded targets are saved")
    p.add_argument("--target-base-url", help="base URL of the repository's targets")
    p.add_argument(
        "--limits", default="primary", choices=("primary", "constrained"), help="Limits profile"
    )
    p.add_argument("command", choices=("init", "refresh", "download"))
    p.add_argument("trusted_root", nargs="?", help="init: the trusted root metadata file")
    return p


# --- the metadata directory ---------------------------------------------------------------


def part_name(path: str) -> str:
    """The file name of the unfinished download of target ``path``."""
    return PART_PREFIX + encode_name(path) + PART_SUFFIX


def role_file(role: str) -> str:
    """The file name of ``role`` in the metadata directory (one safe path component)."""
    return encode_name(role) + ".json"


def read_metadata_dir(directory: Path, limits: Limits) -> dict[str, bytes]:
    """Every trusted file in ``directory`` by role name. Only names this client writes are
    read (``encode_name(role).json``); each read is capped at the role's byte limit."""
    files: dict[str, bytes] = {}
    if not directory.is_dir():
        return files
    for p in directory.iterdir():
        if not p.name.endswith(".json") or not p.is_file():
            continue
        role = unquote(p.name[: -len(".json")])
        if role_file(role) != p.name:
            continue
        try:
            files[role] = read_capped(p, limits.bytes_for_role(role))
        except EndlessDataAttack:
            if role == "root":
                raise
            # an oversized non-root file cannot be trusted state: leave it out, so the
            # core starts that role afresh (and the next write removes the file)
    return files


def checks_file(metadata_dir: Path) -> Path:
    """Where the checks behind ``metadata_dir`` are recorded: ``$XDG_CACHE_HOME`` (default
    ``~/.cache``) ``/uptane-tuf-client/``, one file per metadata directory (named by the
    SHA-256 of its absolute path)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    digest = hashlib.sha256(str(metadata_dir.resolve()).encode()).hexdigest()[:32]
    return Path(base) / CHECKS_DIR / f"{digest}.checks"


def read_checks(path: Path | None) -> list[str]:
    """The signature checks recorded in ``path`` (empty if none or unreadable: every file
    is then checked in full)."""
    if path is None:
        return []
    try:
        text = read_capped(path, CHECKS_CAP).decode("ascii")
    except (OSError, UptaneError, UnicodeDecodeError):
        return []
    return [ln for ln in text.split("\n") if len(ln) == 64 and ln.isalnum()]


def write_checks(path: Path | None, checks: list[str]) -> None:
    """Record the checks behind the trusted files, if they changed; a cache that cannot
    be written is skipped. No fsync: a record lost or torn by a crash only makes the next
    load check more (a line matches only as the exact digest of a check that passed)."""
    if path is None:
        return
    text = "".join(f"{c}\n" for c in checks).encode("ascii")
    with contextlib.suppress(OSError):
        if path.read_bytes() == text:
            return
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
        try:
            write_all(fd, text)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        return


def write_metadata_dir(directory: Path, raw: dict[str, bytes]) -> None:
    """Make ``directory`` hold exactly the trusted files in ``raw``: changed files are
    replaced atomically, files of roles no longer trusted are removed.

    Files whose bytes did not change are not touched. Each changed file is written to a
    temp file and fsynced before its rename (so a crash leaves the old or the new file,
    never a torn one); the temp files of one batch are fsynced concurrently, and the
    directory is fsynced once after all renames and removals of the batch."""
    if _update_files(directory, raw):
        LOCAL.sync_dir(directory)


def _update_files(directory: Path, raw: dict[str, bytes]) -> bool:
    """:func:`write_metadata_dir` but for the directory's fsync, which the caller owes
    when this returns True (something was renamed or removed)."""
    directory.mkdir(parents=True, exist_ok=True)
    wanted = {role_file(role): data for role, data in raw.items()}
    changed = False
    pending: list[list[Any]] = []  # [fd or -1, temp path, final path], until renamed
    try:
        for name, data in wanted.items():
            path = directory / name
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_size == len(data) and path.read_bytes() == data:
                    continue
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
            pending.append([fd, tmp, path])
            write_all(fd, data)
        _fsync_all([entry[0] for entry in pending])
        while pending:
            entry = pending[0]
            fd, entry[0] = entry[0], -1
            os.close(fd)
            os.replace(entry[1], entry[2])
            pending.pop(0)
            changed = True
    finally:
        for fd, tmp, _ in pending:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    for p in directory.iterdir():
        if p.name.endswith(".json") and p.name not in wanted and p.is_file():
            role = unquote(p.name[: -len(".json")])
            if role_file(role) == p.name:  # only files this client would have written
                p.unlink()
                changed = True
    return changed


def atomic_write(path: Path, data: bytes) -> None:
    """Temp file in the same directory (not ``*.json``), fsync, rename, fsync the dir."""
    _replace_synced(path, data)
    LOCAL.sync_dir(path.parent)


def _replace_synced(path: Path, data: bytes) -> None:
    """Temp file in the same directory (not ``*.json``), fsync, rename over ``path``. The
    caller fsyncs the directory (once per batch) to make the renames durable."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        write_all(fd, data)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


#: fsyncs run side by side (so the kernel can commit them together) and the trusted
#: files written in the background, on threads started once per process and reused: a
#: thread started per command made the command wait for it to be scheduled (up to a few
#: milliseconds on a loaded machine). Jobs on the fsync pool never wait for anything, and
#: the one writer thread only waits for the fsync pool, so neither pool can deadlock.
#: The pools are made on first use, and forgotten in a forked child (the parent's threads
#: do not exist there).
_pools: tuple[ThreadPoolExecutor, ThreadPoolExecutor] | None = None
_pools_lock = threading.Lock()


def _fsyncs_and_writer() -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
    global _pools
    with _pools_lock:
        if _pools is None:
            _pools = (
                ThreadPoolExecutor(max_workers=8, thread_name_prefix="tuf-client-fsync"),
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="tuf-client-writer"),
            )
        return _pools


def _forget_pools() -> None:
    global _pools, _pools_lock
    _pools, _pools_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pools)


def _fsync_all(fds: list[int]) -> None:
    """fsync every file in ``fds``, concurrently (the kernel can commit them together);
    returns when all are on disk, raises the first failure."""
    fsyncs, _ = _fsyncs_and_writer()
    others = [fsyncs.submit(os.fsync, fd) for fd in fds[1:]]
    error: BaseException | None = None
    try:
        for fd in fds[:1]:
            os.fsync(fd)
    except BaseException as e:
        error = e
    for f in others:
        try:
            f.result()
        except BaseException as e:
            error = error or e
    if error is not None:
        raise error


class _Persisting:
    """The trusted files of one command, written in the background while the command goes
    on (their fsyncs overlap the next transfers).

    Each :meth:`put` hands over what the core trusts at that point; the writer thread
    brings the directory to it (changed files through a fsynced temp file and a rename,
    as :func:`write_metadata_dir`), one snapshot after the other, in order. The directory
    is fsynced once, after the renames of the snapshot put with ``last`` (in the
    background too), or else in :meth:`wait`: that one fsync makes every rename of the
    command durable. :meth:`wait` returns once everything is durable, or raises what a
    write raised (the later snapshots are then not written)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.error: BaseException | None = None
        self.changed = False  # a rename or removal not yet made durable
        self.jobs: list[Future[None]] = []

    def put(self, raw: dict[str, bytes], *, last: bool = False) -> None:
        _, writer = _fsyncs_and_writer()
        self.jobs.append(writer.submit(self._write, dict(raw), last))

    def _write(self, raw: dict[str, bytes], last: bool) -> None:
        if self.error is not None:
            return
        try:
            self.changed |= _update_files(self.directory, raw)
            if last and self.changed:
                LOCAL.sync_dir(self.directory)
                self.changed = False
        except BaseException as e:
            self.error = e

    def wait(self) -> None:
        for job in self.jobs:
            job.result()
        if self.error is not None:
            raise self.error
        if self.changed:
            LOCAL.sync_dir(self.directory)
            self.changed = False


# --- the client -----------------------------------------------------------------------------


class TufClient:
    """The three commands over one metadata directory. Verification is the core's."""

    def __init__(
        self,
        metadata_dir: str | os.PathLike[str],
        *,
        metadata_url: str | None = None,
        limits: Limits | None = None,
        fetcher: Fetcher | None = None,
        clock: TimeSource | None = None,
        checks: Path | bool | None = True,
    ) -> None:
        """``checks``: where the signature checks behind the trusted files are recorded
        (True: :func:`checks_file`; False: nowhere, every load checks everything)."""
        self.metadata_dir = Path(metadata_dir)
        self.checks = checks_file(self.metadata_dir) if checks is True else (checks or None)
        self.metadata_url = metadata_url
        self.limits = limits or Limits.primary()
        self.fetcher = fetcher or Fetcher(self.limits, user_agent=f"{PROG}/0.1")
        self.clock = clock or SystemTime()
        self.trust: RepositoryTrust | None = None
        #: one line per event of the last command that is no failure (printed to stderr)
        self.notes: list[str] = []
        #: what :meth:`init` built from the root it checked and wrote, for the next
        #: :meth:`load` of this client to take if the directory holds exactly that root
        self._initialised: RepositoryTrust | None = None

    # init ---------------------------------------------------------------------------------

    def init(self, trusted_root_file: str | os.PathLike[str]) -> None:
        """Install ``trusted_root_file`` as the trusted root, with no network. The core
        checks that it is root metadata signed by a threshold of its own keys."""
        self._initialised = None
        data = read_capped(trusted_root_file, self.limits.bytes_for_role("root"))
        trust = RepositoryTrust(REPOSITORY, data, self.limits, encoding=JSON)
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.metadata_dir / role_file("root"), data)
        self._initialised = trust

    # refresh ------------------------------------------------------------------------------

    def _source(self) -> HttpMetadataSource:
        if not self.metadata_url:
            raise UsageError("--metadata-url is required")
        return HttpMetadataSource(self.fetcher, self.metadata_url, JSON, repository=REPOSITORY)

    def load(self) -> RepositoryTrust:
        """The core's state from the metadata directory, every file re-verified; except
        that right after :meth:`init` on this client, a directory holding nothing but the
        very root bytes ``init`` checked and wrote is taken as ``init`` left it (the same
        state ``RepositoryTrust.load`` would rebuild from those bytes, without checking
        them again). Any other content, a changed byte included, is verified in full."""
        files = read_metadata_dir(self.metadata_dir, self.limits)
        initialised, self._initialised = self._initialised, None  # good for one load
        if "root" not in files:
            raise MalformedInput(
                f"no trusted root in {self.metadata_dir}: run init first",
                repository=REPOSITORY,
                role="root",
            )
        if (
            initialised is not None
            and initialised.limits is self.limits
            and files == initialised.raw
        ):
            self.trust = initialised
        else:
            self.trust = RepositoryTrust.load(
                REPOSITORY, files, self.limits, encoding=JSON, verified=read_checks(self.checks)
            )
        return self.trust

    def persist(self) -> None:
        """Write what the core trusts now; also after a failed step, so a root that was
        accepted before a later failure stays trusted (as TUF clients do)."""
        if self.trust is not None:
            write_metadata_dir(self.metadata_dir, self.trust.raw)
            write_checks(self.checks, self.trust.verified_checks())

    def refresh(self) -> None:
        """The whole top-level update through the core, persisted whatever the outcome."""
        trust = self.load()
        try:
            self._note(trust.refresh(self._source(), self.clock.now()))
        finally:
            self.persist()

    def _note(self, result: RefreshResult) -> None:
        """Keep what a refresh noted that is no failure (a timestamp re-served under the
        trusted version with another signed part: the trusted one was kept)."""
        if result.timestamp_kept:
            self.notes.append(result.timestamp_kept)

    # download -----------------------------------------------------------------------------

    def find(self, path: str) -> TargetFile:
        """The core's answer for ``path`` (delegations included); fetched delegated roles
        are persisted."""
        assert self.trust is not None
        try:
            return self.trust.find_target(path, self._source(), self.clock.now())
        finally:
            self.persist()

    def download(
        self, names: Sequence[str], target_dir: str | os.PathLike[str], base_url: str
    ) -> None:
        """Refresh, then find, download and verify each target in turn; stops at the first
        failure. A verified copy already in ``target_dir`` is not downloaded again."""
        if not names:
            raise UsageError("download needs at least one --target-name")
        # what the refresh and each find trusted is written by a background thread while
        # the next find and the target's download go on (the fsyncs overlap the
        # transfers), with one directory fsync after the last find's files; the command
        # returns only once all of it is durable. A failed refresh is persisted at once,
        # as in refresh().
        trust = self.load()
        out = Path(target_dir)
        try:
            self._note(trust.refresh(self._source(), self.clock.now()))
            out.mkdir(parents=True, exist_ok=True)
        except BaseException:
            self.persist()
            raise
        persisting = _Persisting(self.metadata_dir)
        try:
            persisting.put(trust.raw)
            for i, name in enumerate(names):
                try:
                    target = trust.find_target(name, self._source(), self.clock.now())
                finally:  # after the last find, the directory's fsync goes with it
                    persisting.put(trust.raw, last=i == len(names) - 1)
                dest = out / encode_name(name)
                if self.is_cached(target, dest):
                    continue
                self.fetcher.download_to(
                    self.url_for(target, base_url),
                    dest,
                    target.length,
                    ImageVerifier(target, self.limits),
                    part_path=out / part_name(name),
                )
        finally:
            persisting.wait()
        write_checks(self.checks, trust.verified_checks())

    def url_for(self, target: TargetFile, base_url: str) -> str:
        """``base/path``, or ``base/dir/HASH.name`` with consistent snapshots (the first
        listed hash, as python-tuf does)."""
        assert self.trust is not None
        prefix = None
        if self.trust.root.signed.consistent_snapshot:
            prefix = next(iter(target.hashes.values()))
        return target_url(base_url, target.path, prefix)

    def is_cached(self, target: TargetFile, dest: Path) -> bool:
        """True when ``dest`` holds exactly the target (length and every hash)."""
        return file_holds(target, dest, self.limits)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status (0 success, 1 failure)."""
    try:
        args = build_parser().parse_args(argv)
        client = TufClient(
            args.metadata_dir,
            metadata_url=args.metadata_url,
            limits=Limits.named(args.limits),
        )
        try:
            if args.command == "init":
                if not args.trusted_root:
                    raise UsageError("init needs TRUSTED_ROOT_FILE")
                client.init(args.trusted_root)
            elif args.command == "refresh":
                client.refresh()
            else:
                if not args.target_dir or not args.target_base_url:
                    raise UsageError("download needs --target-dir and --target-base-url")
                client.download(args.target_name, args.target_dir, args.target_base_url)
        finally:
            client.fetcher.close()
            for note in client.notes:
                print(f"{PROG}: note: {note}", file=sys.stderr)
    except (UsageError, UptaneError, OSError, ValueError) as e:
        print(f"{PROG}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except Exception:  # a bug is still a failure of the command, never exit 0
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
