"""The committed OpenAPI documents of both services (issue 19): ``docs/openapi/director.json``
and ``docs/openapi/image-repo.json``.

    python -m director.openapi [--out docs/openapi] [--check]

writes each service's document as its code declares it (sorted keys, two-space indent);
``--check`` writes nothing and exits 1, naming the files, when the code and the committed
documents differ (``tests/director/test_openapi.py`` does the same). A change of a route,
a body or a scope is then a visible change of a committed file.

The Director's document is built from an app over a stand-in Director (no keys and no
database are needed to declare routes); the Image repository's from a throwaway
repository in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

FILES = {"director": "director.json", "image-repo": "image-repo.json"}


def _stand_in_director() -> Any:
    """What :func:`director.director_server.create_app` reads of a Director while it
    declares its routes."""
    from director import inventory as inv
    from director.common import utcnow
    from director.config import Config
    from uptane.limits import Limits

    def nothing() -> list[str]:
        return []

    return SimpleNamespace(
        config=Config("sqlite://", "", ""),
        engine=inv.make_engine("sqlite://"),
        clock=utcnow,
        dir=Path("."),
        limits=Limits.primary(),
        publisher=SimpleNamespace(on_change=None),
        writer=SimpleNamespace(batch_sizes={}),
        refresh_expiring=nothing,
        watch=nothing,
        tick=nothing,
    )


def director_document() -> dict[str, Any]:
    from director.director_server import create_app

    d = _stand_in_director()
    try:
        return create_app(director=d, node="openapi").openapi()
    finally:
        d.engine.dispose()


def image_repo_document() -> dict[str, Any]:
    from director.image_repo import ImageRepository
    from director.image_server import create_app

    now = datetime.now(UTC).replace(microsecond=0)
    with tempfile.TemporaryDirectory(prefix="uptane-openapi-") as tmp:
        repo = Path(tmp) / "repo"
        ImageRepository.init(repo, Path(tmp) / "offline", now)
        return create_app(repo).openapi()


def documents() -> dict[str, str]:
    """Each committed file's name and its text as the code declares it."""
    out = {}
    for name, doc in (("director", director_document()), ("image-repo", image_repo_document())):
        out[FILES[name]] = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return out


def stale(directory: Path) -> list[str]:
    """The committed files that differ from the code (missing ones too)."""
    wrong = []
    for name, text in documents().items():
        path = directory / name
        if not path.exists() or path.read_text("utf-8") != text:
            wrong.append(str(path))
    return wrong


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m director.openapi", description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("docs/openapi"))
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 if they differ")
    args = ap.parse_args(argv)
    if args.check:
        wrong = stale(args.out)
        for path in wrong:
            print(f"{path}: differs from the code; run python -m director.openapi", file=sys.stderr)
        return 1 if wrong else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in documents().items():
        (args.out / name).write_text(text, "utf-8")
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["FILES", "director_document", "documents", "image_repo_document", "stale"]
