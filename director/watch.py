"""Noticing offline changes without a restart: a file's identity (inode, size, mtime),
read with one ``stat`` whenever asked.

The offline commands (``sign``, ``delegate``, ``rotate-root``, ``token add``,
``rotate-key``) write their files atomically (a new file renamed over the old one), so a
change always shows as a new inode or mtime. The services ask on the requests that depend
on the file (an upload, a token check) and from a background task twice a second, so a
change is live within a second; polling a ``stat`` needs no inotify and works on every
filesystem.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


class FileWatch:
    """Whether ``path`` changed since the last time :meth:`changed` said so."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seen = self._identity()

    def _identity(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def changed(self) -> bool:
        """True once per change (one ``stat``); the caller then reloads the file."""
        now = self._identity()
        with self._lock:
            if now == self._seen:
                return False
            self._seen = now
            return True


__all__ = ["FileWatch"]
