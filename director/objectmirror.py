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
        with self._lock:
            have = self._have()
            written = self._images(repo, have)
            written += self._metadata(repo, have)
            self.last_written = written
            return written

    def _images(self, repo: ImageRepository, have: dict[str, int]) -> int:
        b = repo.builder
        written = 0
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
                    if have.get(key) == tf.length:
                        continue
                    self.store.put_file(key, src)
                    have[key] = tf.length
                    written += 1
        return written

    def _metadata(self, repo: ImageRepository, have: dict[str, int]) -> int:
        b = repo.builder
        written = 0
        last: list[tuple[str, bytes]] = []
        for enc in b.encodings:
            for name, data in b.versioned_files(enc).items():
                key = f"metadata/{name}"
                if name.split(".", 1)[0].isdigit():
                    if key in have:
                        continue  # a version's bytes never change
                    self.store.put(key, data)
                    have[key] = 0
                    written += 1
                else:
                    last.append((key, data))
        for key, data in last:  # the timestamp names what is above: it goes last
            if self._latest.get(key) == data:
                continue
            self.store.put(key, data)
            self._latest[key] = data
            have[key] = 0
            written += 1
        return written


__all__ = ["Mirror"]
