"""The Image repository in object storage (issue 19): its static layout (``metadata/``,
``targets/DIR/HASH.NAME``, as ``uptane-image-repo publish`` writes it) kept in a bucket
(or any :class:`storage.objects.ObjectStore`), so vehicles, a CDN and the Director read
images and signed metadata from there, and several service nodes share them.

:class:`Mirror` writes what the bucket lacks in the order that keeps every reader
consistent: images first, then versioned metadata (never rewritten: a version's bytes do
not change), the timestamp last. A reader therefore never finds metadata naming a file
that is not there yet. Images are content-addressed: one already there with the right
size is not sent again, and what the bucket holds is listed once, so a sync after a
change sends only what changed. The Image repository service runs a sync after every
publishing upload and in the background (``object_store`` in ``repo.json``);
``uptane-image-repo mirror DIR`` runs one by hand.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from storage.objects import ObjectStore
from uptane.metadata import Targets
from uptane.paths import check_target_path

if TYPE_CHECKING:
    from director.image_repo import ImageRepository


class Mirror:
    """Keeps one object store equal to a repository's static layout."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._known: dict[str, int] | None = None
        #: the bytes last written of each unversioned file (timestamp.*)
        self._latest: dict[str, bytes] = {}
        self._lock = threading.Lock()
        #: objects written by the last :meth:`sync`
        self.last_written = 0

    def _have(self) -> dict[str, int]:
        if self._known is None:
            self._known = dict(self.store.listing())
        return self._known

    def sync(self, repo: ImageRepository) -> int:
        """Write what the store lacks of ``repo``'s current layout; returns how many
        objects were written."""
        return self.apply(self.plan(repo))

    def plan(self, repo: ImageRepository) -> list[Item]:
        """What :meth:`apply` must write, in order, read from ``repo`` now (the caller
        holds the repository's lock; the writing can happen after it lets go: images are
        content-addressed files that never change, metadata bytes are taken here)."""
        with self._lock:
            have = self._have()
            return self._images(repo, have) + self._metadata(repo, have)

    def apply(self, items: list[Item]) -> int:
        """Write ``items`` in order; each one is remembered once written."""
        with self._lock:
            have = self._have()
            for key, src, size in items:
                if isinstance(src, Path):
                    self.store.put_file(key, src)
                else:
                    self.store.put(key, src)
                    if not key.split("/")[-1].split(".", 1)[0].isdigit():
                        self._latest[key] = src
                have[key] = size
            self.last_written = len(items)
            return len(items)

    def _images(self, repo: ImageRepository, have: dict[str, int]) -> list[Item]:
        b = repo.builder
        out: list[Item] = []
        for role in ["targets", *b.delegated]:
            model = b.role(role)
            if not isinstance(model, Targets):
                continue
            for tpath, tf in model.targets.items():
                check_target_path(tpath)
                src = repo.image_path(tf)
                if src is None:
                    continue  # listed but its bytes are not here: publish refuses, we wait
                dirname, sep, base = tpath.rpartition("/")
                for digest in tf.hashes.values():
                    key = f"targets/{dirname}{sep}{digest}.{base}"
                    if have.get(key) != tf.length:
                        out.append((key, src, tf.length))
        return out

    def _metadata(self, repo: ImageRepository, have: dict[str, int]) -> list[Item]:
        b = repo.builder
        out: list[Item] = []
        last: list[Item] = []
        for enc in b.encodings:
            for name, data in b.versioned_files(enc).items():
                key = f"metadata/{name}"
                if not name.split(".", 1)[0].isdigit():
                    if self._latest.get(key) != data:
                        last.append((key, data, len(data)))
                elif key not in have:  # a version's bytes never change
                    out.append((key, data, len(data)))
        return out + last  # the timestamp names what is above: it goes last


#: one object to write: its key, a file (an image) or the bytes, and its size
Item = tuple[str, Path | bytes, int]


__all__ = ["Item", "Mirror"]
