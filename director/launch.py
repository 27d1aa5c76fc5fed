"""Console-script entry points of the backend that start with one clear line when the
``[director]`` extra is missing, instead of a traceback (issue 13, clean installs).

``uptane-director`` and ``uptane-image-repo`` need FastAPI, uvicorn, SQLAlchemy and the
other server packages; a plain ``pip install uptane-stack`` does not bring them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import import_module

#: the project's own packages: a missing one is a broken install, not a missing extra
_OURS = {"uptane", "storage", "keystore", "director", "primary", "secondary", "hardware"}


def _entry(command: str, module: str) -> Callable[[], int]:
    try:
        main: Callable[[], int] = import_module(module).main
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] in _OURS:
            raise
        sys.exit(
            f"{command}: needs the [director] extra (missing {e.name}): "
            "pip install 'uptane-stack[director]'"
        )
    return main


def director() -> int:
    """``uptane-director``."""
    return _entry("uptane-director", "director.director_cli")()


def image_repo() -> int:
    """``uptane-image-repo``."""
    return _entry("uptane-image-repo", "director.image_cli")()
