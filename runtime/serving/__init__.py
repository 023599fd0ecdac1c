"""Serve SNN files over the Open Inference Protocol (KServe v2 REST): ``onnx2snn serve``, ``Server``, and a Ray
Serve deployment (``ray_app``) speaking the same protocol.

The server stack (FastAPI, uvicorn, prometheus_client) is the ``[serve]`` extra: nothing here imports it until a
server is built, so ``import runtime`` and ``import runtime.serving`` work without it.
"""
from __future__ import annotations

import importlib

from ..errors import InputError

STACK = ("fastapi", "uvicorn", "prometheus_client")
INSTALL_HINT = 'pip install "onnx2snn[serve]"'
_LAZY = {"Server": "server", "create_app": "app", "Metrics": "metrics", "ray_app": "ray_serve",
         "ServedModel": "models", "Limits": "models", "load_models": "models"}


def require() -> None:
    """Raise a one-line InputError naming the extra to install when the server stack is missing."""
    missing = []
    for name in STACK:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise InputError(f"serving needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed; {INSTALL_HINT}")


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'runtime.serving' has no attribute {name!r}")
    if _LAZY[name] != "models":
        require()
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)


__all__ = ["require", "INSTALL_HINT", *_LAZY]
