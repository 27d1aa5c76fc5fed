"""The whole system as real processes, for `make demo` and the end-to-end tests.

:class:`Stack` builds a fresh OEM setup and a vehicle in one directory and runs every part
as it runs in production:

- the Image repository and the Director: ``uptane-image-repo serve`` and
  ``uptane-director serve`` (uvicorn on 127.0.0.1), each in its own process, the
  Director's inventory in SQLite;
- the OEM's time server: ``uptane-time-server serve`` (Roughtime, draft 11, UDP on
  127.0.0.1) in its own process; every ECU takes only time it signed (docs/secure-time.md);
- a Secondary on a serial link: ``uptane-secondary run`` in its own process, on one end of
  a pty "wire" (:class:`PtyWire`) whose other end the Primary opens;
- a Secondary on CAN (ISO-TP): across processes on python-can ``udp_multicast`` when this
  process runs in a private network namespace (see :func:`enter_private_netns`), otherwise
  on python-can's ``virtual`` bus inside the vehicle process (:mod:`demo.vehicle`);
- the Primary: :mod:`demo.vehicle`, one update cycle per process run, reaching the Image
  repository through :class:`Mitm`, a proxy the demo can turn hostile.

Children start in their own process groups (with a parent-death signal), log to files in
the work directory, and :meth:`Stack.close` stops every one of them. Nothing here verifies
anything: the parts do, with :mod:`uptane`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import io
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tty
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

VIN = "VIN-DEMO-0001"
PRIMARY = ("gateway-1", "gateway-v1")
#: the Secondaries: (ECU serial, hardware id), one on the serial wire, one on CAN
SERIAL_ECU = ("brake-1", "brake-v2")
CAN_ECU = ("door-1", "door-v1")
CAN_GROUP = "239.74.163.7"  # udp_multicast channel, only ever inside a private netns
NETNS_ENV = "UPTANE_DEMO_NETNS"

#: a step line from the Primary that reports transfer progress (``Primary._progress``)
PROGRESS = re.compile(r"^\s*(download|send) (\S+)(?: to (\S+))?:\s*(\d+)% \((\d+)/(\d+) bytes\)")


#: the most bytes a capture of the serial line or of a proxy keeps (an eavesdropper's view)
CAPTURE_CAP = 64 * 1024 * 1024

#: no proxy from the environment: every request here goes to 127.0.0.1
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class StackError(RuntimeError):
    """A part did not start or answer; the message names its log file."""


# --- private network namespace (CAN across processes) ---------------------------------------


def _run_quiet(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def netns_command() -> list[str] | None:
    """The ``unshare`` prefix that gives a private network namespace here, or None."""
    try:
        import msgpack  # noqa: F401  (python-can's udp_multicast needs it)
    except ImportError:
        return None
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return None
    probe = " && ".join(" ".join(c) for c in _LOOPBACK)
    for prefix in (["unshare", "-n"], ["unshare", "-rn"]):
        if _run_quiet([*prefix, "sh", "-c", probe]):
            return prefix
    return None


#: what makes a fresh namespace's loopback carry 127.0.0.1 and multicast
_LOOPBACK = (
    ["ip", "link", "set", "lo", "up"],
    ["ip", "link", "set", "lo", "multicast", "on"],
    ["ip", "route", "add", "224.0.0.0/4", "dev", "lo"],
)


def setup_netns_loopback() -> bool:
    """Inside a fresh namespace: loopback up, with multicast routed on it."""
    return all(_run_quiet(c) for c in _LOOPBACK)


def in_private_netns() -> bool:
    """Whether this process was re-executed into its own network namespace."""
    return os.environ.get(NETNS_ENV) == "1"


def enter_private_netns(argv: list[str]) -> None:
    """Re-execute ``argv`` in a private network namespace if the machine allows it
    (``os.execvp``: does not return); returns when it does not, or already inside."""
    if os.environ.get(NETNS_ENV) is not None:
        return
    prefix = netns_command()
    if prefix is None:
        os.environ[NETNS_ENV] = "0"
        return
    env = dict(os.environ, **{NETNS_ENV: "1"})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(prefix[0], [*prefix, *argv], env)


# --- processes ---------------------------------------------------------------------------


def _parent_death_signal() -> None:
    """In the child: be sent SIGTERM when the parent dies, and lead a process group."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    """A process this stack started."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


class Processes:
    """Every child process, each in its own process group, logging to ``logdir/NAME.log``."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.children: list[Child] = []
        logdir.mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        path = os.environ.get("PYTHONPATH")
        return dict(
            os.environ,
            PYTHONPATH=str(ROOT) + (os.pathsep + path if path else ""),
            PYTHONUNBUFFERED="1",
        )

    def start(self, name: str, args: list[str], *, pipe: bool = False) -> Child:
        """``python -m ARGS`` as ``name``; stdout to a pipe (``pipe``) or to the log."""
        log = self.logdir / f"{name}.log"
        with open(log, "ab") as f:
            f.write(f"--- {' '.join(args)}\n".encode())
            f.flush()
            proc = subprocess.Popen(
                [sys.executable, "-m", *args],
                stdout=subprocess.PIPE if pipe else f,
                stderr=f,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                env=self.env(),
                start_new_session=True,
                preexec_fn=_parent_death_signal,
            )
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    @staticmethod
    def signal(child: Child, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.proc.pid, sig)

    def stop(self, child: Child, timeout: float = 5.0) -> None:
        """SIGTERM the child's group, then SIGKILL what is left after ``timeout``."""
        if child.alive:
            self.signal(child, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(timeout)
        self.signal(child, signal.SIGKILL)  # also any grandchild left in the group
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(5)
        if child.proc.stdout is not None:
            child.proc.stdout.close()

    def stop_all(self) -> None:
        for child in reversed(self.children):
            self.stop(child)
        self.children.clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, ok: Callable[[], bool], child: Child | None, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ok():
            return
        if child is not None and not child.alive:
            raise StackError(f"{what}: the process exited (log: {child.log})")
        time.sleep(0.05)
    where = f" (log: {child.log})" if child is not None else ""
    raise StackError(f"{what}: not ready after {timeout:.0f}s{where}")


# --- the serial wire ------------------------------------------------------------------------


class PtyWire:
    """A serial cable made of two pty pairs: whatever one end's device receives goes out of
    the other's (``socat pty pty`` in a thread). Each end is a path pyserial opens; the
    wire outlives the processes at its ends, so a Primary can be killed and reopen it.
    Bytes that a full end cannot take are dropped, as on a real line; the link protocol
    retransmits. ``rate`` (bytes per second, both directions together) paces the wire
    like a real line; None relays as fast as the ptys go."""

    def __init__(self, rate: float | None = None) -> None:
        self.rate = rate
        #: when set (a bytearray), every byte relayed either way is appended: what an
        #: eavesdropper on the line sees (issue 17); capped at ``CAPTURE_CAP`` bytes
        self.capture: bytearray | None = None
        self._fds: list[int] = []
        pairs = [os.openpty(), os.openpty()]
        self.masters = [m for m, _ in pairs]
        for m, s in pairs:
            tty.setraw(s)
            os.set_blocking(m, False)
            self._fds += [m, s]  # the slaves stay open: a peer's close is no hang-up
        self.ends = [os.ttyname(s) for _, s in pairs]
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._relay, name="pty-wire", daemon=True)
        self.thread.start()

    @property
    def primary_end(self) -> str:
        return self.ends[0]

    @property
    def secondary_end(self) -> str:
        return self.ends[1]

    def _relay(self) -> None:
        a, b = self.masters
        other = {a: b, b: a}
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([a, b], [], [], 0.1)
            except (OSError, ValueError):
                return
            for fd in ready:
                try:
                    data = os.read(fd, 65536 if self.rate is None else 512)
                except BlockingIOError:
                    continue
                except OSError as e:
                    if e.errno == errno.EIO:
                        time.sleep(0.01)
                        continue
                    return
                with contextlib.suppress(BlockingIOError, OSError):
                    os.write(other[fd], data)
                cap = self.capture
                if cap is not None and len(cap) < CAPTURE_CAP:
                    cap += data
                if self.rate:
                    time.sleep(len(data) / self.rate)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=2)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)


# --- the man in the middle ------------------------------------------------------------------


def swap(data: bytes) -> bytes:
    """Same length, other bytes: what a compromised mirror serves instead of an image."""
    return bytes(x ^ 0x5A for x in data)


class _MitmHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        srv: Any = self.server
        n = int(self.headers.get("Content-Length", "0") or 0)
        body = self.rfile.read(min(n, 16 << 20))
        ctype = self.headers.get("Content-Type", "application/octet-stream")
        self._relay(
            urllib.request.Request(
                srv.upstream + self.path, data=body, method="POST", headers={"Content-Type": ctype}
            ),
            posted=body,
        )

    def do_GET(self) -> None:
        srv: Any = self.server
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("range", "accept")}
        self._relay(urllib.request.Request(srv.upstream + self.path, headers=headers))

    def _relay(self, req: urllib.request.Request, posted: bytes | None = None) -> None:
        srv: Any = self.server
        try:
            with _OPENER.open(req, timeout=30) as r:
                status, body, rh = r.status, r.read(), r.headers
        except urllib.error.HTTPError as e:
            status, body, rh = e.code, e.read(), e.headers
        except OSError:
            self.send_response(502)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if posted is not None:
            srv.posts.append((self.path, status, posted))
        if status in (200, 206) and self.path.startswith("/targets/") and srv.swap_images:
            body = swap(body)
            srv.swapped.append(self.path)
        if srv.capture is not None and len(srv.capture) < CAPTURE_CAP:
            srv.capture += body  # what an eavesdropper on this connection reads
        self.send_response(status)
        for k in ("Content-Type", "Content-Range", "Accept-Ranges"):
            if rh.get(k):
                self.send_header(k, rh[k])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(body)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class Mitm:
    """An HTTP proxy on 127.0.0.1 in front of ``upstream``: faithful until ``swap_images``
    is set, then every image it relays has other bytes of the same length. It keeps what
    was POSTed through it (``posts``: path, status, body), e.g. vehicle version manifests."""

    def __init__(self, upstream: str) -> None:
        self.httpd = _QuietServer(("127.0.0.1", 0), _MitmHandler)
        h: Any = self.httpd
        h.upstream = upstream
        h.swap_images = False
        h.swapped = []
        h.posts = []
        h.capture = None
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def swap_images(self) -> bool:
        return bool(self.httpd.swap_images)  # type: ignore[attr-defined]

    @swap_images.setter
    def swap_images(self, value: bool) -> None:
        self.httpd.swap_images = value  # type: ignore[attr-defined]

    @property
    def swapped(self) -> list[str]:
        return self.httpd.swapped  # type: ignore[attr-defined]

    @property
    def posts(self) -> list[tuple[str, int, bytes]]:
        return self.httpd.posts  # type: ignore[attr-defined]

    def start_capture(self) -> bytearray:
        """From now on, keep every response body relayed (what the vehicle downloads)."""
        self.httpd.capture = bytearray()  # type: ignore[attr-defined]
        return self.httpd.capture  # type: ignore[attr-defined]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


# --- HTTP helpers -----------------------------------------------------------------------------


def http_json(
    method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 30
) -> Any:
    """One JSON request; raises StackError with the server's answer on a non-2xx."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raise StackError(f"{method} {url}: HTTP {e.code} {e.read()[:300]!r}") from None


def _healthy(url: str) -> Callable[[], bool]:
    def ok() -> bool:
        try:
            with _OPENER.open(url + "/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    return ok


def _call_cli(main: Callable[[list[str]], int], argv: list[str]) -> str:
    """Run a console script's ``main`` in this process; its stdout, or StackError."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    if rc != 0:
        raise StackError(f"{argv[0]}: exit {rc}: {err.getvalue().strip()}")
    return out.getvalue()


def firmware(name: str, version: str, size: int) -> bytes:
    """Deterministic stand-in firmware: a header naming it, then pseudo-random bytes."""
    import hashlib

    head = f"{name} firmware {version}\n".encode()
    out = bytearray(head)
    block = hashlib.sha256(head).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


# --- the stack --------------------------------------------------------------------------------


@dataclass
class Image:
    """A firmware image as released: target path, bytes, hardware id, release counter."""

    path: str
    data: bytes
    hardware_id: str
    release_counter: int


@dataclass
class Cycle:
    """One run of the Primary process: its exit code and step lines."""

    returncode: int | None
    lines: list[str] = field(default_factory=list)
    killed: bool = False

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class Stack:
    """A fresh OEM backend and vehicle in ``work``; see the module doc.

    ``can`` is ``"udp"`` (the CAN Secondary in its own process: only inside a private
    network namespace) or ``"virtual"`` (in the vehicle process), default by
    :func:`in_private_netns`. ``serial_rate`` paces the serial wire (bytes per second).
    """

    def __init__(
        self, work: Path, *, can: str | None = None, serial_rate: float | None = None
    ) -> None:
        self.work = work
        self.serial_rate = serial_rate
        self.can = can or ("udp" if in_private_netns() else "virtual")
        if self.can not in ("udp", "virtual"):
            raise ValueError("can must be 'udp' or 'virtual'")
        self.procs = Processes(work / "logs")
        self.image_dir = work / "oem" / "image-repo"
        self.director_dir = work / "oem" / "director"
        self.vehicle_dir = work / "vehicle"
        self.image_url = ""
        self.director_url = ""
        self.image_token = ""
        self.director_token = ""
        self.wire: PtyWire | None = None
        self.image_mitm: Mitm | None = None
        self.director_mitm: Mitm | None = None
        self.image_server: Child | None = None
        self.director_server: Child | None = None
        self.secondaries: dict[str, Child] = {}
        self.time_server: Child | None = None
        self.time_address = ""  # HOST:PORT of the time server once it serves
        self.time_dir = work / "oem" / "time"
        self.can_channel = CAN_GROUP if self.can == "udp" else f"uptane-demo-{os.getpid()}"
        self.targets_version = 1
        #: each Secondary's encryption public key (JSON), as provisioning printed it
        self.encryption_keys: dict[str, Any] = {}

    # --- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process and thread this stack started."""
        try:
            self.procs.stop_all()
        finally:
            for m in (self.image_mitm, self.director_mitm):
                if m is not None:
                    m.close()
            self.image_mitm = self.director_mitm = None
            if self.wire is not None:
                self.wire.close()
                self.wire = None

    def logs(self) -> list[Path]:
        return sorted(self.procs.logdir.glob("*.log"))

    # --- the OEM backend ------------------------------------------------------------------

    def create_image_repo(self) -> None:
        """``uptane-image-repo init``: offline root and targets keys outside the served
        directory, online snapshot and timestamp keys inside it."""
        from director.image_cli import main

        out = _call_cli(main, ["init", str(self.image_dir)])
        self.image_token = out.strip().splitlines()[-1]

    def _serve(self, name: str, what: str, args: list[str]) -> tuple[Child, str]:
        """Start an HTTP service on a free port and wait for its /healthz; a port taken by
        someone else in the meantime (the service exits) is retried with another."""
        for attempt in range(3):
            port = free_port()
            child = self.procs.start(name, [*args, "--port", str(port)])
            url = f"http://127.0.0.1:{port}"
            try:
                wait_until(what, _healthy(url), child, 60)
                time.sleep(0.2)  # a failed bind exits at once: the answer was not ours
                if child.alive:
                    return child, url
            except StackError:
                if child.alive or attempt == 2:
                    raise
            self.procs.stop(child)
        raise StackError(f"{what}: no free port")

    def start_image_repo(self) -> None:
        """``uptane-image-repo serve`` on 127.0.0.1, in its own process."""
        args = ["director.image_cli", "serve", str(self.image_dir), "--refresh-interval", "0.3"]
        self.image_server, self.image_url = self._serve("image-repo", "Image repository", args)
        self.image_mitm = Mitm(self.image_url)

    def release(self, images: list[Image], *, how: str = "upload") -> int:
        """Release ``images``, their targets signed with the offline targets key, which
        never reaches the service. Returns the new targets version, once served.

        - ``upload``: ``uptane-image-repo supplier-release`` for the top-level targets
          role: each image goes up to the running service (``PUT /api/images``), then the
          next targets version, signed on the release engineer's side in JSON and DER, is
          uploaded (``PUT /api/metadata/targets.*``) with the admin token;
        - ``offline-dir``: ``add-target`` each image into the repository directory, then
          ``sign`` (the documented offline flow); the service picks it up on its refresh.
        """
        if how == "upload":
            return self._release_upload(images)
        if how != "offline-dir":
            raise ValueError("how must be 'upload' or 'offline-dir'")
        return self._release_offline_dir(images)

    @property
    def offline_keys(self) -> Path:
        return self.image_dir.with_name(self.image_dir.name + ".offline-keys")

    def _release_upload(self, images: list[Image]) -> int:
        from director.image_cli import main

        staged = self.work / "oem" / "release"
        staged.mkdir(parents=True, exist_ok=True)
        token = staged / "upload-token"
        token.write_text(self.image_token)
        token.chmod(0o600)
        version = 0
        for img in images:
            f = staged / img.path.replace("/", "_")
            f.write_bytes(img.data)
            out = _call_cli(
                main,
                [
                    "supplier-release",
                    self.image_url,
                    str(f),
                    "--role",
                    "targets",
                    "--key",
                    str(self.offline_keys / "targets.pem"),
                    "--token-file",
                    str(token),
                    "--path",
                    img.path,
                    "--hardware-id",
                    img.hardware_id,
                    "--release-counter",
                    str(img.release_counter),
                ],
            )
            version = int(re.search(r"version (\d+)", out).group(1))  # type: ignore[union-attr]
        self._wait_published(version)
        return version

    def _release_offline_dir(self, images: list[Image]) -> int:
        from director.image_cli import main

        staged = self.work / "oem" / "release"
        staged.mkdir(parents=True, exist_ok=True)
        for img in images:
            f = staged / img.path.replace("/", "_")
            f.write_bytes(img.data)
            _call_cli(
                main,
                [
                    "add-target",
                    str(self.image_dir),
                    str(f),
                    "--path",
                    img.path,
                    "--hardware-id",
                    img.hardware_id,
                    "--release-counter",
                    str(img.release_counter),
                ],
            )
        out = _call_cli(main, ["sign", str(self.image_dir)])
        version = int(re.search(r"version (\d+)", out).group(1))  # type: ignore[union-attr]
        self._wait_published(version)
        return version

    def _wait_published(self, version: int) -> None:
        """Until clients download targets ``version``: the served timestamp, once the
        service has re-read the repository (its status can show it a moment earlier)."""

        def published() -> bool:
            st = http_json("GET", self.image_url + "/api/status", token=self.image_token)
            ts = http_json("GET", self.image_url + "/metadata/timestamp.json")
            return int(st["roles"]["targets"]) >= version and int(ts["signed"]["version"]) >= int(
                st["timestamp"]
            )

        wait_until("the signed release", published, self.image_server, 30)
        self.targets_version = version

    # --- the time server ------------------------------------------------------------------

    @property
    def time_key(self) -> Path:
        """The time server's long-term public key (what ECUs are provisioned with)."""
        return self.time_dir / "offline" / "longterm.pub"

    def create_time_server(self) -> None:
        """``uptane-time-server init``: the long-term key offline, a delegation online."""
        from timeserver.cli import main

        d = self.time_dir
        _call_cli(main, ["init", "--keys", str(d / "offline"), "--online", str(d / "online")])

    def start_time_server(self) -> None:
        """``uptane-time-server serve`` on a free UDP port of 127.0.0.1, in its own process;
        waits for its banner (which names the address)."""
        args = ["timeserver", "serve", "--online", str(self.time_dir / "online"), "--port", "0"]
        child = self.procs.start("time-server", args)
        found: list[str] = []

        def serving() -> bool:
            m = re.search(r"on udp ([0-9.]+:\d+);", child.log.read_text(errors="replace"))
            if m:
                found.append(m.group(1))
            return bool(m)

        wait_until("the time server", serving, child, 60)
        self.time_server, self.time_address = child, found[0]

    def create_director(self) -> None:
        """``uptane-director init``: root key offline, online keys, SQLite inventory, and
        the Image repository's root pinned."""
        from director.director_cli import main

        out = _call_cli(
            main,
            [
                "init",
                str(self.director_dir),
                "--image-repo",
                self.image_url,
                "--image-root",
                str(self.image_dir / "metadata" / "1.root.json"),
            ],
        )
        self.director_token = out.strip().splitlines()[-1]

    def start_director(self) -> None:
        """``uptane-director serve`` on 127.0.0.1, in its own process."""
        args = ["director.director_cli", "serve", str(self.director_dir), "--refresh-interval", "5"]
        self.director_server, self.director_url = self._serve("director", "Director", args)
        self.director_mitm = Mitm(self.director_url)

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        """The Director's admin API, with the bearer token."""
        return http_json(method, self.director_url + path, body, token=self.director_token)

    # --- the vehicle --------------------------------------------------------------------------

    def director_root(self, ext: str) -> Path:
        return self.director_dir / "root" / f"1.root.{ext}"

    def provision_vehicle(self) -> dict[str, Any]:
        """Provision both Secondaries (``uptane-secondary provision``) and the Primary
        (``uptane-primary provision``), then register the vehicle through the admin API.
        Returns each ECU's registered public key."""
        from primary.cli import provision as provision_primary
        from primary.config import load_config
        from secondary.cli import provision as provision_secondary
        from secondary.config import LinkConfig

        self.wire = PtyWire(self.serial_rate)
        keys_dir = self.vehicle_dir / "primary" / "keys"
        keys_dir.mkdir(parents=True, exist_ok=True)
        links = {
            SERIAL_ECU[0]: LinkConfig(type="serial", port=self.wire.secondary_end),
            CAN_ECU[0]: LinkConfig(
                type="can",
                interface="udp_multicast" if self.can == "udp" else "virtual",
                channel=self.can_channel,
                rxid=0x7E0,
                txid=0x7E8,
            ),
        }
        keys: dict[str, Any] = {}
        time_keys = {"oem-time": self.time_key.read_bytes()} if self.time_address else None
        for serial, hw in (SERIAL_ECU, CAN_ECU):
            public = provision_secondary(
                self.ecu_dir(serial),
                ecu_serial=serial,
                hardware_id=hw,
                director_root=self.director_root("der").read_bytes(),
                vehicle_id=VIN,
                slot_size=256 * 1024,
                link=links[serial],
                force=True,
                time_keys=time_keys,
            )
            keys[serial] = public["public_key"]
            # its encryption key (issue 17), registered with the vehicle
            self.encryption_keys[serial] = public["encryption_key"]
            (keys_dir / f"{serial}.pub.json").write_text(json.dumps(public["public_key"]))
            # the link key goes to the Primary (never to the Director)
            shutil.copyfile(public["link_key_file"], keys_dir / f"{serial}.link")
            (keys_dir / f"{serial}.link").chmod(0o600)
        if self.time_address:
            shutil.copyfile(self.time_key, keys_dir / "time-1.pub")
        cfg_path = self.primary_config_path
        cfg_path.write_text(self._primary_toml())
        key = provision_primary(
            load_config(cfg_path),
            self.director_root("json").read_bytes(),
            (self.image_dir / "metadata" / "1.root.json").read_bytes(),
            force=True,
        )
        keys[PRIMARY[0]] = key.key.to_dict()
        self._register(keys)
        return keys

    def _register(self, keys: dict[str, Any]) -> None:
        """The vehicle through the admin API: each ECU's key, the Secondaries' encryption
        keys too."""
        ecus: list[dict[str, Any]] = [
            {
                "serial": PRIMARY[0],
                "hardware_id": PRIMARY[1],
                "public_key": keys[PRIMARY[0]],
                "primary": True,
            }
        ]
        for serial, hw in (SERIAL_ECU, CAN_ECU):
            ecus.append(
                {
                    "serial": serial,
                    "hardware_id": hw,
                    "public_key": keys[serial],
                    "primary": False,
                    "encryption_key": self.encryption_keys[serial],
                }
            )
        self.admin("POST", "/api/vehicles", {"vin": VIN, "ecus": ecus})

    def ecu_dir(self, serial: str) -> Path:
        return self.vehicle_dir / "ecus" / serial

    @property
    def primary_config_path(self) -> Path:
        return self.vehicle_dir / "primary" / "primary.toml"

    def _primary_toml(self) -> str:
        assert self.wire is not None
        assert self.image_mitm is not None and self.director_mitm is not None
        can_if = "udp_multicast" if self.can == "udp" else "virtual"
        return f"""# the demo vehicle's Primary (docs/primary.md)
[vehicle]
vin = "{VIN}"

[primary]
ecu_serial = "{PRIMARY[0]}"
hardware_id = "{PRIMARY[1]}"
key_file = "keys/primary.pem"

[director]
url = "{self.director_mitm.url}"

[image_repository]
url = "{self.image_mitm.url}"

[storage]
dir = "state"
poll_interval = 1

[fetcher]
connect_timeout = 5.0
read_timeout = 15.0
retries = 2
backoff = 0.2

[[secondaries]]
serial = "{SERIAL_ECU[0]}"
hardware_id = "{SERIAL_ECU[1]}"
public_key = "keys/{SERIAL_ECU[0]}.pub.json"
mode = "partial"
encoding = "der"
link = {{ type = "serial", port = "{self.wire.primary_end}", baudrate = 115200 }}
link_key = "keys/{SERIAL_ECU[0]}.link"
timeout = 2.0
retries = 2

[[secondaries]]
serial = "{CAN_ECU[0]}"
hardware_id = "{CAN_ECU[1]}"
public_key = "keys/{CAN_ECU[0]}.pub.json"
mode = "partial"
encoding = "der"
link = {{ type = "can", channel = "{self.can_channel}", interface = "{can_if}", \
tx_id = 0x7E0, rx_id = 0x7E8 }}
link_key = "keys/{CAN_ECU[0]}.link"
timeout = 2.0
retries = 2
{self._time_toml()}"""

    def _time_toml(self) -> str:
        """The Primary's ``[time]`` table: the OEM's time server and its key."""
        if not self.time_address:
            return ""
        return f"""
[time]
servers = [{{ address = "{self.time_address}", key = "keys/time-1.pub", name = "oem-time" }}]
timeout = 1.0
retries = 2
"""

    def start_secondaries(self) -> None:
        """``uptane-secondary run`` for the serial ECU (and the CAN ECU on udp_multicast),
        each in its own process; waits for each to say it is ready."""
        ecus = [SERIAL_ECU[0]] + ([CAN_ECU[0]] if self.can == "udp" else [])
        for serial in ecus:
            self.start_secondary(serial)

    def start_secondary(self, serial: str) -> Child:
        child = self.procs.start(
            f"secondary-{serial}",
            ["secondary", "run", "--config", str(self.ecu_dir(serial) / "secondary.toml")],
        )
        self.secondaries[serial] = child

        def ready() -> bool:
            return f"ready {serial}" in child.log.read_text(errors="replace")

        wait_until(f"Secondary {serial}", ready, child, 60)
        return child

    def assign(self, items: dict[str, str], *, encrypt: Collection[str] = ()) -> Any:
        """One bundle through the admin API: ECU serial -> target path; the ECUs in
        ``encrypt`` get their image encrypted to their own key (issue 17)."""
        body = {
            "assignments": [
                {"ecu": e, "target": t, **({"encrypt": True} if e in encrypt else {})}
                for e, t in items.items()
            ]
        }
        return self.admin("POST", f"/api/vehicles/{VIN}/assignments", body)

    def release_delta(self, base: Image, new: Image) -> tuple[str, int]:
        """A supplier's delta from the released ``base`` to the released ``new`` (issue
        17): made with detools, uploaded and signed into the top-level targets with the
        offline key (as ``supplier-release``). Returns its path and size."""
        from datetime import UTC, datetime

        from director.supplier import make_delta, release
        from keystore import open_signer

        path, patch, section = make_delta(base.data, base.path, new.data, new.path)
        signer = open_signer(str(self.offline_keys / "targets.pem"))
        out = release(
            self.image_url,
            self.image_token,
            "targets",
            signer,
            path,
            patch,
            [new.hardware_id],
            new.release_counter,
            datetime.now(UTC),
            delta=section,
        )
        self._wait_published(int(out["version"]))
        return path, len(patch)

    def status(self) -> Any:
        return self.admin("GET", f"/api/vehicles/{VIN}")

    def manifests(self) -> list[tuple[int, Any]]:
        """Every vehicle version manifest the Primary posted (on its way to the Director):
        the Director's HTTP status and the decoded signed manifest."""
        from uptane.limits import Limits
        from uptane.manifest import decode_vehicle_manifest
        from uptane.metadata import DER, JSON

        assert self.director_mitm is not None
        out = []
        for path, status, body in self.director_mitm.posts:
            if path.endswith("/manifest"):
                enc = JSON if body[:1] == b"{" else DER
                out.append((status, decode_vehicle_manifest(body, Limits.primary(), enc)))
        return out

    def checked_reports(self, keys: dict[str, Any]) -> dict[str, Any]:
        """The ECU version reports of the last manifest, each checked with the public key
        that ECU was registered with (``keys``: serial -> TUF key dict); raises the core's
        error naming the attack when one does not verify."""
        from uptane.keys import Key
        from uptane.limits import Limits
        from uptane.manifest import check_report

        _status, vvm = self.manifests()[-1]
        out = {}
        for report in vvm.signed.reports:
            serial = report.signed.ecu_id
            key = Key.from_dict(keys[serial], Limits.primary())
            out[serial] = check_report(report, key, expected_ecu_id=serial)
        return out

    def director_targets(self, dest: Path, encoding: str = "der") -> Path:
        """Download this vehicle's current Director targets into ``dest`` (as
        ``targets.<encoding>``), as a bench tester would."""
        version = self.status()["metadata"]["targets"]
        url = f"{self.director_url}/vehicles/{VIN}/metadata/{version}.targets.{encoding}"
        with _OPENER.open(url, timeout=30) as r:
            data = r.read()
        dest.mkdir(parents=True, exist_ok=True)
        out = dest / f"targets.{encoding}"
        out.write_bytes(data)
        return out

    def flash_serial(
        self, args: list[str], timeout: float = 60, *, link_key: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``uptane-flash --port <the Primary's end of the serial wire> ARGS``: the bench
        tool, or anything else that speaks the link protocol in the Primary's place (only
        while no Primary process runs); with ``link_key``, given the ECU's link key (a
        workshop tool the OEM authorised, or a compromised Primary), else a stranger."""
        assert self.wire is not None
        log = self.procs.logdir / "uptane-flash.log"
        argv = [sys.executable, "-m", "hardware.bench", "--port", self.wire.primary_end]
        if link_key:  # the key the OEM gives authorised workshop tools (and the Primary)
            argv += ["--link-key", str(self.vehicle_dir / "primary" / "keys" / "brake-1.link")]
        argv += args
        with open(log, "a") as f:
            f.write(f"--- {' '.join(argv)}\n")
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env=self.procs.env(),
            stdin=subprocess.DEVNULL,
        )
        with open(log, "a") as f:
            f.write(proc.stdout + proc.stderr)
        return proc

    # --- running the Primary ---------------------------------------------------------------------

    def primary_args(self) -> list[str]:
        args = ["demo.vehicle", "--config", str(self.primary_config_path)]
        if self.can == "virtual":
            args += ["--can-secondary", str(self.ecu_dir(CAN_ECU[0]) / "secondary.toml")]
        return args

    def start_primary(self) -> Child:
        return self.procs.start("primary", self.primary_args(), pipe=True)

    def lines(self, child: Child, timeout: float) -> Iterator[str]:
        """The Primary's step lines as they come; StackError after ``timeout``."""
        assert child.proc.stdout is not None
        out = child.proc.stdout
        end = time.monotonic() + timeout
        buf = b""
        with open(child.log, "ab") as log:
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    self.procs.stop(child)
                    raise StackError(f"the Primary did not finish in {timeout:.0f}s ({child.log})")
                ready, _, _ = select.select([out], [], [], min(left, 0.2))
                if not ready:
                    continue
                chunk = os.read(out.fileno(), 65536)
                if not chunk:
                    if buf:
                        yield buf.decode(errors="replace")
                    return
                log.write(chunk)
                log.flush()
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    yield line.decode(errors="replace")

    def run_primary(
        self,
        on_line: Callable[[str], None] | None = None,
        *,
        kill_when: Callable[[str], bool] | None = None,
        timeout: float = 90,
    ) -> Cycle:
        """One update cycle in a new Primary process. With ``kill_when``, the process is
        SIGKILLed at the first line for which it returns True."""
        child = self.start_primary()
        cycle = Cycle(None)
        try:
            for line in self.lines(child, timeout):
                cycle.lines.append(line)
                if on_line is not None:
                    on_line(line)
                if kill_when is not None and not cycle.killed and kill_when(line):
                    self.procs.signal(child, signal.SIGKILL)
                    cycle.killed = True
            cycle.returncode = child.proc.wait(timeout=30)
        finally:
            self.procs.stop(child)
            with contextlib.suppress(ValueError):
                self.procs.children.remove(child)
        return cycle
