"""``uptane-image-repo``: create, sign, delegate, rotate, publish and serve an Image
repository. See docs/image-repo.md."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from director import image_cli_keys
from director.ceremony_cli import add_keygen_parser
from director.image_delegations import BINS_ADVISED, suggest_bits
from director.image_repo import (
    Conflict,
    ImageRepository,
    default_offline_dir,
)
from keystore import KeyConfigError, SecretUnavailable, TokenError
from keystore.sources import spec_from_options
from uptane.errors import UptaneError
from uptane.keys import SCHEMES


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _offline(args: argparse.Namespace) -> Path:
    return Path(args.offline_keys) if args.offline_keys else default_offline_dir(Path(args.dir))


def _open(args: argparse.Namespace, *, offline: bool = False) -> ImageRepository:
    return ImageRepository(
        Path(args.dir),
        _now(),
        offline_dir=_offline(args) if offline else None,
        passphrase_env=getattr(args, "passphrase_env", None),
    )


def _key_source(args: argparse.Namespace) -> dict[str, str] | None:
    """``init``'s online key source: a PKCS#11 token, encrypted files, or plain files."""
    return spec_from_options(args.online_token, args.pin_env, args.online_passphrase_env)


def _days(items: list[str] | None) -> dict[str, float]:
    out = {}
    for item in items or []:
        role, sep, days = item.partition("=")
        if not sep:
            raise ValueError(f"bad --expiry {item!r}: use ROLE=DAYS")
        out[role] = float(days)
    return out


def cmd_init(args: argparse.Namespace) -> int:
    off = _offline(args)
    token = ImageRepository.init(
        Path(args.dir),
        off,
        _now(),
        scheme=args.scheme,
        key_source=_key_source(args),
        expiry_days=_days(args.expiry),
        passphrase_env=args.passphrase_env,
        bins=args.bins,
        hashes=tuple(args.hashes.split(",")) if args.hashes else None,
    )
    print(f"created Image repository in {args.dir}; offline keys in {off}")
    if args.bins is not None:
        print(f"the top-level targets delegates every image to {1 << args.bins} hash bins")
    print("admin upload token (shown once, store it safely):")
    print(token)
    return 0


def parse_rule(text: str) -> dict[str, object]:
    """A dependency rule: ``PATH`` (an image by name), ``HWID>=N`` (hardware id at release
    counter N or more), or ``hw:HWID`` (any image on that hardware)."""
    if ">=" in text:
        hwid, _, n = text.partition(">=")
        try:
            return {"hardware_id": hwid, "min_release_counter": int(n)}
        except ValueError:
            raise ValueError(f"bad rule {text!r}: use HWID>=N with a whole number N") from None
    if text.startswith("hw:"):
        return {"hardware_id": text[3:]}
    return {"image": text}


def cmd_add_target(args: argparse.Namespace) -> int:
    repo = _open(args)
    data = Path(args.file).read_bytes()
    custom: dict[str, object] = {}
    if args.requires:
        custom["requires"] = [parse_rule(r) for r in args.requires]
    if args.conflicts:
        custom["conflicts"] = [parse_rule(r) for r in args.conflicts]
    tf = repo.stage_target(
        args.path, data, args.hardware_id, args.release_counter, custom=custom or None
    )
    print(f"staged {tf.path} ({tf.length} bytes, sha256 {tf.hashes['sha256']}); run `sign`")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    repo = _open(args, offline=True)
    n = len(repo.staged())
    out = repo.sign_staged(_now())
    if out.role == "bins":
        print(f"signed {n} staged change(s) into hash bins with the online bin key")
        return 0
    if out.published:
        print(f"signed targets version {out.version} with {n} staged change(s)")
        listed = len(repo.builder.targets.targets)
        if listed > BINS_ADVISED:
            print(
                f"note: the top-level targets lists {listed:,} images, and every vehicle"
                f" downloads it whole after each release; hash bins keep that to the images"
                f" it needs: `uptane-image-repo delegate-bins {args.dir} --bits"
                f" {suggest_bits(listed)}` (docs/image-repo.md, 'Large repositories')",
                file=sys.stderr,
            )
        return 0
    return image_cli_keys.report([out])


def cmd_publish(args: argparse.Namespace) -> int:
    repo = _open(args)
    count = repo.publish(Path(args.out))
    print(f"published static repository to {args.out} ({count} image file(s))")
    return 0


def cmd_rotate_root(args: argparse.Namespace) -> int:
    repo = _open(args, offline=True)
    version = repo.rotate_root(_now(), scheme=args.scheme)
    print(f"root version {version} signed by the old and the new root keys")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    repo = _open(args)
    b = repo.builder
    print(
        f"root v{len(b.root_history)} targets v{b.targets.version} "
        f"snapshot v{b.snapshot.version} timestamp v{b.timestamp.version}"
    )
    for role in ["targets", *b.delegated]:
        model = b.role(role)
        for path in sorted(model.targets):  # type: ignore[attr-defined]
            print(f"  {role}: {path}")
    for tf in repo.staged():
        print(f"  staged: {tf.path}")
    return 0


def cmd_supplier_release(args: argparse.Namespace) -> int:
    from director.supplier import release
    from keystore import open_signer

    token = Path(args.token_file).read_text().strip()
    signer = open_signer(args.key, passphrase_env=args.passphrase_env, pin_env=args.pin_env)
    result = release(
        args.url,
        token,
        args.role,
        signer,
        args.path,
        Path(args.file).read_bytes(),
        args.hardware_id,
        args.release_counter,
        _now(),
    )
    print(f"{args.role} version {result['version']} lists {result['target']}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from director.director_cli import package_version, service_logging
    from director.image_server import create_app

    app = create_app(Path(args.dir), refresh_interval=args.refresh_interval)
    repo = app.state.service.repo
    serving = app.state.serving
    tls_options = serving.settings.uvicorn_kwargs()
    b = repo.builder
    scheme = "https" if serving.settings.serves_tls else "http"
    print(f"uptane-image-repo {package_version()} serving {scheme}://{args.host}:{args.port}")
    print(f"  directory: {args.dir}")
    print(f"  online keys (snapshot, timestamp, bins): {repo.online.describe()}")
    print("  root and targets keys: offline, with their holders")
    roles = ", ".join(f"{r} v{b.version_of(r)}" for r in ["targets", *b.delegated][:8])
    print(f"  root v{len(b.root_history)}, {roles}")
    read = "anyone" if serving.settings.public_read else "clients with a certificate"
    print(f"  downloads: {read}; object store: {serving.describe()}")
    chosen = service_logging(args.log_format)
    print(f"  one {chosen} log line per request, upload and offline change follows on stderr")
    sys.stdout.flush()
    uvicorn.run(
        app, host=args.host, port=args.port, log_level="warning", access_log=False, **tls_options
    )
    return 0


def cmd_mirror(args: argparse.Namespace) -> int:
    """Bring an object store up to the repository's static layout (issue 19)."""
    from director.image_config import ImageRepoConfig
    from director.objectmirror import Mirror
    from storage.objects import open_objects

    spec: Any = ImageRepoConfig.load(Path(args.dir)).object_store
    if args.to:
        spec = {"url": args.to, "endpoint_url": args.endpoint_url, "public_read": args.public_read}
    if spec is None:
        raise ValueError(
            "no object store: give --to s3://BUCKET/PREFIX or set repo.json object_store"
        )
    store = open_objects(spec)
    written = Mirror(store).sync(_open(args))
    print(f"{store.describe()}: {written} object(s) written")
    return 0


def _wrap(handler):  # type: ignore[no-untyped-def]
    """Bind a key command to this CLI's repository opener and clock."""

    def run(args: argparse.Namespace) -> int:
        return int(handler(args, _open, _now))

    return run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="uptane-image-repo", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, func, help_: str, *, offline: bool = False) -> argparse.ArgumentParser:  # type: ignore[no-untyped-def]
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("dir", help="repository directory")
        if offline:
            sp.add_argument(
                "--offline-keys", help="offline key directory (default DIR.offline-keys)"
            )
            sp.add_argument(
                "--passphrase-env", help="variable holding the offline keys' passphrase"
            )
        sp.set_defaults(func=func)
        return sp

    _init_options(add("init", cmd_init, "create a repository", offline=True))
    sp = add("add-target", cmd_add_target, "stage an image")
    sp.add_argument("file")
    sp.add_argument("--path", required=True, help="target name, e.g. brakes/fw-1.2.bin")
    sp.add_argument("--hardware-id", action="append", required=True)
    sp.add_argument("--release-counter", type=int, default=0)
    sp.add_argument(
        "--requires",
        action="append",
        help="another ECU of the vehicle must run this first: PATH, or HWID>=N (repeat)",
    )
    sp.add_argument(
        "--conflicts", action="append", help="refuse with: PATH, HWID>=N or hw:HWID (repeat)"
    )
    add("sign", cmd_sign, "sign staged targets with the offline targets key", offline=True)
    sp = add("publish", cmd_publish, "write a static TUF repository")
    sp.add_argument("out")
    image_cli_keys.add_parsers(sub, add, _wrap)
    add_keygen_parser(sub)
    sp = add("rotate-root", cmd_rotate_root, "replace the root key", offline=True)
    sp.add_argument("--scheme", choices=SCHEMES, default="ed25519")
    add("status", cmd_status, "show versions and targets")
    _supplier_parser(sub)
    sp = add("serve", cmd_serve, "run the HTTP service")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=8001)
    sp.add_argument("--refresh-interval", type=float, default=60.0)
    sp.add_argument("--log-format", choices=["auto", "json", "text"], default="auto")
    sp = add("mirror", cmd_mirror, "bring an object store (S3) up to the static repository")
    sp.add_argument("--to", help="s3://BUCKET/PREFIX or a directory (default: repo.json's)")
    sp.add_argument("--endpoint-url", help="an S3-compatible server other than AWS")
    sp.add_argument("--public-read", action="store_true", help="write objects public-read")
    return p


def _init_options(sp: argparse.ArgumentParser) -> None:
    """``init``'s options: key scheme and sources, lifetimes, bins and the hash set."""
    sp.add_argument("--scheme", choices=SCHEMES, default="ed25519")
    sp.add_argument("--online-token", help="PKCS#11 URI of the token for the online keys")
    sp.add_argument("--pin-env", help="variable holding that token's PIN")
    sp.add_argument("--online-passphrase-env", help="encrypt online key files; its variable")
    sp.add_argument("--expiry", action="append", help="ROLE=DAYS lifetime (repeat)")
    sp.add_argument(
        "--bins",
        type=int,
        metavar="BITS",
        help="delegate every image to 2**BITS hash bins from the start (large repositories;"
        " docs/image-repo.md suggests BITS by size)",
    )
    sp.add_argument(
        "--hashes",
        metavar="ALG[,ALG]",
        help="hash algorithms each image lists (default sha256,sha512; every ECU checks each"
        " one: docs/image-repo.md 'Hash algorithms')",
    )


def _supplier_parser(sub: Any) -> None:
    sp = sub.add_parser(
        "supplier-release", help="(supplier) upload an image and sign the role's next version"
    )
    sp.add_argument("url", help="Image repository service base URL")
    sp.add_argument("file")
    sp.add_argument("--role", required=True)
    sp.add_argument("--key", required=True, help="the role's private key: PEM or PKCS#11 URI")
    sp.add_argument("--passphrase-env", help="variable holding the key file's passphrase")
    sp.add_argument("--pin-env", help="variable holding the token PIN")
    sp.add_argument("--token-file", required=True, help="file holding the role's upload token")
    sp.add_argument("--path", required=True)
    sp.add_argument("--hardware-id", action="append", required=True)
    sp.add_argument("--release-counter", type=int, default=0)
    sp.set_defaults(func=cmd_supplier_release)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (
        UptaneError,
        Conflict,
        KeyConfigError,
        SecretUnavailable,
        TokenError,
        PermissionError,
        FileExistsError,
        FileNotFoundError,
        ValueError,
        OSError,
        httpx.HTTPError,
    ) as e:
        print(f"uptane-image-repo: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
