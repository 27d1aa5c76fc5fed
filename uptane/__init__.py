"""Sans-I/O Uptane core: metadata, keys, encodings, limits, verification and manifests.

Nothing in this package opens a file or a socket or reads a clock: callers pass bytes and
the current time in, and get verified objects or an :mod:`uptane.errors` error out.
"""

# The codecs (uptane.codec: JSON, DER) register themselves with the registry the model
# asks (uptane.encoding.registry) when imported; importing them here, with the package,
# means any use of uptane has them, however it was entered.
from uptane import codec as _codec  # noqa: F401

__version__ = "0.1.0"
