"""Fixtures of the time server's tests: see ``time_support.py``."""

from time_support import keys, server

__all__ = ["keys", "server"]
