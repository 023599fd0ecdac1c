"""The HTTP side: a FastAPI app speaking the Open Inference Protocol v2 REST API for a set of ``ServedModel``.

Routes: ``GET /v2`` (server metadata), ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/{name}`` (model
metadata), ``/v2/models/{name}/ready``, ``POST /v2/models/{name}/infer`` (also under ``/versions/1``), and
``GET /metrics`` (Prometheus). Every error is the protocol's ``{"error": "..."}`` with a 4xx status for a bad
request and 500 for an internal fault (logged with its traceback); the server keeps serving either way.
"""
from __future__ import annotations

import asyncio
import logging
import time

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from ..errors import Onnx2SnnError
from .codec import HEADER_LENGTH, RequestError, decompress, encode_response, split_body
from .metrics import Metrics
from .models import ServedModel

log = logging.getLogger("onnx2snn.serve")
SMALL_BODY = 256 << 10   # larger bodies are decoded on a worker thread, so the event loop keeps answering
VERSION = "1"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("onnx2snn")
    except PackageNotFoundError:
        return "unknown"


def error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(models: dict[str, ServedModel], metrics: Metrics, max_body_bytes: int) -> FastAPI:
    """The app; ``metrics`` must be the registry the models' batchers report their runs to."""
    app = FastAPI(title="onnx2snn", docs_url=None, redoc_url=None, openapi_url=None)
    server_metadata = {"name": "onnx2snn", "version": _version(), "extensions": ["binary_tensor_data"]}

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if exc.status_code == 404:
            return error(f"no route {request.method} {request.url.path}; the server speaks the Open Inference Protocol v2 "
                         "under /v2 (e.g. /v2/health/ready, /v2/models/{name}/infer) and serves /metrics", 404)
        return error(f"{request.method} {request.url.path}: {exc.detail}", exc.status_code)

    def find(name: str, version: str | None) -> ServedModel:
        model = models.get(name)
        if model is None:
            raise RequestError(f"unknown model {name!r}; models: {', '.join(models) or 'none'}", 404)
        if version is not None and version != VERSION:
            raise RequestError(f"model {name!r} has no version {version!r}; versions: {VERSION}", 404)
        return model

    @app.get("/v2")
    async def metadata():
        return server_metadata

    @app.get("/v2/health/live")
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready():
        ok = all(m.ready() for m in models.values())
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None):
        try:
            return find(name, version).metadata()
        except RequestError as exc:
            return error(str(exc), exc.status)

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None):
        try:
            ok = find(name, version).ready()
        except RequestError as exc:
            return error(str(exc), exc.status)
        return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 503)

    async def infer(request: Request):
        """The hot path, a plain Starlette route: FastAPI's parameter resolution would cost more than the checks."""
        start = time.perf_counter()
        name, version = request.path_params["name"], request.path_params.get("version")
        label = name if name in models else ""   # unknown names would make unbounded label values
        try:
            response = await _infer(find(name, version), request)
        except RequestError as exc:
            response = error(str(exc), exc.status)
        except Onnx2SnnError as exc:  # from the session: bad input it could only see while running
            response = error(" ".join(str(exc).split()), 400)
        except MemoryError:
            response = error("out of memory for this request; send fewer samples or fewer time steps", 503)
        except Exception as exc:  # noqa: BLE001 - an internal fault: answer 500, log it, keep serving
            log.exception("internal fault in %s %s", request.method, request.url.path)
            response = error(f"internal fault ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); see the server log", 500)
        metrics.requests.labels(label, str(response.status_code)).inc()
        if label:
            metrics.latency.labels(label).observe(time.perf_counter() - start)
        return response

    app.add_route("/v2/models/{name}/infer", infer, methods=["POST"])
    app.add_route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"])

    async def _infer(model: ServedModel, request: Request) -> Response:
        body = await _read_body(request, max_body_bytes)
        encoding, header = request.headers.get("content-encoding"), request.headers.get(HEADER_LENGTH)

        def prepare():
            return model.prepare(*split_body(decompress(body, encoding, max_body_bytes), header))
        prepared = prepare() if len(body) <= SMALL_BODY and not encoding else await run_in_threadpool(prepare)
        result = await asyncio.wrap_future(model.batcher.submit(prepared.job))
        content, headers = encode_response(*model.respond(prepared, result))
        return Response(content, status_code=200, headers=headers)

    @app.get("/metrics")
    async def prometheus():
        for model in models.values():
            metrics.queue_depth.labels(model.name).set(model.batcher.queued())
        return Response(metrics.text(), media_type=metrics.content_type)

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past ``limit`` bytes (from Content-Length before reading, else while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"the request body has {declared} bytes; the server's limit is {limit} (--max-body-mb)", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"the request body exceeds the server's limit of {limit} bytes (--max-body-mb)", 413)
        chunks.append(chunk)
    return b"".join(chunks)

