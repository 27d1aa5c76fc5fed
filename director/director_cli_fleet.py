"""``uptane-director`` commands over the whole fleet (issue 20): ``vehicle add-many``
(bulk registration from a file, :mod:`director.bulk`) and the listings of ``vehicle list``
and ``status``, which follow the listings' cursors (:mod:`director.paging`) and print as
they read, so that a fleet of any size prints without being held in memory."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from director import paging
from director.common import Invalid
from director.director import Director
from director.paging import Page


def pages(d: Director, kind: str, get: Callable[[Page], dict[str, Any]]) -> Iterator[Any]:
    """Every item of a listing, following its cursors (pages of ``page_limit_max``)."""
    return paging.walk(get, Page.of(d.config, kind, d.config.page_limit_max, None))


def print_lists(parts: dict[str, Iterator[Any]]) -> None:
    """Print lists as they are read (JSON, two-space indent): ``{"": items}`` as a list,
    else an object of lists by key, so that a fleet of any size prints without being
    held in memory."""

    def items(it: Iterator[Any], pad: str) -> None:
        first = True
        for item in it:
            text = json.dumps(item, indent=2, sort_keys=True).replace("\n", "\n" + pad)
            sys.stdout.write(("" if first else ",") + "\n" + pad + text)
            first = False
        sys.stdout.write("]" if first else "\n" + pad[:-2] + "]")

    if list(parts) == [""]:
        sys.stdout.write("[")
        items(parts[""], "  ")
        sys.stdout.write("\n")
        return
    sys.stdout.write("{")
    for i, key in enumerate(sorted(parts)):
        sys.stdout.write(("," if i else "") + f"\n  {json.dumps(key)}: [")
        items(parts[key], "    ")
    sys.stdout.write("\n}\n")


def cmd_vehicle_add_many(args: argparse.Namespace) -> int:
    """Register the vehicles of a file (a JSON list, or JSON lines), checked first, then
    inserted in bounded transactions with a progress bar."""
    from tqdm import tqdm

    from director.bulk import BulkConflict, BulkInvalid, BulkRegistration

    items = read_vehicles(Path(args.file))
    d = Director(Path(args.dir), db_url=getattr(args, "db", None))
    bar = tqdm(total=len(items), unit="vehicle", desc="registering", file=sys.stderr, disable=None)
    try:
        done = BulkRegistration(d.fleet).register(items, progress=bar.update)
    except (BulkInvalid, BulkConflict) as e:
        for r in e.refusals:
            print(f"uptane-director: vehicle {r}", file=sys.stderr)
        raise
    finally:
        bar.close()
    skipped = done["skipped"]
    if skipped:
        shown = ", ".join(skipped[:10]) + (", ..." if len(skipped) > 10 else "")
        print(f"skipped {len(skipped)} already registered as in the file: {shown}", file=sys.stderr)
    print(json.dumps({**done, "skipped": len(skipped)}, indent=2, sort_keys=True))
    return 0


#: the largest vehicle file ``add-many`` reads, and the longest line of a JSON-lines one
MAX_VEHICLE_FILE = 256 * 1024 * 1024
MAX_VEHICLE_LINE = 1024 * 1024


def read_vehicles(path: Path) -> list[Any]:
    """The vehicles of a file: a JSON list of what ``POST /api/v1/vehicles`` takes, or
    one such object per line (JSON lines; blank lines skipped)."""
    if path.stat().st_size > MAX_VEHICLE_FILE:
        raise Invalid(f"{path}: over {MAX_VEHICLE_FILE} bytes: split it in several files")
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
        f.seek(0)
        if head.startswith(b"["):
            try:
                doc = json.load(f)
            except ValueError as e:
                raise Invalid(f"{path}: not JSON: {e}") from None
            if not isinstance(doc, list):
                raise Invalid(f"{path}: a JSON list of vehicles, or one vehicle per line")
            return doc
        out = []
        for n, line in enumerate(f, start=1):
            if len(line) > MAX_VEHICLE_LINE:
                raise Invalid(f"{path}:{n}: a line over {MAX_VEHICLE_LINE} bytes")
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError as e:
                    raise Invalid(f"{path}:{n}: not JSON: {e}") from None
        return out


__all__ = ["cmd_vehicle_add_many", "pages", "print_lists", "read_vehicles"]
