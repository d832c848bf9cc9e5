"""The ASGI app factory: thin routes over the repository, the schemas and the metrics.

Request handling is split in two: the body is read on the event loop (with the size
limit), and everything else, JSON parsing, validation, loading a model and calling it,
runs in a worker thread, so a slow model call never blocks the other connections.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from typing import Any
from urllib.parse import unquote

import numpy as np
import tensorflow as tf
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

import keras_sns
from keras_sns import export
from serving.config import DEFAULT_HOST, DEFAULT_PORT, ServiceSettings
from serving.metrics import Metrics, MetricsMiddleware
from serving.repository import LoadedVersion, ModelNotFound, ModelRepository
from serving.schemas import (
    BadRequest,
    PredictRequest,
    SensitivityReport,
    SensitivityRequest,
    parse_images,
    parse_labels,
    validate,
)

__all__ = ["create_app", "run"]

logger = logging.getLogger(__name__)

_ERROR = {"content": {"application/json": {"schema": {
    "type": "object", "properties": {"error": {"type": "string"}}}}}}
_ERRORS = {400: _ERROR, 404: _ERROR, 413: _ERROR, 422: _ERROR}


def _body_doc(schema) -> dict:
    # Bodies are read and validated by hand (size limit, error format); this only
    # documents them in the OpenAPI schema at /docs.
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": schema.model_json_schema()}}}}


def _name(name: str) -> str:
    try:
        return export.validate_name(name)
    except ValueError as e:
        raise BadRequest(str(e)) from None


def _version(version: str | None) -> int | None:
    if version is None:
        return None
    if not version.isdigit() or not version.isascii():
        raise BadRequest(f"Expected a version number. Received: version={version!r}")
    return int(version)


def _parse_json(body: bytes) -> Any:
    if not body.strip():
        raise BadRequest("Expected a JSON object in the request body. Received: an empty body")
    try:
        return json.loads(body)
    except RecursionError:
        raise BadRequest("Malformed JSON: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise BadRequest(f"Malformed JSON: {e}") from None


def _unwrap_instances(instances: Any) -> Any:
    """Row format: a list of images, or of ``{"images": image}`` objects."""
    if isinstance(instances, list) and instances and any(isinstance(i, dict) for i in instances):
        if not all(isinstance(i, dict) and set(i) == {"images"} for i in instances):
            raise BadRequest(
                "Expected every object in instances to be {\"images\": image}, "
                "the only input of this model."
            )
        return [i["images"] for i in instances]
    return instances


def _unwrap_inputs(inputs: Any) -> Any:
    """Columnar format: a batch of images, or ``{"images": batch}``."""
    if isinstance(inputs, dict):
        if set(inputs) != {"images"}:
            raise BadRequest(
                f"Expected inputs to name the model's only input 'images'. Received: {sorted(inputs)}"
            )
        return inputs["images"]
    return inputs


class _Service:
    """The request handlers proper, run in worker threads."""

    def __init__(self, repository: ModelRepository, settings: ServiceSettings, metrics: Metrics):
        self.repository = repository
        self.settings = settings
        self.metrics = metrics

    def predict(self, body: bytes, name: str, version: int | None, label: str | None) -> dict:
        request = validate(PredictRequest, _parse_json(body))
        if request.signature_name not in (None, export.SERVING_SIGNATURE):
            raise BadRequest(
                f"Only signature_name='{export.SERVING_SIGNATURE}' is served on :predict "
                f"(use /sensitivity for reports). Received: signature_name={request.signature_name!r}"
            )
        if (request.instances is None) == (request.inputs is None):
            raise BadRequest(
                "Expected exactly one of 'instances' (row format) or 'inputs' (columnar format)."
            )
        model = self.repository.get(name, version, label)
        row = request.instances is not None
        images = _unwrap_instances(request.instances) if row else _unwrap_inputs(request.inputs)
        x = parse_images(images, model.input_shape, max_images=self.settings.max_images,
                         field="instances" if row else "inputs")
        outputs = {k: v.numpy() for k, v in model.predict(images=tf.constant(x)).items()}
        self.metrics.images.labels("predict").inc(len(x))
        if row:
            keys = sorted(outputs)
            return {"predictions": [
                {k: outputs[k][i].tolist() for k in keys} for i in range(len(x))
            ]}
        return {"outputs": {k: v.tolist() for k, v in outputs.items()}}

    def sensitivity(self, body: bytes, name: str, version: int | None) -> dict:
        request = validate(SensitivityRequest, _parse_json(body))
        model = self.repository.get(name, version)
        if model.sensitivity is None:
            raise BadRequest(
                f"Model {name!r} version {model.version} has no '{export.SENSITIVITY_SIGNATURE}' "
                "signature; export it with keras_sns.export.", 404
            )
        self._check_attack_limits(model)
        x = parse_images(request.images, model.input_shape,
                         max_images=self.settings.max_sensitivity_images)
        if request.labels is None:
            labels = model.predict(images=tf.constant(x))["classes"].numpy().astype(np.int64)
        else:
            labels = parse_labels(request.labels, len(x), model.num_classes)
        out = {k: v.numpy() for k, v in
               model.sensitivity(images=tf.constant(x), labels=tf.constant(labels)).items()}
        self.metrics.images.labels("sensitivity").inc(len(x))
        report = SensitivityReport(
            model=name,
            version=model.version,
            attack=model.metadata.get("attack"),
            images=[
                {
                    "label": int(labels[i]),
                    "clean_class": int(out["clean_classes"][i]),
                    "adversarial_class": int(out["adversarial_classes"][i]),
                    "flipped": bool(out["clean_classes"][i] != out["adversarial_classes"][i]),
                    "sensitivity_score": float(out["sensitivity_score"][i]),
                }
                for i in range(len(x))
            ],
            layers={
                layer: {
                    "mean_sensitivity": float(out[f"{layer}_mean_sensitivity"]),
                    "top_k_channels": out[f"{layer}_top_k_channels"].tolist(),
                    "top_k_sensitivity": out[f"{layer}_top_k_sensitivity"].tolist(),
                }
                for layer in model.layers
            },
        )
        return report.model_dump()

    def _check_attack_limits(self, model: LoadedVersion) -> None:
        # The attack is fixed in the export's graph; its settings are in the metadata.
        # Single-step attacks (FGSM) record no steps.
        attack = model.metadata.get("attack") or {}
        steps, eps = attack.get("steps", 1), attack.get("eps")
        limits = self.settings
        if not isinstance(steps, int) or steps > limits.max_attack_steps:
            raise BadRequest(
                f"Model {model.name!r} version {model.version} runs {attack.get('name', 'an attack')} "
                f"with steps={steps}; this server allows at most max_attack_steps="
                f"{limits.max_attack_steps}.", 422
            )
        if eps is not None and (not isinstance(eps, (int, float)) or eps > limits.max_attack_eps):
            raise BadRequest(
                f"Model {model.name!r} version {model.version} runs {attack.get('name', 'an attack')} "
                f"with eps={eps}; this server allows at most max_attack_eps={limits.max_attack_eps}.", 422
            )

    def status(self, name: str) -> dict:
        """TF Serving's ``GET /v1/models/{name}`` answer."""
        info = self.repository.describe(name)
        statuses = []
        for v in sorted(info["versions"], reverse=True):
            error = info["failed_versions"].get(str(v))
            available = v in info["loaded_versions"]
            statuses.append({
                "version": str(v),
                "state": "AVAILABLE" if available else "END",
                "status": {"error_code": "UNKNOWN" if error else "OK", "error_message": error or ""},
            })
        return {"model_version_status": statuses}


async def _read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing more than ``limit`` bytes with a 413."""
    declared = request.headers.get("content-length")
    too_big = declared is not None and declared.isdigit() and int(declared) > limit
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        too_big = too_big or size > limit
        if too_big:
            # Keep draining (so that the client can read the 413 instead of a reset
            # connection) unless the upload is absurdly large.
            if size > 8 * limit:
                break
            continue
        chunks.append(chunk)
    if too_big:
        raise BadRequest(f"Request body over the size limit of {limit} bytes.", 413)
    return b"".join(chunks)


def create_app(base_dir: str | os.PathLike, *, settings: ServiceSettings | None = None) -> FastAPI:
    """Build the service's ASGI app for the exports under ``base_dir``.

    Args:
        base_dir: The base directory written by :func:`keras_sns.export.export`
            (``BASE_DIR/NAME/VERSION/``).
        settings: Server-side limits; :class:`serving.ServiceSettings` defaults if None.

    Returns:
        A FastAPI app; serve it with uvicorn (see :func:`run`).

    Example:
        >>> app = create_app("exports", settings=ServiceSettings(max_images=64))  # doctest: +SKIP
    """
    settings = settings or ServiceSettings()
    repository = ModelRepository(
        base_dir,
        poll_interval_s=settings.poll_interval_s,
        max_loaded_versions=settings.max_loaded_versions,
    )
    metrics = Metrics(repository.loaded_count, lambda: repository.load_failures)
    service = _Service(repository, settings, metrics)
    executor = ThreadPoolExecutor(settings.workers, thread_name_prefix="keras-sns-model")

    async def in_worker(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(executor, partial(fn, *args))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        logger.info("Serving %s on devices %s", repository.base_dir,
                    [d.name for d in tf.config.list_logical_devices()])
        await in_worker(partial(repository.refresh, force=True))
        yield
        executor.shutdown(wait=True, cancel_futures=True)

    app = FastAPI(
        title="keras-sns sensitivity-report service",
        version=keras_sns.__version__,
        description="TF-Serving-compatible predictions and neuron-sensitivity reports "
                    "for models exported with keras_sns.export.",
        lifespan=lifespan,
    )
    app.state.repository = repository
    app.state.settings = settings
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(ModelNotFound)
    async def not_found(request: Request, exc: ModelNotFound):
        return JSONResponse({"error": str(exc)}, status_code=404)

    @app.exception_handler(tf.errors.InvalidArgumentError)
    async def invalid_argument(request: Request, exc: tf.errors.InvalidArgumentError):
        return JSONResponse({"error": f"Invalid input for the model: {exc.message}"}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return JSONResponse({"error": f"Invalid request: {exc.errors()}"}, status_code=400)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        # A bug, not a client error: logged with its traceback, answered in the same
        # JSON shape as every other error.
        logger.error("Unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": f"Internal error: {type(exc).__name__}"}, status_code=500)

    @app.get("/healthz", summary="Liveness check")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models", summary="Models and versions under the base directory")
    async def list_models() -> dict:
        return {"base_dir": str(repository.base_dir), "models": await in_worker(repository.snapshot)}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models/{name}", summary="Version status (TF Serving format)", responses=_ERRORS)
    async def model_status(name: str) -> dict:
        return await in_worker(service.status, _name(name))

    async def _predict(request: Request, name: str, version: str | None = None, label: str | None = None):
        name, v = _name(name), _version(version)
        if label is not None:
            _name(label)
        body = await _read_body(request, settings.max_body_bytes)
        return JSONResponse(await in_worker(service.predict, body, name, v, label))

    async def _sensitivity(request: Request, name: str, version: str | None = None):
        name, v = _name(name), _version(version)
        body = await _read_body(request, settings.max_body_bytes)
        return JSONResponse(await in_worker(service.sensitivity, body, name, v))

    predict_doc = {"summary": "Predict (TF Serving REST format)", "responses": _ERRORS,
                   "openapi_extra": _body_doc(PredictRequest)}
    app.post("/v1/models/{name}:predict", **predict_doc)(_predict)
    app.post("/v1/models/{name}/versions/{version}:predict", **predict_doc)(_predict)
    app.post("/v1/models/{name}/labels/{label}:predict", **predict_doc)(_predict)
    sens_doc = {"summary": "Neuron-sensitivity report (clean vs adversarial)",
                "response_model": SensitivityReport, "responses": _ERRORS,
                "openapi_extra": _body_doc(SensitivityRequest)}
    app.post("/v1/models/{name}/sensitivity", **sens_doc)(_sensitivity)
    app.post("/v1/models/{name}/versions/{version}/sensitivity", **sens_doc)(_sensitivity)

    @app.api_route("/v1/models/{rest:path}", methods=["GET", "POST"], include_in_schema=False)
    async def unknown_model_route(request: Request, rest: str):
        # No route above matches a model name holding a path separator, since a name is
        # one path component; such requests land here. The raw (still percent-encoded)
        # path tells an encoded separator in the name ("a%2Fb") from a real one.
        raw = request.scope.get("raw_path", b"").decode("latin-1")
        raw_rest = raw.split("/v1/models/", 1)[1] if "/v1/models/" in raw else rest
        name = unquote(re.split(r"[/:]", raw_rest, maxsplit=1)[0])
        if "/" in name or "\\" in name or ".." in name:
            raise BadRequest(
                f"Model names cannot contain path separators or '..'. Received: name={name!r}"
            )
        raise BadRequest(f"No such route: {request.method} /v1/models/{rest}", 404)

    return app


def run(
    base_dir: str | os.PathLike,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    settings: ServiceSettings | None = None,
    log_level: str = "info",
) -> None:
    """Serve the exports under ``base_dir`` with uvicorn until interrupted.

    Binds 127.0.0.1 unless ``host`` says otherwise: the service has no authentication.
    """
    import uvicorn

    uvicorn.run(create_app(base_dir, settings=settings), host=host, port=port, log_level=log_level)
