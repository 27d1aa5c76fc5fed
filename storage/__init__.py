"""One storage layer for every part: atomic files, capped reads, atomic stores, and the
file-system seam where tests inject power cuts and crashes.

- :mod:`storage.fs`: :class:`FileSystem` (every durable write goes through one; the real
  disk is :data:`LOCAL`) and its write points;
- :mod:`storage.atomic`: :func:`atomic_write`, :func:`atomic_copy`, :func:`write_json`,
  :func:`read_capped`, :func:`read_json`, :func:`dir_lock` and :class:`AtomicStore`;
- :mod:`storage.faults`: :class:`~storage.faults.FaultyFileSystem` with
  :class:`~storage.faults.PowerCut`, :class:`~storage.faults.WritePointCounter` and
  :class:`~storage.faults.KillAt`, for tests and simulators only.

The Director, the Image repository, the Primary and the Secondary all use it; nothing
else in the project opens a file for writing durable state.
"""

from storage.atomic import (
    AtomicStore,
    atomic_copy,
    atomic_write,
    dir_lock,
    read_capped,
    read_json,
    write_json,
)
from storage.fs import LOCAL, File, FileSystem

__all__ = [
    "LOCAL",
    "AtomicStore",
    "File",
    "FileSystem",
    "atomic_copy",
    "atomic_write",
    "dir_lock",
    "read_capped",
    "read_json",
    "write_json",
]
