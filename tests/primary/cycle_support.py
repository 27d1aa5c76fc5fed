"""A whole vehicle and its OEM backend for the Primary's cycle tests.

- :class:`Backend`: the real Image repository service and the real Director service
  (``director/``), each run with uvicorn in a thread on 127.0.0.1, both reading a settable
  :class:`Clock`; each behind a :class:`Proxy` (a man in the middle the tests can turn
  hostile: tamper a file, drip bytes, cut a body, answer ``Range`` requests).
- :class:`Vehicle`: a provisioned Primary (TOML config through ``uptane-primary provision``)
  and Secondary agents (``secondary.agent``) on in-process links, each with its own flash
  and state directory, so a "reboot" rebuilds them from disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import urllib3
from ecu_support import boot_agent

from director.director import Director, EcuSpec
from director.director_server import create_app as director_app
from director.image_repo import ImageRepository, default_offline_dir
from director.image_server import create_app as image_app
from hardware.secure_link import LinkKey
from primary.agent import Primary
from primary.cli import provision
from primary.config import load_config
from primary.secondaries import InProcessSecondary
from primary.timesource import FixedTime
from secondary.agent import SecondaryAgent
from storage import AtomicStore
from uptane.encryption import EncryptionPrivateKey
from uptane.keys import PrivateKey
from uptane.limits import Limits
from uptane.metadata import DER, Metadata, Targets
from uptane.repository import metadata_filename

VIN = "VIN-PRIMARY-1"
PRIMARY_ID = "gw-1"
PRIMARY_HW = "gw-v1"

#: path -> (bytes, hardware ids, release counter)
IMAGES: dict[str, tuple[bytes, list[str], int]] = {
    "gw/gw-2.bin": (b"gateway two " * 200, [PRIMARY_HW], 2),
    "brakes/fw-2.bin": (bytes(range(256)) * 800, ["brk-v1"], 2),  # 200 KiB
    "brakes/fw-3.bin": (b"brakes three" * 300, ["brk-v1"], 3),
    "tcu/tcu-5.bin": (b"telematics five " * 250, ["tcu-v5"], 5),
}

SECONDARIES = {"brk-1": "brk-v1", "tcu-1": "tcu-v5"}

#: a supplier's image, signed by its delegated role in the Image repository
SUPPLIER = "acme"
SUPPLIED_PATH = "acme/tcu-6.bin"
SUPPLIED: tuple[bytes, list[str], int] = (b"acme telematics six " * 150, ["tcu-v5"], 6)


class Clock:
    """The backend's settable clock."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self.now = self.now + delta


# --- servers ------------------------------------------------------------------------------


class Uvicorn:
    """An ASGI app served by uvicorn in a thread on 127.0.0.1 (a free port)."""

    def __init__(self, app: object) -> None:
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@dataclass
class ProxyRules:
    """What the man in the middle does; every rule matches on a path suffix."""

    #: suffix -> function(body) -> new body
    tamper: dict[str, Callable[[bytes], bytes]] = field(default_factory=dict)
    #: suffix -> bytes per second to drip the body at (slow retrieval)
    drip: dict[str, float] = field(default_factory=dict)
    #: suffix -> [bytes, times]: cut the connection after that many body bytes, that
    #: many times
    cut: dict[str, list[int]] = field(default_factory=dict)
    #: answer every request with 503 (the server is down)
    down: bool = False
    #: substring -> replacement in the request path, before it goes upstream
    rewrite: dict[str, str] = field(default_factory=dict)
    #: suffix -> function(path) -> bytes: answer a GET from the test (None: 404), never
    #: upstream (files the service does not publish, e.g. another encoding)
    serve: dict[str, Callable[[str], bytes | None]] = field(default_factory=dict)
    #: answer every POST with this status and body instead of forwarding it
    post_answer: tuple[int, bytes] | None = None
    #: close the connection on every POST without an answer (a transport failure)
    post_hangup: bool = False


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _match(self, rules: dict[str, Any]) -> str | None:
        path = self.path.split("?", 1)[0]
        return next((s for s in rules if path.endswith(s)), None)

    def _forward(self, method: str, body: bytes | None) -> tuple[int, bytes, str]:
        srv: Any = self.server
        headers = {"Content-Type": self.headers.get("Content-Type", "application/octet-stream")}
        path = self.path
        for old, new in srv.rules.rewrite.items():
            path = path.replace(old, new)
        r = srv.pool.request(method, srv.upstream + path, body=body, headers=headers, retries=False)
        return r.status, r.data, r.headers.get("Content-Type", "application/octet-stream")

    def do_POST(self) -> None:
        srv: Any = self.server
        srv.requests.append(("POST", self.path, None))
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        rules: ProxyRules = srv.rules
        if rules.post_hangup:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if rules.post_answer is not None:
            status, data = rules.post_answer
            srv.posts.append((self.path, status, body, data))
            self._send(status, data, "application/json")
            return
        status, data, ctype = self._forward("POST", body)
        srv.posts.append((self.path, status, body, data))
        self._send(status, data, ctype)

    def do_GET(self) -> None:
        srv: Any = self.server
        rules: ProxyRules = srv.rules
        srv.requests.append(("GET", self.path, self.headers.get("Range")))
        if rules.down:
            self._send(503, b"down", "text/plain")
            return
        served = self._match(rules.serve)
        if served is not None:
            found = rules.serve[served](self.path)
            if found is None:
                self._send(404, b"not found", "text/plain")
            else:
                self._send(200, found, "application/octet-stream")
            return
        status, data, ctype = self._forward("GET", None)
        if status != 200:
            self._send(status, data, ctype)
            return
        hit = self._match(rules.tamper)
        if hit is not None:
            data = rules.tamper[hit](data)
        start = 0
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes=") and rng.endswith("-") and rng[6:-1].isdigit():
            start = int(rng[6:-1])
            if start >= len(data):
                self._send(416, b"", ctype, {"Content-Range": f"bytes */{len(data)}"})
                return
        body = data[start:]
        extra = {}
        code = 200
        if start:
            code = 206
            extra["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        cut = self._match(rules.cut)
        drip = self._match(rules.drip)
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        try:
            if cut is not None:
                n, times = rules.cut[cut]
                if times <= 1:
                    del rules.cut[cut]
                else:
                    rules.cut[cut] = [n, times - 1]
                self.wfile.write(body[:n])
                self.wfile.flush()
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            if drip is not None:
                rate = rules.drip[drip]
                for i in range(0, len(body), 64):
                    self.wfile.write(body[i : i + 64])
                    self.wfile.flush()
                    time.sleep(64 / rate)
                return
            self.wfile.write(body)
        except OSError:
            self.close_connection = True

    def _send(self, status: int, data: bytes, ctype: str, extra: dict[str, str] | None = None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(data)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up is not news


class Proxy:
    """A man in the middle on 127.0.0.1 in front of ``upstream`` (see :class:`ProxyRules`)."""

    def __init__(self, upstream: str) -> None:
        self.httpd = _QuietServer(("127.0.0.1", 0), _ProxyHandler)
        self.httpd.daemon_threads = True
        h: Any = self.httpd
        h.upstream = upstream
        h.rules = ProxyRules()
        h.requests = []
        h.posts = []
        h.pool = urllib3.PoolManager(timeout=urllib3.Timeout(connect=5, read=30))
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def rules(self) -> ProxyRules:
        return self.httpd.rules  # type: ignore[attr-defined]

    def reset(self) -> None:
        self.httpd.rules = ProxyRules()  # type: ignore[attr-defined]

    @property
    def requests(self) -> list[tuple[str, str, str | None]]:
        return self.httpd.requests  # type: ignore[attr-defined]

    @property
    def posts(self) -> list[tuple[str, int, bytes, bytes]]:
        return self.httpd.posts  # type: ignore[attr-defined]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


# --- the OEM backend ------------------------------------------------------------------------


class Backend:
    """The real Image repository and Director services, each behind a proxy."""

    def __init__(self, root: Path, now: datetime) -> None:
        self.root = root
        self.clock = Clock(now)
        self.image_dir = root / "image-repo"
        ImageRepository.init(self.image_dir, default_offline_dir(self.image_dir), now)
        repo = ImageRepository(self.image_dir, now)
        for path, (data, hw, rc) in IMAGES.items():
            repo.stage_target(path, data, hw, rc)
        offline = default_offline_dir(self.image_dir)
        ImageRepository(self.image_dir, now, offline_dir=offline).sign(now)
        # a supplier with a delegation (§5.3.1): "acme/*" for the TCU's hardware; the
        # supplier holds its own key, the OEM gets the public half (issue 16)
        key = PrivateKey.generate()
        ImageRepository(self.image_dir, now, offline_dir=offline).delegate(
            SUPPLIER, ["acme/*"], ["tcu-v5"], now, keys=[key.key]
        )
        repo = ImageRepository(self.image_dir, now)
        data, hw, rc = SUPPLIED
        tf = repo.upload_image(SUPPLIER, SUPPLIED_PATH, data)
        tf.hardware_ids, tf.release_counter = hw, rc
        signed = Targets(version=1, expires=repo.builder.targets.expires)
        signed.targets[tf.path] = tf
        for enc in repo.builder.encodings:
            md = Metadata(signed, encoding=enc)
            md.sign(key)
            repo.upload_metadata(SUPPLIER, SUPPLIER, md.to_bytes(), enc, now)
        self.image_server = Uvicorn(
            image_app(self.image_dir, clock=self.clock, refresh_interval=0.2)
        )
        director_dir = root / "director"
        Director.init(
            director_dir,
            str(self.image_dir / "metadata"),
            self.image_root(),
            db_url=f"sqlite:///{root / 'inventory.db'}",
            now=now,
        )
        self.director_dir = director_dir
        self.director = Director(director_dir, clock=self.clock)
        self.director_server = Uvicorn(director_app(director=self.director))
        self.image_proxy = Proxy(self.image_server.url)
        self.director_proxy = Proxy(self.director_server.url)

    def image_root(self, encoding: str = "json") -> bytes:
        return (self.image_dir / "metadata" / metadata_filename("root", 1, encoding)).read_bytes()

    def director_root(self, encoding: str = "json") -> bytes:
        return (self.director_dir / "root" / metadata_filename("root", 1, encoding)).read_bytes()

    def register(self, vin: str, ecus: list[EcuSpec]) -> None:
        self.director.register_vehicle(vin, ecus)

    def assign(self, vin: str, items: list[tuple[str, str]]) -> None:
        # forced: these tests play a compromised or mistaken Director against the ECUs' own
        # checks, so the Director's downgrade refusal (issue 14) must not stop it first
        self.director.assign(vin, items, force=True)

    def advance(self, delta: timedelta) -> None:
        """Move the backend's clock. The Director re-signs when asked; the Image repository
        service re-signs on its refresher's tick, run here at once (no race with it)."""
        self.clock.advance(delta)
        self.image_server.server.config.app.state.service.tick()

    def stop(self) -> None:
        for s in (self.image_proxy, self.director_proxy):
            s.stop()
        for u in (self.director_server, self.image_server):
            u.stop()
        self.director.dispose()


# --- the vehicle --------------------------------------------------------------------------


@dataclass
class Ecu:
    serial: str
    hardware_id: str
    key: PrivateKey
    directory: Path
    agent: SecondaryAgent | None = None
    served: InProcessSecondary | None = None
    mode: str = "partial"
    encoding: str = DER


CONFIG = """
[vehicle]
vin = "{vin}"

[primary]
ecu_serial = "{primary}"
hardware_id = "{primary_hw}"
key_file = "keys/primary.pem"
flash_dir = "flash"
slot_size = 65536

[director]
url = "{director}"

[image_repository]
url = "{image}"

[storage]
dir = "state"
poll_interval = 1

[fetcher]
connect_timeout = 2.0
read_timeout = {read_timeout}
retries = 1
backoff = 0.05
{speed}
"""

SECONDARY = """
[[secondaries]]
serial = "{serial}"
hardware_id = "{hw}"
public_key = "keys/{serial}.pub"
mode = "{mode}"
encoding = "{encoding}"
link = {link}
link_key = "ecus/{serial}/link.key"
timeout = {timeout}
retries = 1
"""


TIME = """
[time]
servers = [{{ address = "{address}", key = "{key}" }}]
timeout = 0.5
retries = 1
"""


class Vehicle:
    """A provisioned Primary and its in-process Secondary agents."""

    def __init__(
        self,
        root: Path,
        backend: Backend,
        now: datetime,
        *,
        secondaries: dict[str, str] | None = None,
        read_timeout: float = 5.0,
        min_speed: float | None = None,
        modes: dict[str, str] | None = None,
        links: dict[str, str] | None = None,
        encodings: dict[str, str] | None = None,
        time_server: tuple[str, Path] | None = None,
        extra_config: str = "",
        roots: dict[str, bytes] | None = None,
        map_file: str | None = None,
    ) -> None:
        """``links`` maps a Secondary to the TOML of its link (default: in-process, booted
        here); the test serves a Secondary it links otherwise. ``encodings`` maps a
        Secondary to the encoding it reads and reports in (default DER). ``time_server``
        (``HOST:PORT`` and its ``longterm.pub``) gives the Primary signed time and every
        Secondary that key (signed time only). ``extra_config`` is TOML added to the
        Primary's configuration (e.g. ``[[repositories]]``), ``roots`` the roots of the
        repositories it names, for ``provision``; ``map_file`` its TAP 4 map file (a path
        relative to the configuration)."""
        self.root = root
        self.backend = backend
        self.time = FixedTime(now)
        self.lines: list[str] = []
        secondaries = SECONDARIES if secondaries is None else secondaries
        (root / "keys").mkdir(parents=True, exist_ok=True)
        speed = ""
        if min_speed is not None:
            speed = f"min_bytes_per_second = {min_speed}\nspeed_window = 0.5"
        text = CONFIG.format(
            vin=VIN,
            primary=PRIMARY_ID,
            primary_hw=PRIMARY_HW,
            director=backend.director_proxy.url,
            image=backend.image_proxy.url,
            read_timeout=read_timeout,
            speed=speed,
        )
        self.ecus: dict[str, Ecu] = {}
        self.encryption_keys: dict[str, EncryptionPrivateKey] = {}
        for serial, hw in secondaries.items():
            key = PrivateKey.generate()
            (root / "keys" / f"{serial}.pub").write_text(json.dumps(key.key.to_dict()))
            mode = (modes or {}).get(serial, "partial")
            encoding = (encodings or {}).get(serial, DER)
            link = (links or {}).get(serial)
            text += SECONDARY.format(
                serial=serial,
                hw=hw,
                mode=mode,
                encoding=encoding,
                link=link or f'{{ type = "inprocess", name = "{serial}" }}',
                timeout=1.0 if link is None else 2.0,
            )
            self.ecus[serial] = Ecu(
                serial, hw, key, root / "ecus" / serial, mode=mode, encoding=encoding
            )
            (root / "ecus" / serial).mkdir(parents=True)
            (root / "ecus" / serial / "key.pem").write_bytes(key.to_pem())
            LinkKey.generate().save(root / "ecus" / serial / "link.key")
            # its encryption key (issue 17), registered with the Director below
            enc = EncryptionPrivateKey.generate()
            (root / "ecus" / serial / "encryption.pem").write_bytes(enc.to_pem())
            self.encryption_keys[serial] = enc
            if time_server is not None:
                (root / "ecus" / serial / "time-keys").mkdir()
                pub = time_server[1].read_bytes()
                (root / "ecus" / serial / "time-keys" / "time-1.pub").write_bytes(pub)
        if time_server is not None:
            text += TIME.format(address=time_server[0], key=time_server[1])
        text += extra_config
        if map_file is not None:
            text = text.replace("[storage]\n", f'[storage]\nmap_file = "{map_file}"\n', 1)
        self.config_path = root / "primary.toml"
        self.config_path.write_text(text)
        self.config = load_config(self.config_path)
        pkey = provision(self.config, backend.director_root(), backend.image_root(), roots=roots)
        specs = [EcuSpec(PRIMARY_ID, PRIMARY_HW, pkey.key, True)]
        specs += [
            EcuSpec(
                e.serial,
                e.hardware_id,
                e.key.key,
                False,
                self.encryption_keys[e.serial].public_key(),
            )
            for e in self.ecus.values()
        ]
        backend.register(VIN, specs)
        for ecu in self.ecus.values():
            store = AtomicStore(ecu.directory / "state")
            full = ecu.mode == "full"
            SecondaryAgent.provision_state(
                store,
                backend.director_root(ecu.encoding),
                image_root=backend.image_root(ecu.encoding) if full else None,
                time=int(now.timestamp()),
            )
            if ecu.serial not in (links or {}):
                self.boot(ecu.serial)

    def boot(self, serial: str) -> SecondaryAgent:
        """(Re)start one Secondary from its files and serve it on its in-process link."""
        ecu = self.ecus[serial]
        if ecu.served is not None:
            ecu.served.close()
        ecu.agent, ecu.served = boot_agent(
            serial, ecu.hardware_id, ecu.directory, ecu.mode, VIN, encoding=ecu.encoding
        )
        return ecu.agent

    def unplug(self, serial: str) -> None:
        """The Secondary stops answering (its link is dead)."""
        ecu = self.ecus[serial]
        assert ecu.served is not None
        ecu.served.close()
        # the name stays registered, but nobody serves the other end
        from primary.secondaries import register_inprocess

        register_inprocess(serial, ecu.served.primary_end)

    def primary(self) -> Primary:
        return Primary(self.config, time_source=self.time, say=self.lines.append)

    def cycle(self) -> Any:
        return self.primary().run_cycle()

    def attach(self, serial: str, agent: SecondaryAgent) -> None:
        """A Secondary the test serves on a link of its own."""
        self.ecus[serial].agent = agent

    def installed(self, serial: str) -> str | None:
        """What the Secondary's boot record says it runs."""
        ecu = self.ecus[serial]
        assert ecu.agent is not None
        st = ecu.agent.slots.status()
        return st.installed.filename if st.installed else None

    def close(self) -> None:
        for ecu in self.ecus.values():
            if ecu.served is not None:
                ecu.served.close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def backend_and_vehicle(tmp: Path, now: datetime, **kw: Any) -> Iterator[tuple[Backend, Vehicle]]:
    backend = Backend(tmp / "oem", now)
    vehicle = None
    try:
        vehicle = Vehicle(tmp / "car", backend, now, **kw)
        yield backend, vehicle
    finally:
        if vehicle is not None:
            vehicle.close()
        backend.stop()


LIMITS = Limits.primary()
