"""The Primary's HTTP transport (urllib3): bounded, timed, retried, speed-monitored.

Nothing here verifies metadata or images: bytes go to :mod:`uptane` (``RepositoryTrust``,
``ImageVerifier``), which decides. This module only guarantees the transport side of the
threat model (§4.3):

- **endless data**: no response is read past its cap; a ``Content-Length`` over the cap
  is refused before the body is read (:class:`~uptane.errors.EndlessDataAttack`);
- **slow retrieval** (§5.4, SHALL): the average speed over each window of
  ``speed_window`` seconds must reach ``min_bytes_per_second``, or the transfer is
  aborted (:class:`~uptane.errors.SlowRetrievalAttack`, naming the URL; not retried).
  The check is :class:`uptane.speed.SpeedMonitor`; this module feeds it the bytes and
  ``time.monotonic()``;
- **drop request**: connect/read timeouts and broken connections are retried with
  exponential backoff; when every attempt failed the fetch raises
  :class:`~uptane.errors.DropRequestAttack`;
- an answer that is not usable (an HTTP status other than 200/206/404 after retries, a
  404 for an image, a broken ``Content-Range``) raises :class:`~uptane.errors.FetchError`;
- images stream to a ``.part`` file that survives interruptions and is resumed with an
  HTTP ``Range`` request; it is renamed into place only when complete and verified.

Redirects are not followed (a repository URL names the server that answers), and bodies
are never decompressed (``Accept-Encoding: identity``; a compressed body simply fails its
hash), so a small response cannot expand into a large one.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError, ProtocolError, ReadTimeoutError, SSLError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from hardware.flash import PowerCut, PowerLoss
from hardware.store import fsync_dir, write_all
from uptane.errors import (
    BadLength,
    DropRequestAttack,
    EndlessDataAttack,
    FetchError,
    InsufficientSpace,
    SlowRetrievalAttack,
    UptaneError,
)
from uptane.limits import PRIMARY, Limits
from uptane.metadata import JSON, TargetFile
from uptane.paths import encode_name
from uptane.repository import metadata_filename
from uptane.speed import SpeedMonitor as CoreSpeedMonitor
from uptane.verify import ImageVerifier

DEFAULT_USER_AGENT = "uptane-stack/0.1"

#: transient transport failures: retried, then reported as a drop-request attack
_TRANSIENT: tuple[type[Exception], ...] = (
    Urllib3Timeout,
    NewConnectionError,
    ProtocolError,
    ConnectionError,
)

#: at most 20 digits a number, as for Content-Length: int() of a hostile header stays bounded
_CONTENT_RANGE = re.compile(r"^bytes (\d{1,20})-(\d{1,20})/(\d{1,20}|\*)$")

Progress = Callable[[int, int], None]


class _ServerBusy(Exception):
    """A 429 or 5xx answer: worth another attempt."""


class _Incomplete(Exception):
    """The server refused to resume a stale part (HTTP 416): worth a fresh attempt."""


class _HeadersTooSlow(Exception):
    """The response headers did not complete within the header deadline."""


class _HeaderWatch:
    """One request's header deadline, armed by :meth:`Fetcher._get` in the calling thread
    and enforced by the connection while it reads the status line and headers."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.expired = False
        self.done = False
        self.lock = threading.Lock()


_current = threading.local()


class _Watchdog:
    """One daemon thread that runs the header-deadline aborts of every request in the
    process, instead of a ``threading.Timer`` (a new thread) per request. Arming is a
    heap push under a lock; the thread is woken only when the new deadline is earlier
    than the one it sleeps until, and disarmed entries are dropped when they come up (or
    when a new entry is armed)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.heap: list[tuple[float, int, list[Any]]] = []
        self.seq = 0
        self.thread: threading.Thread | None = None
        self.wake_at = float("inf")  # when the thread wakes up next (under cond)

    def arm(self, timeout: float, fn: Callable[[], None]) -> list[Any]:
        entry: list[Any] = [fn]  # [fn], or [None] once disarmed
        with self.cond:
            while self.heap and self.heap[0][2][0] is None:  # disarmed: drop it now
                heapq.heappop(self.heap)
            self.seq += 1
            item = (time.monotonic() + timeout, self.seq, entry)
            heapq.heappush(self.heap, item)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self._run, name="fetcher-header-deadlines", daemon=True
                )
                self.thread.start()
            elif item[0] < self.wake_at:
                self.cond.notify()
        return entry

    @staticmethod
    def disarm(entry: list[Any]) -> None:
        entry[0] = None

    def _run(self) -> None:
        while True:
            with self.cond:
                while True:
                    while self.heap and self.heap[0][2][0] is None:
                        heapq.heappop(self.heap)
                    if not self.heap:
                        self.wake_at = float("inf")
                        self.cond.wait()
                        continue
                    wait = self.heap[0][0] - time.monotonic()
                    if wait <= 0:
                        fn = heapq.heappop(self.heap)[2][0]
                        break
                    self.wake_at = self.heap[0][0]
                    self.cond.wait(wait)
            if fn is not None:
                with contextlib.suppress(Exception):
                    fn()


_watchdog = _Watchdog()


def _getresponse_with_deadline(conn: Any, getresponse: Callable[[], Any]) -> Any:
    """Read the headers, shutting the socket down if they take longer than the deadline.

    A per-operation read timeout cannot stop a server that drips its headers a byte at a
    time; this bounds the whole header phase. Past the deadline the fetcher raises
    SlowRetrievalAttack.
    """
    watch: _HeaderWatch | None = getattr(_current, "watch", None)
    if watch is None or watch.timeout <= 0:
        return getresponse()
    sock = conn.sock

    def abort() -> None:
        with watch.lock:
            if watch.done:
                return
            watch.expired = True
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    armed = _watchdog.arm(watch.timeout, abort)
    try:
        resp = getresponse()
    except Exception:
        if watch.expired:
            raise _HeadersTooSlow from None
        raise
    finally:
        _watchdog.disarm(armed)
        with watch.lock:
            watch.done = True
    if watch.expired:  # the cut may have ended the headers early rather than failing them
        with contextlib.suppress(Exception):
            resp.close()
        raise _HeadersTooSlow
    return resp


class _DeadlineHTTPConnection(HTTPConnection):
    def getresponse(self) -> Any:  # type: ignore[override]
        return _getresponse_with_deadline(self, super().getresponse)


class _DeadlineHTTPSConnection(HTTPSConnection):
    def getresponse(self) -> Any:  # type: ignore[override]
        return _getresponse_with_deadline(self, super().getresponse)


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


class SpeedMonitor:
    """The fetcher's side of slow-retrieval detection (§5.4): the check itself is
    :class:`uptane.speed.SpeedMonitor`; this adapter only reads the clock for it.

    :meth:`add` is called with every chunk, :meth:`check` when a read timed out with no
    data. A zero floor or window turns the check off. Every second since the start counts
    (no idle allowance: a silent server is what the check is for).
    """

    def __init__(
        self,
        url: str,
        min_bytes_per_second: float,
        window: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.clock = clock
        self.core = CoreSpeedMonitor(min_bytes_per_second, window, what=url, start=clock())

    def add(self, n: int) -> None:
        self.core.update(n, self.clock())

    def check(self) -> None:
        self.core.check(self.clock())


class Fetcher:
    """HTTP GETs with byte caps, timeouts, retries with backoff and slow-retrieval checks.

    ``retries`` is the number of extra attempts after the first; the n-th retry waits
    ``min(backoff * 2**(n-1), backoff_max)`` seconds. ``min_bytes_per_second`` and
    ``speed_window`` override the slow-retrieval floor of ``limits``. The status line and
    headers must arrive within ``header_timeout`` seconds in all (default: twice the read
    timeout), so a server cannot stall a request by dripping its headers either.

    HTTPS certificates are always verified: against ``ca_certs`` (a PEM bundle) when given,
    else the system store. ``cert_file``/``key_file`` present a client certificate (mutual
    TLS). A TLS failure raises FetchError and is not retried.
    """

    def __init__(
        self,
        limits: Limits = PRIMARY,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        user_agent: str = DEFAULT_USER_AGENT,
        min_bytes_per_second: float | None = None,
        speed_window: float | None = None,
        header_timeout: float | None = None,
        ca_certs: str | os.PathLike[str] | None = None,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.limits = limits
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.min_bytes_per_second = (
            limits.min_bytes_per_second if min_bytes_per_second is None else min_bytes_per_second
        )
        self.speed_window = limits.speed_window if speed_window is None else speed_window
        self.timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        #: the whole status line and headers must arrive within this many seconds
        self.header_timeout = 2 * read_timeout if header_timeout is None else header_timeout
        tls: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED"}
        if ca_certs is not None:
            tls["ca_certs"] = os.fspath(ca_certs)
        if cert_file is not None:
            tls["cert_file"] = os.fspath(cert_file)
            if key_file is not None:
                tls["key_file"] = os.fspath(key_file)
        self._pool = urllib3.PoolManager(
            num_pools=8,
            maxsize=4,
            headers={"User-Agent": user_agent, "Accept-Encoding": "identity"},
            timeout=self.timeout,
            retries=False,
            **tls,
        )
        self._pool.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
        #: number of HTTP requests sent (for status displays and tests)
        self.requests = 0

    # --- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        self._pool.clear()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- public API -----------------------------------------------------------------------

    def fetch_bytes(self, url: str, max_bytes: int) -> bytes | None:
        """GET ``url`` into memory: the body, or None on 404. Never buffers more than
        ``max_bytes``: a longer body (declared or streamed) raises EndlessDataAttack."""

        def attempt() -> bytes | None:
            resp = self._get(url, {})
            complete = False
            try:
                if resp.status == 404:
                    return None
                self._check_status(url, resp, (200,))
                declared = _content_length(url, resp)
                if declared is not None and declared > max_bytes:
                    raise EndlessDataAttack(
                        f"{url}: Content-Length {declared} exceeds the {max_bytes}-byte cap"
                    )
                monitor = self._monitor(url)
                buf = bytearray()
                while True:
                    want = min(self.limits.chunk_size, max_bytes + 1 - len(buf))
                    chunk = self._read(resp, want, monitor)
                    if not chunk:
                        break
                    if len(buf) + len(chunk) > max_bytes:
                        raise EndlessDataAttack(f"{url}: more than the {max_bytes}-byte cap")
                    buf += chunk
                complete = True
                return bytes(buf)
            finally:
                _finish(resp, complete)

        return self._retrying(url, attempt)

    def download_to(
        self,
        url: str,
        path: str | os.PathLike[str],
        length: int,
        verifier: ImageVerifier | None = None,
        *,
        progress: Progress | None = None,
        resume: bool = True,
        part_path: str | os.PathLike[str] | None = None,
        fault: PowerCut | None = None,
    ) -> Path:
        """Stream ``url`` to ``path``, at most ``length`` bytes, and return ``path``.

        Bytes go to ``part_path`` (default ``path`` + ``.part``) first. With ``resume``, a
        part left by an interrupted download is kept: it is re-hashed through the
        verifier and the rest is requested with ``Range``. With a ``verifier`` the file
        must end up exactly ``verifier.target.length`` bytes with every hash right
        (``finish``); without one, ``length`` is only a cap. When complete and verified
        the part is fsynced and atomically renamed to ``path``. A file that is complete but
        wrong (BadHash, BadLength, EndlessDataAttack) deletes the part; an interrupted
        transfer (a transport error) keeps it for the next attempt or call.

        Free space for the missing bytes is checked before any request
        (InsufficientSpace). ``progress(done, length)`` is called after every chunk.
        If the server ignores ``Range`` the download restarts from zero, with a fresh
        verifier for the same target.

        ``fault`` (tests only) is a :class:`hardware.flash.PowerCut`; its write points are
        the part's first chunk of each transfer (torn), the part's fsync, the rename and the
        directory's fsync.
        """
        dest = Path(path)
        part = Path(part_path) if part_path is not None else dest.with_name(dest.name + ".part")
        if length < 0:
            raise ValueError("length must be >= 0")
        if length > self.limits.image_bytes:
            raise EndlessDataAttack(
                f"{url}: {length} bytes exceeds the image cap of {self.limits.image_bytes}"
            )
        if verifier is not None and verifier.target.length != length:
            raise ValueError("length differs from the verifier's target length")
        if verifier is not None and verifier.received:
            raise ValueError("the verifier has already been fed")
        if not resume:
            part.unlink(missing_ok=True)
        existing = _size(part)
        if existing > length:
            part.unlink()
            existing = 0
        self._check_space(part.parent, length - existing, url)

        _power_check(fault)
        job = _Download(self, url, part, length, verifier, progress, fault)
        try:
            self._retrying(url, job.attempt)
        except _Incomplete as e:  # retries exhausted on refused resumes
            part.unlink(missing_ok=True)
            raise BadLength(f"{url}: {e}") from None
        except (EndlessDataAttack, BadLength):
            part.unlink(missing_ok=True)
            raise
        job.complete()
        _power_point(fault, f"download rename {dest.name}")
        os.replace(part, dest)
        _power_point(fault, f"download fsync-dir {dest.name}")
        fsync_dir(dest.parent)
        return dest

    # --- internals ------------------------------------------------------------------------

    def _monitor(self, url: str) -> SpeedMonitor:
        return SpeedMonitor(url, self.min_bytes_per_second, self.speed_window)

    def _get(self, url: str, headers: dict[str, str]) -> Any:
        self.requests += 1
        _current.watch = _HeaderWatch(self.header_timeout)
        try:
            return self._pool.request(
                "GET",
                url,
                headers=headers or None,
                preload_content=False,
                decode_content=False,
                redirect=False,
                retries=False,
            )
        except _HeadersTooSlow:
            raise SlowRetrievalAttack(
                f"{url}: the response headers took more than {self.header_timeout:g} s"
            ) from None
        finally:
            _current.watch = None

    @staticmethod
    def _read(resp: Any, amount: int, monitor: SpeedMonitor) -> bytes:
        """One read of at most ``amount`` bytes (whatever has arrived, not a full buffer,
        so a drip-feeding server is seen), feeding the speed monitor."""
        try:
            chunk: bytes = resp.read1(amount, decode_content=False)
        except ReadTimeoutError:
            monitor.check()  # a silent server may already be a slow-retrieval attack
            raise
        monitor.add(len(chunk))
        return chunk

    @staticmethod
    def _check_status(url: str, resp: Any, ok: tuple[int, ...]) -> None:
        status = resp.status
        if status in ok:
            return
        if status == 429 or 500 <= status < 600:
            raise _ServerBusy(f"HTTP {status}")
        raise FetchError(f"{url}: HTTP {status}")

    def _retrying(self, url: str, attempt: Callable[[], Any]) -> Any:
        last: Exception | None = None
        for n in range(self.retries + 1):
            if n:
                time.sleep(min(self.backoff * 2 ** (n - 1), self.backoff_max))
            try:
                return attempt()
            except UptaneError:
                raise
            except SSLError as e:  # a certificate that does not verify is not transient
                raise FetchError(f"{url}: TLS failure ({e})") from None
            except (_ServerBusy, _Incomplete, *_TRANSIENT) as e:
                last = e
        tries = self.retries + 1
        if isinstance(last, _ServerBusy):
            raise FetchError(f"{url}: {last} after {tries} attempts")
        if isinstance(last, _Incomplete):
            raise last
        raise DropRequestAttack(f"{url}: no complete answer after {tries} attempts ({last})")

    def _check_space(self, directory: Path, needed: int, url: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(directory).free
        if needed > free:
            raise InsufficientSpace(
                f"{url}: needs {needed} bytes in {directory}, only {free} are free"
            )


class _Download:
    """The state of one :meth:`Fetcher.download_to` across its attempts.

    Invariant between attempts: ``verifier.received`` <= the size of the part file, and
    the verifier has seen exactly the first ``verifier.received`` bytes of it.
    """

    def __init__(
        self,
        fetcher: Fetcher,
        url: str,
        part: Path,
        length: int,
        verifier: ImageVerifier | None,
        progress: Progress | None,
        fault: PowerCut | None = None,
    ) -> None:
        self.f = fetcher
        self.url = url
        self.part = part
        self.length = length
        self.verifier = verifier
        self.progress = progress
        self.fault = fault

    def _fresh_verifier(self) -> None:
        if self.verifier is not None and self.verifier.received:
            self.verifier = ImageVerifier(self.verifier.target, self.f.limits)

    def _catch_up(self, fd: int, upto: int) -> None:
        """Feed the verifier the part's bytes it has not seen, up to ``upto``."""
        v = self.verifier
        if v is None:
            return
        if v.received > upto:
            self._fresh_verifier()
            v = self.verifier
            assert v is not None
        pos = v.received
        while pos < upto:
            chunk = os.pread(fd, min(self.f.limits.chunk_size, upto - pos), pos)
            if not chunk:
                raise BadLength(f"{self.part}: shorter than expected while re-hashing")
            v.update(chunk)
            pos += len(chunk)

    def attempt(self) -> None:
        offset = _size(self.part)
        if offset > self.length:
            offset = 0
        if offset == self.length and self.verifier is not None:
            # complete from an earlier attempt or run (or empty): verified in complete()
            os.close(os.open(self.part, os.O_WRONLY | os.O_CREAT, 0o644))
            return
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = self.f._get(self.url, headers)
        done = False
        try:
            if resp.status == 404:
                raise FetchError(f"{self.url}: HTTP 404 (not found)")
            if offset and resp.status == 416:
                # the server's file is shorter than our part: that part is stale
                self.part.unlink(missing_ok=True)
                self._fresh_verifier()
                raise _Incomplete("the server refused to resume (HTTP 416)")
            self.f._check_status(self.url, resp, (200, 206) if offset else (200,))
            start = 0
            if resp.status == 206:
                start = _range_start(self.url, resp, offset)
            declared = _content_length(self.url, resp)
            if declared is not None and start + declared > self.length:
                raise EndlessDataAttack(
                    f"{self.url}: {start + declared} bytes announced, "
                    f"more than the {self.length} allowed"
                )
            done = self._stream(resp, start)
        finally:
            _finish(resp, done)

    def _stream(self, resp: Any, start: int) -> bool:
        fd = os.open(self.part, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, start)
            os.lseek(fd, start, os.SEEK_SET)
            self._catch_up(fd, start)
            written = start
            monitor = self.f._monitor(self.url)
            chunk_size = self.f.limits.chunk_size
            while True:
                want = min(chunk_size, self.length - written + 1)
                chunk = self.f._read(resp, want, monitor)
                if not chunk:
                    break
                if written + len(chunk) > self.length:
                    raise EndlessDataAttack(f"{self.url}: more than the {self.length} bytes")
                if self.verifier is not None:
                    self.verifier.update(chunk)
                fault = self.fault  # tests only: one write point per transfer, torn
                if (
                    fault is not None
                    and written == start
                    and fault.hit(f"download write {self.part.name}")
                ):
                    write_all(fd, chunk[: int(len(chunk) * fault.torn)])
                    raise PowerLoss(f"power cut at {fault.fired_at}")
                write_all(fd, chunk)
                written += len(chunk)
                if self.progress is not None:
                    self.progress(written, self.length)
            _power_point(self.fault, f"download fsync {self.part.name}")
            os.fsync(fd)
        finally:
            os.close(fd)
        if self.verifier is not None and written < self.length:
            # a complete answer (its framing ended cleanly) that is too short: the file is
            # not the signed one. A broken transfer raises a transport error instead,
            # which is retried and resumed.
            raise BadLength(f"{self.url}: the file ended after {written} of {self.length} bytes")
        return True

    def complete(self) -> None:
        """Check the finished part: feed any bytes the verifier has not seen (a part
        completed by an earlier run), then require the exact length and every hash. A
        mismatch deletes the part, so the next attempt starts clean."""
        if self.verifier is None:
            if not self.part.exists():
                fd = os.open(self.part, os.O_WRONLY | os.O_CREAT, 0o644)
                os.close(fd)
            return
        fd = os.open(self.part, os.O_RDONLY)
        try:
            self._catch_up(fd, _size(self.part))
            self.verifier.finish()
        except UptaneError:
            self.part.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)


def _power_check(fault: PowerCut | None) -> None:
    """Raise PowerLoss when ``fault`` has already cut the power (tests only)."""
    if fault is not None and fault.fired:
        raise PowerLoss("the power is off")


def _power_point(fault: PowerCut | None, what: str) -> None:
    """One write point of ``fault`` (tests only): raise PowerLoss when the power dies here."""
    if fault is not None and fault.hit(what):
        raise PowerLoss(f"power cut at {fault.fired_at}")


def file_holds(target: TargetFile, path: Path, limits: Limits) -> bool:
    """Whether ``path`` holds exactly ``target``: its length and every hash, checked by the
    core's streaming verifier (a download finished before a crash, a cached artifact)."""
    try:
        if path.stat().st_size != target.length:
            return False
        verifier = ImageVerifier(target, limits)
        with path.open("rb") as f:
            while chunk := f.read(limits.chunk_size):
                verifier.update(chunk)
        verifier.finish()
    except (OSError, UptaneError):
        return False
    return True


class HttpMetadataSource:
    """A :class:`uptane.trust.MetadataSource` over HTTP: ``base_url/VERSION.ROLE.EXT`` or
    ``base_url/ROLE.EXT``, the role name percent-encoded (``../x`` -> ``..%2Fx``) so it
    cannot leave the metadata directory on the server."""

    def __init__(
        self,
        fetcher: Fetcher,
        base_url: str,
        encoding: str = JSON,
        *,
        repository: str | None = None,
    ) -> None:
        self.fetcher = fetcher
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.encoding = encoding
        self.repository = repository

    def url_for(self, role: str, version: int | None) -> str:
        return self.base_url + metadata_filename(encode_name(role), version, self.encoding)

    def fetch_metadata(self, role: str, version: int | None, max_bytes: int) -> bytes | None:
        try:
            return self.fetcher.fetch_bytes(self.url_for(role, version), max_bytes)
        except UptaneError as e:
            raise e.at(repository=self.repository, role=role) from None


def target_url(base_url: str, path: str, hash_prefix: str | None = None) -> str:
    """The URL of target ``path`` under ``base_url``; with consistent snapshots the file
    name gets the hash prefix (``dir/HASH.name``, §5.2.7). Path segments are
    percent-encoded, slashes kept."""
    base = base_url if base_url.endswith("/") else base_url + "/"
    dirname, sep, name = path.rpartition("/")
    if hash_prefix is not None:
        name = f"{hash_prefix}.{name}"
    return base + quote(f"{dirname}{sep}{name}", safe="/")


# --- helpers --------------------------------------------------------------------------------


def _content_length(url: str, resp: Any) -> int | None:
    value = resp.headers.get("Content-Length")
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or len(value) > 20:
        raise FetchError(f"{url}: bad Content-Length {value[:32]!r}")
    return int(value)


def _range_start(url: str, resp: Any, offset: int) -> int:
    m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", "").strip())
    if not m:
        raise FetchError(f"{url}: HTTP 206 without a usable Content-Range")
    start, end = int(m.group(1)), int(m.group(2))
    if start > offset or end < start:
        raise FetchError(f"{url}: Content-Range {m.group(0)!r} does not continue at {offset}")
    return start


def _finish(resp: Any, complete: bool) -> None:
    """Return a fully read connection to the pool; close any other (never drain it)."""
    if complete:
        resp.release_conn()
    else:
        with contextlib.suppress(Exception):
            resp.close()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
