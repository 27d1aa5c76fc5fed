"""Sans-I/O Uptane core: metadata, keys, encodings, limits, verification and manifests.

Nothing in this package opens a file or a socket or reads a clock: callers pass bytes and
the current time in, and get verified objects or an :mod:`uptane.errors` error out.
"""

__version__ = "0.1.0"
