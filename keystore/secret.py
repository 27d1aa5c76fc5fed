"""Where a passphrase or a PIN comes from: an environment variable named in the
configuration, or a prompt on the terminal. Never from a command-line argument (any user
of the machine can read another's command line in ``/proc``)."""

from __future__ import annotations

import getpass
import os
import sys
from dataclasses import dataclass, field

#: the most bytes a passphrase or PIN may have (a PIN file or variable is not a data file)
MAX_SECRET = 1024


class SecretUnavailable(Exception):
    """No passphrase or PIN could be had: the variable is unset and there is no terminal."""


@dataclass
class Secret:
    """A passphrase or PIN, asked for once: from the environment variable ``env`` when it
    is set, else from a prompt when standard input is a terminal."""

    what: str
    env: str | None = None
    prompt: bool = True
    _value: bytes | None = field(default=None, repr=False)

    def get(self) -> bytes:
        if self._value is None:
            self._value = self._fetch()
        return self._value

    def _fetch(self) -> bytes:
        if self.env:
            value = os.environ.get(self.env)
            if value is not None:
                return _checked(value, f"environment variable {self.env}")
        if self.prompt and sys.stdin is not None and sys.stdin.isatty():
            return _checked(getpass.getpass(f"{self.what}: "), "the prompt")
        where = f"set the environment variable {self.env}" if self.env else "name a variable"
        raise SecretUnavailable(
            f"no {self.what}: {where} (in the service's environment), or run the command"
            " on a terminal to be asked"
        )


def _checked(value: str, where: str) -> bytes:
    data = value.encode("utf-8")
    if not data or len(data) > MAX_SECRET:
        raise SecretUnavailable(f"the secret from {where} is empty or over {MAX_SECRET} bytes")
    return data


def from_file(path: str) -> bytes:
    """A PIN kept in a file (RFC 7512 ``pin-source=file:...``), without its line end."""
    with open(path, "rb") as f:
        data = f.read(MAX_SECRET + 1)
    data = data.rstrip(b"\r\n")
    if not data or len(data) > MAX_SECRET:
        raise SecretUnavailable(f"the PIN file {path} is empty or over {MAX_SECRET} bytes")
    return data


__all__ = ["MAX_SECRET", "Secret", "SecretUnavailable", "from_file"]
