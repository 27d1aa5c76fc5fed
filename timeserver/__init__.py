"""The OEM's Roughtime time server and a small client (issue 21).

- :mod:`timeserver.keys`: the long-term key (created offline by ``init``) and the
  delegation of an online key for a window of time (``init`` / ``delegate``); ``serve``
  loads only the delegation, never the long-term private key;
- :mod:`timeserver.server`: a UDP server that answers the requests arriving together from
  one Merkle tree and one signature;
- :mod:`timeserver.client`: sends a request with a caller's nonce to one or several servers
  (timeout, retries) and returns the raw responses;
- :mod:`timeserver.cli`: the ``uptane-time-server`` command (``python -m timeserver``).

The wire format and every check live in :mod:`uptane.roughtime` (sans-I/O); this package
only does the sockets, the clock and the key files. See docs/secure-time.md.
"""
