"""The Primary's fetcher against real HTTP servers on 127.0.0.1: byte caps, 404, retries,
drop-request, slow retrieval, resumed downloads, hash mismatch, free space."""

from __future__ import annotations

import hashlib
import shutil
import socket
import ssl
import struct
import threading
import time
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from http_servers import QuietHandler, Server, serve

from primary.fetcher import Fetcher, SpeedMonitor
from primary.http_deadline import _Watchdog
from primary.sources import HttpMetadataSource, target_url
from uptane.errors import (
    BadHash,
    DropRequestAttack,
    EndlessDataAttack,
    FetchError,
    InsufficientSpace,
    SlowRetrievalAttack,
)
from uptane.limits import Limits
from uptane.metadata import TargetFile
from uptane.verify import ImageVerifier

LIMITS = Limits.primary().replace(chunk_size=4096)
IMAGE = bytes(range(256)) * 400  # 102400 bytes


def fast_fetcher(**kw: object) -> Fetcher:
    """Short timeouts and backoff, so failing tests finish quickly."""
    opts: dict[str, object] = {
        "connect_timeout": 2.0,
        "read_timeout": 2.0,
        "retries": 2,
        "backoff": 0.01,
        "min_bytes_per_second": 0,
    }
    opts.update(kw)
    return Fetcher(LIMITS, **opts)  # type: ignore[arg-type]


def verifier_for(data: bytes, path: str = "image.bin") -> ImageVerifier:
    return ImageVerifier(TargetFile.from_data(path, data, ("sha256", "sha512")), LIMITS)


def _rst(sock: socket.socket) -> None:
    """Close with a TCP reset instead of an orderly FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# --- hostile and flaky handlers ------------------------------------------------------------


class EndlessHandler(QuietHandler):
    """Sends bytes until the client goes away; with or without a Content-Length."""

    def do_GET(self) -> None:
        self.record()
        self.send_response(200)
        mode = self.server.mode  # type: ignore[attr-defined]
        if mode == "length":
            self.send_header("Content-Length", str(10**12))
        elif mode == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        block = b"A" * 65536
        try:
            for _ in range(2048):  # at most 128 MiB if the client never stops
                if mode == "chunked":
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                else:
                    self.wfile.write(block)
        except OSError:
            pass
        self.close_connection = True


class ResetHandler(QuietHandler):
    """Resets the first ``server.resets`` connections, then serves ``server.body``."""

    def do_GET(self) -> None:
        self.record()
        with self.server.lock:  # type: ignore[attr-defined]
            reset = len(self.server.requests) <= self.server.resets  # type: ignore[attr-defined]
        if reset:
            _rst(self.connection)
            self.close_connection = True
            return
        self.send_body(self.server.body)  # type: ignore[attr-defined]


class StatusHandler(QuietHandler):
    """Answers with the statuses in ``server.statuses`` in turn, then 200 + ``server.body``."""

    def do_GET(self) -> None:
        self.record()
        with self.server.lock:  # type: ignore[attr-defined]
            statuses = self.server.statuses  # type: ignore[attr-defined]
            status = statuses.pop(0) if statuses else 200
        self.send_body(self.server.body if status == 200 else b"busy", status)  # type: ignore[attr-defined]


class DripHandler(QuietHandler):
    """Announces ``server.body`` but sends it one byte every ``server.delay`` seconds."""

    def do_GET(self) -> None:
        self.record()
        body: bytes = self.server.body  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            for i in range(len(body)):
                self.wfile.write(body[i : i + 1])
                time.sleep(self.server.delay)  # type: ignore[attr-defined]
        except OSError:
            pass
        self.close_connection = True


class HeaderDripHandler(QuietHandler):
    """Sends a valid status line, then one header byte every ``server.delay`` seconds."""

    def do_GET(self) -> None:
        self.record()
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for _ in range(10_000):
                self.wfile.write(b"X")
                time.sleep(self.server.delay)  # type: ignore[attr-defined]
        except OSError:
            pass
        self.close_connection = True


class SilentHandler(QuietHandler):
    """Reads the request, then says nothing (``server.headers``: after sending headers)."""

    def do_GET(self) -> None:
        self.record()
        if self.server.headers:  # type: ignore[attr-defined]
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
        self.server.stop.wait(10)  # type: ignore[attr-defined]
        self.close_connection = True


class ResumableHandler(QuietHandler):
    """Serves ``server.body`` with Range support; the first ``server.cuts`` responses stop
    after ``server.cut_at`` bytes of the body and reset the connection. ``server.ranges``
    records each Range header (or None); ``server.honour_range`` False ignores Range."""

    def do_GET(self) -> None:
        self.record()
        body: bytes = self.server.body  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        srv = self.server
        with srv.lock:  # type: ignore[attr-defined]
            srv.ranges.append(rng)  # type: ignore[attr-defined]
            cut = srv.cuts > 0  # type: ignore[attr-defined]
            srv.cuts -= 1  # type: ignore[attr-defined]
        start = 0
        if rng and srv.honour_range:  # type: ignore[attr-defined]
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if cut:
            self.wfile.write(body[start : srv.cut_at])  # type: ignore[attr-defined]
            _rst(self.connection)
            self.close_connection = True
            return
        self.wfile.write(body[start:])


def resumable(
    body: bytes, *, cuts: int, cut_at: int, honour_range: bool = True
) -> AbstractContextManager[Server]:
    return serve(
        ResumableHandler, body=body, cuts=cuts, cut_at=cut_at, ranges=[], honour_range=honour_range
    )


# --- fetch_bytes ---------------------------------------------------------------------------


def test_fetch_bytes_reads_a_file(static_server: Server) -> None:
    (static_server.root / "a.json").write_bytes(b'{"x": 1}')
    with fast_fetcher() as f:
        assert f.fetch_bytes(static_server.url + "/a.json", 100) == b'{"x": 1}'


def test_fetch_bytes_exactly_at_the_cap_is_fine(static_server: Server) -> None:
    (static_server.root / "a").write_bytes(b"x" * 100)
    with fast_fetcher() as f:
        assert f.fetch_bytes(static_server.url + "/a", 100) == b"x" * 100


def test_fetch_bytes_404_is_none(static_server: Server) -> None:
    with fast_fetcher() as f:
        assert f.fetch_bytes(static_server.url + "/missing.json", 100) is None
    assert static_server.requests == ["/missing.json"]


def test_content_length_over_the_cap_is_refused_up_front(static_server: Server) -> None:
    (static_server.root / "big").write_bytes(b"x" * 101)
    with fast_fetcher() as f, pytest.raises(EndlessDataAttack, match="Content-Length 101"):
        f.fetch_bytes(static_server.url + "/big", 100)


@pytest.mark.parametrize("mode", ["close", "chunked", "length"])
def test_4_3_endless_data_is_cut_at_the_cap(mode: str) -> None:
    cap = 200_000
    with serve(EndlessHandler, mode=mode) as srv, fast_fetcher() as f:
        with pytest.raises(EndlessDataAttack) as exc:
            f.fetch_bytes(srv.url + "/timestamp.json", cap)
        assert len(srv.requests) == 1  # an attack is not retried
    assert "endless-data" in str(exc.value)


def test_reset_connections_are_retried_then_drop_request() -> None:
    with serve(ResetHandler, resets=100, body=b"ok") as srv, fast_fetcher(retries=2) as f:
        with pytest.raises(DropRequestAttack, match="3 attempts"):
            f.fetch_bytes(srv.url + "/root.json", 100)
        assert len(srv.requests) == 3


def test_a_reset_then_an_answer_succeeds() -> None:
    with serve(ResetHandler, resets=1, body=b"ok") as srv, fast_fetcher(retries=2) as f:
        assert f.fetch_bytes(srv.url + "/root.json", 100) == b"ok"
        assert len(srv.requests) == 2


def test_connection_refused_is_drop_request() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens on this port now
    with fast_fetcher(retries=1) as f, pytest.raises(DropRequestAttack):
        f.fetch_bytes(f"http://127.0.0.1:{port}/root.json", 100)


def test_no_answer_times_out_then_drop_request() -> None:
    import threading

    stop = threading.Event()
    with serve(SilentHandler, headers=False, stop=stop) as srv:
        try:
            with fast_fetcher(read_timeout=0.2, retries=1) as f, pytest.raises(DropRequestAttack):
                f.fetch_bytes(srv.url + "/timestamp.json", 100)
            assert len(srv.requests) == 2
        finally:
            stop.set()


def test_server_errors_are_retried() -> None:
    with (
        serve(StatusHandler, statuses=[503, 500], body=b"fine") as srv,
        fast_fetcher(retries=2) as f,
    ):
        assert f.fetch_bytes(srv.url + "/x", 100) == b"fine"
        assert len(srv.requests) == 3


def test_persistent_server_errors_are_a_fetch_error() -> None:
    with (
        serve(StatusHandler, statuses=[503] * 10, body=b"") as srv,
        fast_fetcher(retries=1) as f,
        pytest.raises(FetchError, match="HTTP 503"),
    ):
        f.fetch_bytes(srv.url + "/x", 100)


def test_other_statuses_are_a_fetch_error_without_retry() -> None:
    with serve(StatusHandler, statuses=[403], body=b"") as srv, fast_fetcher(retries=3) as f:
        with pytest.raises(FetchError, match="HTTP 403"):
            f.fetch_bytes(srv.url + "/x", 100)
        assert len(srv.requests) == 1


# --- slow retrieval ------------------------------------------------------------------------


def test_5_4_slow_retrieval_drip_feed_is_aborted() -> None:
    with (
        serve(DripHandler, body=b"x" * 1000, delay=0.02) as srv,
        fast_fetcher(min_bytes_per_second=500, speed_window=0.3) as f,
    ):
        url = srv.url + "/snapshot.json"
        with pytest.raises(SlowRetrievalAttack) as exc:
            f.fetch_bytes(url, 10_000)
        assert url in str(exc.value)
        assert len(srv.requests) == 1  # not retried


def test_5_4_slow_retrieval_silent_body_is_aborted() -> None:
    import threading

    stop = threading.Event()
    with serve(SilentHandler, headers=True, stop=stop) as srv:
        try:
            f = fast_fetcher(read_timeout=0.5, min_bytes_per_second=10, speed_window=0.2)
            with f, pytest.raises(SlowRetrievalAttack):
                f.fetch_bytes(srv.url + "/targets.json", 1000)
        finally:
            stop.set()


def test_5_4_slow_retrieval_dripping_headers_is_aborted() -> None:
    """A read timeout per socket operation cannot stop headers sent a byte at a time: the
    header deadline does."""
    with (
        serve(HeaderDripHandler, delay=0.02) as srv,
        fast_fetcher(read_timeout=1.0, header_timeout=0.4) as f,
    ):
        url = srv.url + "/timestamp.json"
        with pytest.raises(SlowRetrievalAttack, match="headers") as exc:
            f.fetch_bytes(url, 1000)
        assert url in str(exc.value)
        assert len(srv.requests) == 1


def test_header_deadline_leaves_normal_requests_alone(static_server: Server) -> None:
    (static_server.root / "a").write_bytes(b"x")
    with fast_fetcher(header_timeout=0.5) as f:
        for _ in range(3):  # the pooled connection survives its disarmed deadlines
            assert f.fetch_bytes(static_server.url + "/a", 10) == b"x"
        time.sleep(0.6)
        assert f.fetch_bytes(static_server.url + "/a", 10) == b"x"


def test_5_4_slow_retrieval_of_an_image_keeps_the_part(tmp_path: Path) -> None:
    body = IMAGE[:2000]
    with (
        serve(DripHandler, body=body, delay=0.02) as srv,
        fast_fetcher(min_bytes_per_second=500, speed_window=0.3) as f,
    ):
        dest = tmp_path / "img"
        with pytest.raises(SlowRetrievalAttack):
            f.download_to(srv.url + "/img", dest, len(body), verifier_for(body))
    assert not dest.exists()
    part = tmp_path / "img.part"
    assert 0 < part.stat().st_size < len(body)
    assert part.read_bytes() == body[: part.stat().st_size]


def test_speed_monitor_windows() -> None:
    now = [0.0]
    m = SpeedMonitor("http://x/y", 100, 1.0, clock=lambda: now[0])
    now[0] = 0.5
    m.add(10)  # inside the first window: not judged yet
    now[0] = 1.0
    m.add(90)  # 100 B in 1 s: exactly the floor
    now[0] = 1.5
    m.check()
    now[0] = 2.5
    with pytest.raises(SlowRetrievalAttack, match="http://x/y"):
        m.add(50)  # 50 B in the second 1.5 s window
    off = SpeedMonitor("u", 0, 1.0, clock=lambda: now[0])
    now[0] = 100.0
    off.check()


# --- download_to ---------------------------------------------------------------------------


def test_download_streams_verifies_and_renames(static_server: Server, tmp_path: Path) -> None:
    (static_server.root / "img.bin").write_bytes(IMAGE)
    seen: list[tuple[int, int]] = []
    dest = tmp_path / "out" / "img.bin"
    with fast_fetcher() as f:
        got = f.download_to(
            static_server.url + "/img.bin",
            dest,
            len(IMAGE),
            verifier_for(IMAGE),
            progress=lambda done, total: seen.append((done, total)),
        )
    assert got == dest
    assert dest.read_bytes() == IMAGE
    assert not (tmp_path / "out" / "img.bin.part").exists()
    assert seen[-1] == (len(IMAGE), len(IMAGE))
    assert all(t == len(IMAGE) for _, t in seen)


def test_interrupted_download_resumes_with_range(tmp_path: Path) -> None:
    dest = tmp_path / "img"
    with resumable(IMAGE, cuts=1, cut_at=30_000) as srv, fast_fetcher(retries=2) as f:
        f.download_to(srv.url + "/img", dest, len(IMAGE), verifier_for(IMAGE))
        ranges = srv.httpd.ranges  # type: ignore[attr-defined]
    assert dest.read_bytes() == IMAGE
    assert ranges[0] is None
    assert ranges[1] is not None and ranges[1] != "bytes=0-"
    assert int(ranges[1][6:-1]) <= 30_000


def test_download_resumes_on_the_next_call_and_rehashes_the_part(tmp_path: Path) -> None:
    dest = tmp_path / "img"
    with resumable(IMAGE, cuts=1, cut_at=50_000) as srv:
        with fast_fetcher(retries=0) as f, pytest.raises(DropRequestAttack):
            f.download_to(srv.url + "/img", dest, len(IMAGE), verifier_for(IMAGE))
        part = tmp_path / "img.part"
        kept = part.stat().st_size
        assert 0 < kept <= 50_000
        assert not dest.exists()
        with fast_fetcher(retries=0) as f:  # a new cycle, a new verifier
            f.download_to(srv.url + "/img", dest, len(IMAGE), verifier_for(IMAGE))
        ranges = srv.httpd.ranges  # type: ignore[attr-defined]
    assert ranges == [None, f"bytes={kept}-"]
    assert dest.read_bytes() == IMAGE
    assert not part.exists()


def test_resumed_part_with_corrupt_bytes_fails_the_hash(tmp_path: Path) -> None:
    """The part is re-hashed, so bytes altered on disk between runs are caught."""
    dest = tmp_path / "img"
    part = tmp_path / "img.part"
    part.write_bytes(b"\xff" * 1000 + IMAGE[1000:40_000])
    with resumable(IMAGE, cuts=0, cut_at=0) as srv, fast_fetcher() as f:
        with pytest.raises(BadHash):
            f.download_to(srv.url + "/img", dest, len(IMAGE), verifier_for(IMAGE))
        assert srv.httpd.ranges == ["bytes=40000-"]  # type: ignore[attr-defined]
    assert not dest.exists()
    assert not part.exists()  # the next attempt starts clean


def test_server_ignoring_range_restarts_from_zero(tmp_path: Path) -> None:
    dest = tmp_path / "img"
    (tmp_path / "img.part").write_bytes(IMAGE[:10_000])
    with resumable(IMAGE, cuts=0, cut_at=0, honour_range=False) as srv, fast_fetcher() as f:
        f.download_to(srv.url + "/img", dest, len(IMAGE), verifier_for(IMAGE))
    assert dest.read_bytes() == IMAGE


def test_complete_part_from_an_earlier_run_needs_no_request(tmp_path: Path) -> None:
    dest = tmp_path / "img"
    (tmp_path / "img.part").write_bytes(IMAGE)
    with resumable(IMAGE, cuts=0, cut_at=0) as srv, fast_fetcher() as f:
        f.download_to(srv.url + "/img", dest, len(IMAGE), verifier_for(IMAGE))
        assert srv.requests == []
    assert dest.read_bytes() == IMAGE


def test_empty_image_needs_no_request(static_server: Server, tmp_path: Path) -> None:
    with fast_fetcher() as f:
        f.download_to(static_server.url + "/empty", tmp_path / "empty", 0, verifier_for(b""))
    assert (tmp_path / "empty").read_bytes() == b""
    assert static_server.requests == []


def test_part_longer_than_the_image_is_discarded(tmp_path: Path) -> None:
    dest = tmp_path / "img"
    (tmp_path / "img.part").write_bytes(IMAGE + b"junk")
    with resumable(IMAGE, cuts=0, cut_at=0) as srv, fast_fetcher() as f:
        f.download_to(srv.url + "/img", dest, len(IMAGE), verifier_for(IMAGE))
        assert srv.httpd.ranges == [None]  # type: ignore[attr-defined]
    assert dest.read_bytes() == IMAGE


def test_no_resume_starts_over(tmp_path: Path) -> None:
    dest = tmp_path / "img"
    (tmp_path / "img.part").write_bytes(IMAGE[:10_000])
    with resumable(IMAGE, cuts=0, cut_at=0) as srv, fast_fetcher() as f:
        f.download_to(srv.url + "/img", dest, len(IMAGE), verifier_for(IMAGE), resume=False)
        assert srv.httpd.ranges == [None]  # type: ignore[attr-defined]
    assert dest.read_bytes() == IMAGE


def test_hash_mismatch_renames_nothing_into_place(static_server: Server, tmp_path: Path) -> None:
    evil = bytearray(IMAGE)
    evil[5000] ^= 1
    (static_server.root / "img").write_bytes(bytes(evil))
    dest = tmp_path / "img"
    dest_before = b"previous image"
    dest.write_bytes(dest_before)
    with fast_fetcher() as f, pytest.raises(BadHash):
        f.download_to(static_server.url + "/img", dest, len(IMAGE), verifier_for(IMAGE))
    assert dest.read_bytes() == dest_before
    assert not (tmp_path / "img.part").exists()


def test_image_longer_than_its_length_is_endless_data(tmp_path: Path) -> None:
    dest = tmp_path / "img"
    with serve(EndlessHandler, mode="close") as srv, fast_fetcher() as f:
        with pytest.raises(EndlessDataAttack):
            f.download_to(srv.url + "/img", dest, len(IMAGE), verifier_for(IMAGE))
        assert len(srv.requests) == 1
    assert not dest.exists()
    assert not (tmp_path / "img.part").exists()


def test_image_content_length_over_its_length_is_refused_before_the_body(
    static_server: Server,
    tmp_path: Path,
) -> None:
    (static_server.root / "img").write_bytes(IMAGE + b"more")
    dest = tmp_path / "img"
    with fast_fetcher() as f, pytest.raises(EndlessDataAttack, match="announced"):
        f.download_to(static_server.url + "/img", dest, len(IMAGE), verifier_for(IMAGE))
    assert not dest.exists()
    assert not (tmp_path / "img.part").exists()


def test_image_shorter_than_its_length_is_bad_length(static_server: Server, tmp_path: Path) -> None:
    """A complete answer that is too short is the wrong file: refused at once, not retried,
    and no part kept (an interrupted transfer is what keeps a part)."""
    from uptane.errors import BadLength

    (static_server.root / "img").write_bytes(IMAGE[:-10])
    with fast_fetcher(retries=3) as f, pytest.raises(BadLength):
        f.download_to(static_server.url + "/img", tmp_path / "img", len(IMAGE), verifier_for(IMAGE))
    assert static_server.requests == ["/img"]
    assert list(tmp_path.iterdir()) == [static_server.root]


def test_image_404_is_a_fetch_error(static_server: Server, tmp_path: Path) -> None:
    with fast_fetcher() as f, pytest.raises(FetchError, match="404"):
        f.download_to(static_server.url + "/nope", tmp_path / "img", 10, None)


def test_download_without_verifier_caps_at_length(static_server: Server, tmp_path: Path) -> None:
    (static_server.root / "img").write_bytes(b"hello")
    with fast_fetcher() as f:
        f.download_to(static_server.url + "/img", tmp_path / "img", 100)
    assert (tmp_path / "img").read_bytes() == b"hello"


def test_free_space_is_checked_before_downloading(static_server: Server, tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    limits = LIMITS.replace(image_bytes=free * 4 + 10)
    target = TargetFile(path="huge", length=free + 1, hashes={"sha256": "00" * 32})
    with Fetcher(limits, retries=0) as f, pytest.raises(InsufficientSpace):
        f.download_to(
            static_server.url + "/huge",
            tmp_path / "huge",
            free + 1,
            ImageVerifier(target, limits),
        )
    assert static_server.requests == []


def test_length_over_the_image_cap_is_refused(static_server: Server, tmp_path: Path) -> None:
    small = LIMITS.replace(image_bytes=1000)
    with Fetcher(small) as f, pytest.raises(EndlessDataAttack):
        f.download_to(static_server.url + "/img", tmp_path / "img", 1001)
    assert static_server.requests == []


# --- metadata source and URLs --------------------------------------------------------------


def test_metadata_source_urls_and_role_name_encoding(static_server: Server) -> None:
    md = static_server.root / "metadata"
    md.mkdir()
    (md / "3.snapshot.json").write_bytes(b"snap")
    (md / "timestamp.json").write_bytes(b"ts")
    (md / "..%2Fx.json").write_bytes(b"evil-name role")
    with fast_fetcher() as f:
        src = HttpMetadataSource(f, static_server.url + "/metadata")
        assert src.fetch_metadata("snapshot", 3, 100) == b"snap"
        assert src.fetch_metadata("timestamp", None, 100) == b"ts"
        assert src.fetch_metadata("../x", None, 100) == b"evil-name role"
        assert src.fetch_metadata("a/b", 2, 100) is None
        with pytest.raises(EndlessDataAttack) as exc:
            src.fetch_metadata("timestamp", None, 1)
    assert exc.value.role == "timestamp"
    assert static_server.requests == [
        "/metadata/3.snapshot.json",
        "/metadata/timestamp.json",
        "/metadata/..%2Fx.json",
        "/metadata/2.a%2Fb.json",
        "/metadata/timestamp.json",
    ]


def test_target_urls() -> None:
    h = hashlib.sha256(b"x").hexdigest()
    assert target_url("http://h/t", "a/b.bin") == "http://h/t/a/b.bin"
    assert target_url("http://h/t/", "a/b.bin", h) == f"http://h/t/a/{h}.b.bin"
    assert target_url("http://h/t/", "file 1", None) == "http://h/t/file%201"


# --- TLS ---------------------------------------------------------------------------------------


def _tls_files(tmp_path: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    import ipaddress
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("test CA"))
        .issuer_name(name("test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    out = {"ca": tmp_path / "ca.pem"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who, usage in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(who))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        out[f"{who}_cert"] = tmp_path / f"{who}.pem"
        out[f"{who}_key"] = tmp_path / f"{who}.key"
        out[f"{who}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out[f"{who}_key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return out


def _server_context(files: dict[str, Path], *, client_auth: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(files["server_cert"], files["server_key"])
    if client_auth:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(files["ca"])
    return ctx


def test_https_with_a_private_ca(tmp_path: Path) -> None:
    files = _tls_files(tmp_path)
    with serve(
        StatusHandler, tls=_server_context(files, client_auth=False), statuses=[], body=b"tls"
    ) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        with fast_fetcher(ca_certs=files["ca"]) as f:
            assert f.fetch_bytes(srv.url + "/x", 100) == b"tls"
        with fast_fetcher(retries=3) as f, pytest.raises(FetchError, match="TLS"):
            f.fetch_bytes(srv.url + "/x", 100)  # the system store does not know this CA
        assert srv.requests == ["/x"]  # the unverified attempt never got to send a request


def test_https_with_a_client_certificate(tmp_path: Path) -> None:
    files = _tls_files(tmp_path)
    ctx = _server_context(files, client_auth=True)
    with serve(StatusHandler, tls=ctx, statuses=[], body=b"mutual") as srv:
        f = fast_fetcher(
            ca_certs=files["ca"], cert_file=files["client_cert"], key_file=files["client_key"]
        )
        with f:
            assert f.fetch_bytes(srv.url + "/x", 100) == b"mutual"


def test_header_deadlines_share_one_thread_and_disarmed_ones_never_fire() -> None:
    """The header deadline of every request runs on one watchdog thread (no thread per
    request): an armed abort fires after its timeout, a disarmed one never does, and
    disarmed entries do not pile up."""
    dog = _Watchdog()
    fired: list[str] = []
    for _ in range(1000):
        dog.disarm(dog.arm(0.05, lambda: fired.append("disarmed")))
    assert len(dog.heap) == 1
    done = threading.Event()
    dog.arm(0.05, lambda: (fired.append("armed"), done.set()))
    assert done.wait(5)
    threads = [t for t in threading.enumerate() if t.name == "fetcher-header-deadlines"]
    time.sleep(0.1)
    assert fired == ["armed"]
    assert dog.thread in threads


class HugeRangeHandler(QuietHandler):
    """Answers a Range request with 206 and a Content-Range whose numbers run to
    thousands of digits (past Python's int-from-str limit)."""

    def do_GET(self) -> None:
        self.record()
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {'1' * 5000}-{'2' * 5000}/*")
        self.send_header("Content-Length", "10")
        self.end_headers()
        self.wfile.write(b"\0" * 10)


def test_content_range_with_endless_digits_is_a_fetch_error(tmp_path: Path) -> None:
    (tmp_path / "img.part").write_bytes(IMAGE[:10_000])
    with (
        serve(HugeRangeHandler) as srv,
        fast_fetcher(retries=0) as f,
        pytest.raises(FetchError, match="Content-Range"),  # never a bare ValueError
    ):
        f.download_to(srv.url + "/img", tmp_path / "img", len(IMAGE), verifier_for(IMAGE))
    assert not (tmp_path / "img").exists()
