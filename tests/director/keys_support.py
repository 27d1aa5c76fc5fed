"""SoftHSM2 tokens for the key-custody tests (issue 16), one token area per test process.

The PKCS#11 module reads ``SOFTHSM2_CONF`` once, when a process first loads it, and sees
only the tokens there at that moment; so the first call here makes a token directory with
a stock of empty tokens, points ``SOFTHSM2_CONF`` at it, and hands the tokens out one by
one (:func:`fresh_token`). Child processes (real services) inherit the variable.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
#: the tokens' user PIN, given to the key sources through this environment variable
PIN_ENV = "KEYS_TEST_HSM_PIN"
PIN = "24680"
SO_PIN = "13579"
STOCK = 24

_state: dict[str, object] = {}


def _area() -> Path:
    if "dir" in _state:
        return _state["dir"]  # type: ignore[return-value]
    util = shutil.which("softhsm2-util")
    if util is None or not os.path.exists(MODULE):
        raise RuntimeError(
            "SoftHSM2 is needed for the key-custody tests: apt-get install softhsm2"
            " (.ci/run installs it)"
        )
    try:
        import pkcs11  # noqa: F401
    except ImportError as e:
        raise RuntimeError("python-pkcs11 is needed: pip install 'uptane-stack[hsm]'") from e
    d = Path(tempfile.mkdtemp(prefix="softhsm-"))
    atexit.register(shutil.rmtree, d, True)
    (d / "tokens").mkdir()
    conf = d / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {d / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)
    os.environ[PIN_ENV] = PIN
    pins = ["--so-pin", SO_PIN, "--pin", PIN]
    for i in range(STOCK):
        subprocess.run(
            [util, "--init-token", "--free", "--label", f"tok-{i}", *pins],
            check=True,
            capture_output=True,
        )
    _state["dir"] = d
    _state["next"] = 0
    return d


def fresh_token() -> str:
    """The label of a token no other test of this process has used."""
    _area()
    n = int(_state["next"])  # type: ignore[call-overload]
    if n >= STOCK:
        raise RuntimeError(f"all {STOCK} SoftHSM2 tokens are used: raise STOCK")
    _state["next"] = n + 1
    return f"tok-{n}"


def token_uri(label: str, obj: str | None = None) -> str:
    """A PKCS#11 URI for ``label`` (and one object in it), with the module path."""
    path = f"token={label}" + (f";object={obj}" if obj else "")
    return f"pkcs11:{path}?module-path={MODULE}"


def key_source_spec(label: str) -> dict[str, str]:
    """The ``key_source`` setting of a service whose online keys are on token ``label``."""
    return {"kind": "pkcs11", "uri": token_uri(label), "pin_env": PIN_ENV}


def private_key_markers(root: Path) -> list[str]:
    """Every file under ``root`` that holds private key material in PEM or PKCS#8 form."""
    found = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            data = p.read_bytes()
            if b"PRIVATE KEY-----" in data:
                found.append(str(p.relative_to(root)))
    return found


def secret_forms(key) -> list[bytes]:  # type: ignore[no-untyped-def]
    """The private value of a key file's key, raw and as hex and base64 text: what a
    search for a leaked copy looks for besides PEM headers."""
    import base64

    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    obj = key._obj
    if isinstance(obj, ed25519.Ed25519PrivateKey):
        raw = obj.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    elif isinstance(obj, ec.EllipticCurvePrivateKey):
        raw = obj.private_numbers().private_value.to_bytes(32, "big")
    else:
        raise TypeError(type(obj).__name__)
    return [raw, raw.hex().encode(), base64.b64encode(raw)]


def holding(root: Path, forms: list[bytes]) -> list[str]:
    """Files under ``root`` that contain any of ``forms``."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and any(f in p.read_bytes() for f in forms)
    )


# --- an OEM backend whose keys are held as issue 16 asks ---------------------------------


def custody_backend(  # type: ignore[no-untyped-def]
    root: Path, now, *, image_keys=None, director_keys=None, expiry_days=None, bits=None,
    extra=(),
):  # fmt: skip
    """The real Image repository and Director services (in threads, behind the proxies of
    ``tests/primary/cycle_support.py``), with the images of that support module signed,
    but no supplier: the tests delegate themselves. ``image_keys`` and ``director_keys``
    are key source settings (e.g. :func:`key_source_spec`), default files. With ``bits``
    the top-level targets delegates to ``2**bits`` hash bins first, and every image (with
    ``extra``: (path, bytes, hardware ids, release counter)) goes into them."""
    from cycle_support import IMAGES, Backend, Clock, Proxy, Uvicorn

    from director.director import Director
    from director.director_server import create_app as director_app
    from director.image_repo import ImageRepository, default_offline_dir
    from director.image_server import create_app as image_app

    b = Backend.__new__(Backend)
    b.root = root
    b.clock = Clock(now)
    b.image_dir = root / "image-repo"
    offline = default_offline_dir(b.image_dir)
    ImageRepository.init(b.image_dir, offline, now, key_source=image_keys, expiry_days=expiry_days)
    if bits is not None:
        from director.image_delegations import delegate_bins

        delegate_bins(ImageRepository(b.image_dir, now, offline_dir=offline), now, bits)
    repo = ImageRepository(b.image_dir, now, offline_dir=offline)
    repo.stage_targets([(p, d, hw, rc) for p, (d, hw, rc) in IMAGES.items()] + list(extra))
    repo.sign(now)
    b.image_server = Uvicorn(image_app(b.image_dir, clock=b.clock, refresh_interval=0.2))
    b.director_dir = root / "director"
    Director.init(
        b.director_dir,
        str(b.image_dir / "metadata"),
        b.image_root(),
        db_url=f"sqlite:///{root / 'inventory.db'}",
        now=now,
        key_source=director_keys,
    )
    b.director = Director(b.director_dir, clock=b.clock)
    b.director_server = Uvicorn(director_app(director=b.director))
    b.image_proxy = Proxy(b.image_server.url)
    b.director_proxy = Proxy(b.director_server.url)
    return b


def image_version(car, what: str = "root") -> int:  # type: ignore[no-untyped-def]
    """The version of ``what`` the vehicle's Primary trusts in the Image repository."""
    _director, image = car.primary().load_trust()
    md = image.root if what == "root" else getattr(image, what)
    return int(md.signed.version)


def director_root_version(car) -> int:  # type: ignore[no-untyped-def]
    director, _image = car.primary().load_trust()
    return int(director.root.signed.version)
