"""The same server as a Ray Serve deployment, for a cluster: each replica builds the same FastAPI app (protocol,
dynamic batching, metrics) around its own sessions, and Ray's HTTP proxy spreads requests over the replicas.

``ray_app(paths, ...)`` returns a bound application for ``serve.run(app, route_prefix="/")``; ``run_on_ray`` is
``onnx2snn serve --ray``. The models travel with the deployment (their bytes, or for a large model its skeleton
and weight arrays, as in ``runtime.distributed``), so replicas on other nodes need no shared file system, only
``onnx2snn[serve]`` installed. Ray is the ``[ray]`` extra (``ray[serve]``), imported only here.
"""
from __future__ import annotations

import gc
import signal
import threading
import time

from .. import external
from ..distributed import connect, import_ray
from ..errors import InputError
from ..format import load_snn
from .models import Limits, check_name, model_name

APP_NAME = "onnx2snn"


def _serve():
    import_ray()
    try:
        from ray import serve
    except ImportError:
        raise InputError("Ray Serve is not installed; pip install 'onnx2snn[ray]' (it brings ray[serve])") from None
    return serve


def ray_app(paths: list, names: list[str] | None = None, timesteps: int | None = None, threads: int = 1,
            limits: Limits = Limits(), replicas: int = 1):
    """A Ray Serve application serving ``paths`` under the Open Inference Protocol, ``replicas`` copies of
    ``threads`` CPUs each. Files are read and checked here, so a bad one fails before anything is deployed."""
    serve = _serve()
    if names is not None and len(names) != len(paths):
        raise InputError(f"{len(names)} names for {len(paths)} models; give one --name per model, in order")
    packed = {}
    for k, path in enumerate(paths):
        name = check_name(names[k] if names else model_name(path))
        if name in packed:
            raise InputError(f"two models are named {name!r}; give distinct names with --name")
        packed[name] = external.pack(load_snn(path))

    def build():  # runs once in each replica
        from .app import create_app
        from .metrics import Metrics
        from .models import ServedModel
        metrics, lock = Metrics(), threading.Lock()
        models = {name: ServedModel(external.unpack(data), name, timesteps, threads, limits, lock, metrics.record_run)
                  for name, data in packed.items()}
        app = create_app(models, metrics, limits.max_body_bytes)
        gc.collect()
        gc.freeze()  # as Server does: collections under load would walk every object loaded so far
        return app

    deployment = serve.deployment(serve.ingress(build)(), name=APP_NAME, num_replicas=replicas,
                                  ray_actor_options={"num_cpus": threads})
    return deployment.bind()


def run_on_ray(paths: list, names: list[str] | None, address: str | None, host: str, port: int, replicas: int,
               timesteps: int | None, threads: int, limits: Limits, say=print) -> None:
    """Deploy on a Ray cluster (a local one when ``address`` is None) and serve until Ctrl-C; then delete the
    deployment, and shut down the cluster if it was started here."""
    if port == 0:
        raise InputError("--port 0 is not supported with --ray: Ray Serve's proxy needs a fixed port")
    app = ray_app(paths, names, timesteps, threads, limits, replicas)
    ray, serve = import_ray(), _serve()
    started = deployed = False
    on_sigterm = signal.getsignal(signal.SIGTERM)
    if not ray.is_initialized():
        if address is None:
            ray.init(include_dashboard=False, log_to_driver=False)
            started = True
        else:
            connect(ray, address)
    if threading.current_thread() is threading.main_thread() and on_sigterm is not None:
        signal.signal(signal.SIGTERM, on_sigterm)   # Ray's own handler aborts the process; ours stops cleanly
    try:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if replicas * threads > cpus:
            raise InputError(f"{replicas} replicas x {threads} threads need {replicas * threads} CPUs; the Ray cluster has {cpus}")
        serve.start(http_options={"host": host, "port": port})
        deployed = True
        serve.run(app, name=APP_NAME, route_prefix="/")
        say(f"serving on Ray Serve ({replicas} replicas x {threads} CPUs) at http://{host}:{port} (Open Inference Protocol v2; "
            f"ready: /v2/health/ready); Ctrl-C stops")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        if deployed:
            serve.delete(APP_NAME)
        if started:
            serve.shutdown()
            ray.shutdown()
