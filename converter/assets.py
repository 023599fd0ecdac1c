"""Where the bundled models and data live: the repository's models/ folder, installed as ``converter.bundled``
by a regular install, or read in place from a source checkout or an editable install."""
from __future__ import annotations

from importlib import resources
from importlib.util import find_spec
from pathlib import Path

from .errors import InputError

_CHECKOUT = Path(__file__).resolve().parent.parent / "models"


def bundled_path(name: str) -> Path:
    folder = Path(str(resources.files("converter.bundled"))) if find_spec("converter.bundled") else _CHECKOUT
    path = folder / name
    if not path.is_file():
        raise InputError(f"bundled file {name!r} is missing ({path}); reinstall onnx2snn")
    return path
