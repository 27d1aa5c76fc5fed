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
  exponential backoff (urllib3's :class:`~urllib3.util.Retry`); when every attempt failed
  the fetch raises :class:`~uptane.errors.DropRequestAttack`;
- an answer that is not usable (an HTTP status other than 200/206/404 after retries, a
  404 for an image, a broken ``Content-Range``) raises :class:`~uptane.errors.FetchError`;
- images stream to a ``.part`` file that survives interruptions and is resumed with an
  HTTP ``Range`` request; it is renamed into place only when complete and verified. Every
  durable write of a download goes through the :class:`storage.FileSystem` it is given.

Redirects are not followed (a repository URL names the server that answers), and bodies
are never decompressed (``Accept-Encoding: identity``; a compressed body simply fails its
hash), so a small response cannot expand into a large one.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import urllib3
from urllib3.exceptions import (
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.util import Retry

from primary.http_deadline import POOL_CLASSES, HeadersTooSlow, watching
from storage import LOCAL, File, FileSystem
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
from uptane.metadata import TargetFile
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


#: what one more attempt may cure (anything else, an UptaneError above all, is final)
_RETRIED: tuple[type[Exception], ...] = (_ServerBusy, _Incomplete, *_TRANSIENT)


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

    ``retries`` is the number of extra attempts after the first, spaced by urllib3's
    :class:`~urllib3.util.Retry` with ``backoff`` as its factor: the first retry goes at
    once, the n-th after that waits ``min(backoff * 2**(n-1), backoff_max)`` seconds.
    ``min_bytes_per_second`` and ``speed_window`` override the slow-retrieval floor of
    ``limits``. The status line and headers must arrive within ``header_timeout`` seconds
    in all (default: twice the read timeout), so a server cannot stall a request by
    dripping its headers either (:mod:`primary.http_deadline`).

    HTTPS certificates are always verified: against ``ca_certs`` (a PEM bundle) when given,
    else the system store. ``cert_file``/``key_file`` (``key_password`` for an encrypted
    key) present a client certificate (mutual TLS: the Director answers a vehicle only
    with its own, docs/deploy.md); :class:`primary.tls.TlsConfig` gives all of them from
    the ``[tls]`` table. A TLS failure raises FetchError and is not retried.
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
        key_password: str | None = None,
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
            if key_password is not None:
                tls["key_password"] = key_password
        self._pool = urllib3.PoolManager(
            num_pools=8,
            maxsize=4,
            headers={"User-Agent": user_agent, "Accept-Encoding": "identity"},
            timeout=self.timeout,
            retries=False,
            **tls,
        )
        self._pool.pool_classes_by_scheme = dict(POOL_CLASSES)
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
        fs: FileSystem = LOCAL,
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

        Every write, fsync, rename and unlink goes through ``fs``; its write points are
        the part's first chunk of each transfer (label ``download NAME.part``), the part's
        fsync, the rename into place and the directory's fsync.
        """
        dest = Path(path)
        part = Path(part_path) if part_path is not None else dest.with_name(dest.name + ".part")
        self._check_request(url, length, verifier)
        fs.check()
        if not resume:
            fs.unlink(part)
        existing = _size(part)
        if existing > length:
            fs.unlink(part)
            existing = 0
        self._check_space(part.parent, length - existing, url)

        job = _Download(self, url, part, length, verifier, progress, fs)
        try:
            self._retrying(url, job.attempt)
        except _Incomplete as e:  # retries exhausted on refused resumes
            fs.unlink(part)
            raise BadLength(f"{url}: {e}") from None
        except (EndlessDataAttack, BadLength):
            fs.unlink(part)
            raise
        job.complete()
        fs.replace(part, dest)
        fs.sync_dir(dest.parent)
        return dest

    def _check_request(self, url: str, length: int, verifier: ImageVerifier | None) -> None:
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

    # --- internals ------------------------------------------------------------------------

    def _monitor(self, url: str) -> SpeedMonitor:
        return SpeedMonitor(url, self.min_bytes_per_second, self.speed_window)

    def _get(self, url: str, headers: dict[str, str]) -> Any:
        self.requests += 1
        try:
            with watching(self.header_timeout):
                return self._pool.request(
                    "GET",
                    url,
                    headers=headers or None,
                    preload_content=False,
                    decode_content=False,
                    redirect=False,
                    retries=False,
                )
        except HeadersTooSlow:
            raise SlowRetrievalAttack(
                f"{url}: the response headers took more than {self.header_timeout:g} s"
            ) from None

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
        """Run ``attempt`` until it returns, at most ``retries + 1`` times, spaced by
        urllib3's :class:`~urllib3.util.Retry` (which counts the attempts and computes the
        backoff). Its own use, inside a request, cannot serve: our attempt is the whole
        exchange, body included (a body cut short is resumed with ``Range`` on the next
        attempt), and the failures map to our errors. ``Retry-After`` is ignored: a hostile
        server could ask for any wait. The mapping when every attempt failed: busy (429,
        5xx) -> FetchError; a refused resume -> the caller's ``_Incomplete``; a transport
        failure -> DropRequestAttack. An UptaneError (slow retrieval, endless data, a 404)
        is never retried, nor is a TLS failure (FetchError)."""
        retry: Retry | None = None  # made at the first failure: most fetches have none
        while True:
            try:
                return attempt()
            except UptaneError:
                raise
            except SSLError as e:  # a certificate that does not verify is not transient
                raise FetchError(f"{url}: TLS failure ({e})") from None
            except _RETRIED as e:
                if retry is None:
                    retry = Retry(
                        total=self.retries,
                        backoff_factor=self.backoff,
                        backoff_max=self.backoff_max,
                        respect_retry_after_header=False,
                        redirect=False,
                    )
                try:
                    retry = retry.increment("GET", url, error=e)
                except MaxRetryError:
                    raise self._gave_up(url, e) from None
            retry.sleep()

    def _gave_up(self, url: str, last: Exception) -> Exception:
        tries = self.retries + 1
        if isinstance(last, _ServerBusy):
            return FetchError(f"{url}: {last} after {tries} attempts")
        if isinstance(last, _Incomplete):
            return last
        return DropRequestAttack(f"{url}: no complete answer after {tries} attempts ({last})")

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
        fs: FileSystem,
    ) -> None:
        self.f = fetcher
        self.url = url
        self.part = part
        self.length = length
        self.verifier = verifier
        self.progress = progress
        self.fs = fs
        self.label = f"download {part.name}"

    def _fresh_verifier(self) -> None:
        if self.verifier is not None and self.verifier.received:
            self.verifier = ImageVerifier(self.verifier.target, self.f.limits)

    def _catch_up(self, read: Callable[[int, int], bytes], upto: int) -> None:
        """Feed the verifier the part's bytes it has not seen, up to ``upto``
        (``read(size, offset)`` reads the part)."""
        v = self.verifier
        if v is None:
            return
        if v.received > upto:
            self._fresh_verifier()
            v = self.verifier
            assert v is not None
        pos = v.received
        while pos < upto:
            chunk = read(min(self.f.limits.chunk_size, upto - pos), pos)
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
            self.fs.open(self.part, 0o644, label=self.label).close()
            return
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = self.f._get(self.url, headers)
        done = False
        try:
            if resp.status == 404:
                raise FetchError(f"{self.url}: HTTP 404 (not found)")
            if offset and resp.status == 416:
                # the server's file is shorter than our part: that part is stale
                self.fs.unlink(self.part)
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
        with self.fs.open(self.part, 0o644, label=self.label) as f:
            f.truncate(start)
            f.seek(start)
            self._catch_up(f.pread, start)
            written = self._copy(resp, f, start)
            f.sync()
        if self.verifier is not None and written < self.length:
            # a complete answer (its framing ended cleanly) that is too short: the file is
            # not the signed one. A broken transfer raises a transport error instead,
            # which is retried and resumed.
            raise BadLength(f"{self.url}: the file ended after {written} of {self.length} bytes")
        return True

    def _copy(self, resp: Any, f: File, written: int) -> int:
        """The body into ``f`` (positioned at ``written``), never past the length, through
        the verifier; returns the part's length after it."""
        monitor = self.f._monitor(self.url)
        chunk_size = self.f.limits.chunk_size
        while True:
            want = min(chunk_size, self.length - written + 1)
            chunk = self.f._read(resp, want, monitor)
            if not chunk:
                return written
            if written + len(chunk) > self.length:
                raise EndlessDataAttack(f"{self.url}: more than the {self.length} bytes")
            if self.verifier is not None:
                self.verifier.update(chunk)
            f.write(chunk)
            written += len(chunk)
            if self.progress is not None:
                self.progress(written, self.length)

    def complete(self) -> None:
        """Check the finished part: feed any bytes the verifier has not seen (a part
        completed by an earlier run), then require the exact length and every hash. A
        mismatch deletes the part, so the next attempt starts clean."""
        if self.verifier is None:
            if not self.part.exists():
                self.fs.open(self.part, 0o644, label=self.label).close()
            return
        fd = os.open(self.part, os.O_RDONLY)
        try:
            self._catch_up(lambda size, offset: os.pread(fd, size, offset), _size(self.part))
            self.verifier.finish()
        except UptaneError:
            self.fs.unlink(self.part)
            raise
        finally:
            os.close(fd)


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
