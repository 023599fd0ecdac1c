"""Run the app with uvicorn on one host and port: in the foreground (``onnx2snn serve``) or on a background
thread (tests, notebooks, the load benchmark), after every model is loaded and its kernels are compiled.

The socket is bound and listening before ``serve_forever`` returns control to uvicorn, so a port of 0 takes a
free port (``.port`` says which) and a client that connects early waits in the backlog instead of being refused.

Once the models are loaded, every object then alive (the ONNX graphs, Numba's and FastAPI's type machinery, some
hundred thousand) is moved out of the garbage collector's view (``gc.collect`` then ``gc.freeze``): each request allocates enough
containers to trigger collections, and a full one walked them all, which took most of the event loop's CPU under load.
"""
from __future__ import annotations

import gc
import socket
import threading
import time

import uvicorn

from ..errors import InputError
from .app import create_app
from .metrics import Metrics
from .models import Limits, load_models

START_TIMEOUT_S = 30


class Server:
    """Serve SNN files (paths) under the Open Inference Protocol v2 at ``http://host:port``.

    ``names``: one model name per file (default: the file name without ``.snn.onnx``); ``timesteps``: the
    default T of requests (default: each file's own); ``threads``: Numba threads per run (default: all cores).
    """

    def __init__(self, paths: list, names: list[str] | None = None, host: str = "127.0.0.1", port: int = 8000,
                 timesteps: int | None = None, threads: int | None = None, limits: Limits = Limits(), log_level: str = "warning"):
        self.metrics = Metrics()
        self.limits = limits
        self._socket = _listen(host, port)
        try:
            self.models = load_models(list(paths), names, timesteps, threads, limits, self.metrics.record_run)
        except BaseException:
            self._socket.close()
            raise
        self.app = create_app(self.models, self.metrics, limits.max_body_bytes)
        self.host, self.port = self._socket.getsockname()[:2]
        config = uvicorn.Config(self.app, log_level=log_level, access_log=False, lifespan="off", timeout_graceful_shutdown=10)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        gc.collect()  # garbage now would stay uncollectable once frozen
        gc.freeze()  # see the module docstring

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def serve_forever(self) -> None:
        """Serve until SIGINT/SIGTERM (in the main thread) or ``stop()``; then finish queued requests and close."""
        try:
            self._server.run(sockets=[self._socket])
        except KeyboardInterrupt:  # uvicorn re-raises the signal it stopped on, once it has shut down
            pass
        finally:
            self._close()

    def start(self) -> "Server":
        """Serve on a background thread; return once the server answers."""
        self._thread = threading.Thread(target=self.serve_forever, name="onnx2snn-serve", daemon=True)
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            time.sleep(0.01)
        if not self._server.started:
            raise RuntimeError("the server thread ended before it started; see the log")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(START_TIMEOUT_S)
        else:
            self._close()

    def _close(self) -> None:
        for model in self.models.values():
            model.close()
        self._socket.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _listen(host: str, port: int) -> socket.socket:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InputError(f"port must be an integer from 0 to 65535, got {port!r}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise InputError(f"cannot resolve host {host!r} ({exc.strerror}); give an address such as 127.0.0.1 or 0.0.0.0") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port or --host") from None
    sock.set_inheritable(True)
    return sock
