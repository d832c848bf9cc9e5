"""The ASGI app factory: thin routes over the repository, the limits and the metrics.

A model request goes through these steps, each bounded (see :class:`ServiceSettings`):

1. the path is checked (name, version, label) and the model version resolved, so an
   unknown model is a 404 before any body is read;
2. the body is read on the event loop under the size, JSON-structure, memory and time
   limits (:mod:`serving.body`);
3. the request waits in its lane's bounded queue for a worker thread (503 when full;
   dropped unrun if its client disconnects meanwhile, :mod:`serving.admission`);
4. in the worker: JSON parsing, validation and the model call.

Connection-level limits (connection cap, header timeout) are in :mod:`serving.protocol`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote

import numpy as np
import tensorflow as tf
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

import keras_sns
from keras_sns import export
from serving import tf_serving
from serving.admission import Lane, wait_for_disconnect
from serving.body import CLIENT_GONE_STATUS, BufferPool, ClientGone, JsonBudget, limited_body
from serving.config import DEFAULT_HOST, DEFAULT_PORT, ServiceSettings
from serving.hosts import TrustedHostMiddleware
from serving.metrics import Metrics, MetricsMiddleware
from serving.protocol import uvicorn_config
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
_ERRORS = {400: _ERROR, 404: _ERROR, 408: _ERROR, 413: _ERROR, 415: _ERROR, 422: _ERROR,
           503: _ERROR}
# TF Serving's version numbers are int64.
_MAX_VERSION = 2**63 - 1


def _body_doc(schema) -> dict:
    # Bodies are read and validated by hand (limits, error format); this only
    # documents them in the OpenAPI schema at /docs.
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": schema.model_json_schema()}}}}


_CLASSIFY_DOC = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object",
    "properties": {
        "signature_name": {"type": "string"},
        "context": {"type": "object"},
        "examples": {"type": "array", "items": {"type": "object", "properties": {
            "images": {"description": "One image, nested or flat, values in [0, 1]."}}}},
    },
    "required": ["examples"],
}}}}}


def _name(name: str, what: str = "name") -> str:
    try:
        return export.validate_name(name)
    except ValueError as e:
        raise BadRequest(str(e).replace("name=", f"{what}=")) from None


def _version(version: str | None) -> int | None:
    if version is None:
        return None
    # Checked before int(): Python refuses to convert more than 4300 digits.
    if not (version.isascii() and version.isdigit() and len(version) <= 19) \
            or not 1 <= int(version) <= _MAX_VERSION:
        shown = version if len(version) <= 40 else f"{version[:40]}... ({len(version)} characters)"
        raise BadRequest(f"Expected a version number in [1, 2^63 - 1]. Received: version={shown!r}")
    return int(version)


def _parse_json(body: bytes) -> Any:
    if not body.strip():
        raise BadRequest("Expected a JSON object in the request body. Received: an empty body")
    try:
        return json.loads(body)
    except RecursionError:
        raise BadRequest("Malformed JSON: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, the int-digits limit
        raise BadRequest(f"Malformed JSON: {str(e)[:200]}") from None


def _may_hold_booleans(body: bytes) -> bool:
    # JSON has booleans only as these literals; without them no scan is needed.
    return b"true" in body or b"false" in body


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
    """The request handlers proper, run in worker threads on a resolved model version."""

    def __init__(self, repository: ModelRepository, settings: ServiceSettings, metrics: Metrics):
        self.repository = repository
        self.settings = settings
        self.metrics = metrics

    def predict(self, body: bytes, model: LoadedVersion) -> dict:
        request = validate(PredictRequest, _parse_json(body))
        signatures = (export.SERVING_SIGNATURE, export.SENSITIVITY_SIGNATURE)
        if request.signature_name not in (None, *signatures):
            raise BadRequest(
                f"Expected signature_name in {list(signatures)}. "
                f"Received: signature_name={request.signature_name!r}", 404
            )
        if request.signature_name == export.SENSITIVITY_SIGNATURE:
            return self.predict_sensitivity(request, body, model)
        if (request.instances is None) == (request.inputs is None):
            raise BadRequest(
                "Expected exactly one of 'instances' (row format) or 'inputs' (columnar format)."
            )
        row = request.instances is not None
        images = _unwrap_instances(request.instances) if row else _unwrap_inputs(request.inputs)
        x = parse_images(images, model.input_shape, max_images=self.settings.max_images,
                         field="instances" if row else "inputs",
                         may_hold_booleans=_may_hold_booleans(body))
        outputs = {k: v.numpy() for k, v in model.predict(images=tf.constant(x)).items()}
        self.metrics.images.labels("predict").inc(len(x))
        if row:
            keys = sorted(outputs)
            return {"predictions": [
                {k: outputs[k][i].tolist() for k in keys} for i in range(len(x))
            ]}
        return {"outputs": {k: v.tolist() for k, v in outputs.items()}}

    def predict_sensitivity(self, request: PredictRequest, body: bytes,
                            model: LoadedVersion) -> dict:
        """``:predict`` with ``signature_name="sensitivity"``, as TF Serving runs it.

        Columnar format only: ``{"inputs": {"images": batch, "labels": [...]}}`` gives
        ``{"outputs": {name: value}}``. TF Serving refuses the row format for this
        signature too, because its per-layer outputs have no batch dimension. The
        service's limits on reports apply (image count, attack steps).
        """
        self.check_sensitivity(model)
        if request.instances is not None or not isinstance(request.inputs, dict):
            raise BadRequest(
                f"The '{export.SENSITIVITY_SIGNATURE}' signature takes the columnar format: "
                "{\"signature_name\": \"sensitivity\", \"inputs\": {\"images\": [...], "
                "\"labels\": [...]}}. (Its per-layer outputs have no batch dimension, so the "
                "row format 'instances' cannot hold them; TF Serving refuses it as well.)"
            )
        if set(request.inputs) != {"images", "labels"}:
            raise BadRequest("Expected inputs to name the signature's inputs 'images' and "
                             f"'labels'. Received: {sorted(request.inputs)}")
        x = parse_images(request.inputs["images"], model.input_shape,
                         max_images=self.settings.max_sensitivity_images, field="inputs.images",
                         may_hold_booleans=_may_hold_booleans(body))
        labels = request.inputs["labels"]
        if not isinstance(labels, list):
            raise BadRequest(f"Expected inputs.labels to be a list of integers. "
                             f"Received: {type(labels).__name__}")
        labels = parse_labels(labels, len(x), model.num_classes)
        out = model.sensitivity(images=tf.constant(x), labels=tf.constant(labels))
        self.metrics.images.labels("sensitivity").inc(len(x))
        return {"outputs": {k: v.numpy().tolist() for k, v in out.items()}}

    def classify(self, body: bytes, model: LoadedVersion) -> dict:
        images = tf_serving.classify_images(_parse_json(body), model.input_shape)
        x = parse_images(images, model.input_shape, max_images=self.settings.max_images,
                         field="examples", may_hold_booleans=_may_hold_booleans(body))
        probabilities = model.predict(images=tf.constant(x))["probabilities"].numpy()
        self.metrics.images.labels("classify").inc(len(x))
        return tf_serving.classify_result(probabilities)

    def sensitivity(self, body: bytes, model: LoadedVersion) -> dict:
        request = validate(SensitivityRequest, _parse_json(body))
        x = parse_images(request.images, model.input_shape,
                         max_images=self.settings.max_sensitivity_images,
                         may_hold_booleans=_may_hold_booleans(body))
        if request.labels is None:
            labels = model.predict(images=tf.constant(x))["classes"].numpy().astype(np.int64)
        else:
            labels = parse_labels(request.labels, len(x), model.num_classes)
        out = {k: v.numpy() for k, v in
               model.sensitivity(images=tf.constant(x), labels=tf.constant(labels)).items()}
        self.metrics.images.labels("sensitivity").inc(len(x))
        report = SensitivityReport(
            model=model.name,
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

    def check_sensitivity(self, model: LoadedVersion) -> None:
        """404 without a sensitivity signature, 422 for an attack over the limits."""
        if model.sensitivity is None:
            raise BadRequest(
                f"Model {model.name!r} version {model.version} has no "
                f"'{export.SENSITIVITY_SIGNATURE}' signature; export it with keras_sns.export.", 404
            )
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

    def status(self, name: str, version: int | None = None, label: str | None = None) -> dict:
        """TF Serving's ``GET /v1/models/{name}[/versions/{v}|/labels/{l}]`` answer."""
        info = self.repository.describe(name)
        if version is None and label is None:
            versions = sorted(info["versions"], reverse=True)
        else:
            versions = [self.repository.resolve(name, version, label)]
        return {"model_version_status": [tf_serving.version_status(v, info) for v in versions]}


def create_app(base_dir: str | os.PathLike, *, settings: ServiceSettings | None = None):
    """Build the service's ASGI app for the exports under ``base_dir``.

    Args:
        base_dir: The base directory written by :func:`keras_sns.export.export`
            (``BASE_DIR/NAME/VERSION/``).
        settings: Server-side limits; :class:`serving.ServiceSettings` defaults if None.

    Returns:
        A FastAPI app. Serve it with :func:`run`, or with uvicorn through
        :func:`serving.uvicorn_config`, which adds the connection limits.

    Example:
        >>> app = create_app("exports", settings=ServiceSettings(max_images=64))  # doctest: +SKIP
    """
    settings = settings or ServiceSettings()
    repository = ModelRepository(
        base_dir,
        poll_interval_s=settings.poll_interval_s,
        max_loaded_versions=settings.max_loaded_versions,
    )
    lanes = {
        "predict": Lane("predict", settings.workers, settings.max_queue, settings.retry_after_s),
        "sensitivity": Lane("sensitivity", settings.report_workers, settings.max_report_queue,
                            settings.retry_after_s),
    }
    metrics = Metrics(repository.loaded_count, lambda: repository.load_failures, lanes.values)
    service = _Service(repository, settings, metrics)
    pool = BufferPool(settings.max_buffered_bytes)

    @asynccontextmanager
    async def lifespan(app):
        logger.info("Serving %s on devices %s", repository.base_dir,
                    [d.name for d in tf.config.list_logical_devices()])
        await asyncio.to_thread(repository.start)
        yield
        repository.close()
        for lane in lanes.values():
            lane.shutdown()

    # Swagger UI and ReDoc come from the fastapi-offline package, served from this
    # process: /docs works with no network and loads nothing from a CDN.
    app = FastAPIOffline(
        title="keras-sns sensitivity-report service",
        version=keras_sns.__version__,
        description="TF-Serving-compatible predictions and neuron-sensitivity reports "
                    "for models exported with keras_sns.export.",
        lifespan=lifespan,
    )
    app.state.repository = repository
    app.state.settings = settings
    app.state.metrics = metrics
    # The last added is the outermost: metrics see every answer, the host check too.
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts,
                       exempt=("/healthz",))
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest):
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, exc: ClientGone):
        # Nobody to answer: the status only reaches the metrics.
        return Response(status_code=CLIENT_GONE_STATUS)

    @app.exception_handler(ModelNotFound)
    async def not_found(request: Request, exc: ModelNotFound):
        return JSONResponse({"error": str(exc)}, status_code=404)

    @app.exception_handler(tf.errors.InvalidArgumentError)
    async def invalid_argument(request: Request, exc: tf.errors.InvalidArgumentError):
        first = (exc.message.strip().splitlines() or ["invalid argument"])[0][:200]
        return JSONResponse({"error": f"Invalid input for the model: {first}"}, status_code=400)

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

    async def resolve(name: str, version: str | None, label: str | None) -> LoadedVersion:
        name, v = _name(name), _version(version)
        if label is not None:
            _name(label, "label")
        # A version not in memory yet is loaded here, off the event loop.
        return await asyncio.to_thread(repository.get, name, v, label)

    async def model_call(request: Request, lane, fn, model: LoadedVersion, max_images: int):
        """Read the body within its limits, then run ``fn(body, model)`` on a lane.

        ``lane`` is a :class:`Lane`, or a function of the body that picks one.
        """
        budget = JsonBudget.for_images(model.input_shape, max_images)
        async with limited_body(request, max_bytes=settings.max_body_bytes, budget=budget, pool=pool,
                                timeout_s=settings.body_timeout_s,
                                retry_after_s=settings.retry_after_s) as body:
            if await request.is_disconnected():  # sent its body and left: nothing to run
                lane.abandoned += 1
                raise ClientGone()
            if not isinstance(lane, Lane):
                lane = lane(body)
            result = await lane.run(fn, body, model,
                                    disconnected=lambda: wait_for_disconnect(request.receive))
        return JSONResponse(result)

    # ------------------------------------------------------------------ routes

    @app.get("/healthz", summary="Liveness check")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models", summary="Models and versions under the base directory")
    async def list_models() -> dict:
        return repository.snapshot()

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def _status(name: str, version: str | None = None, label: str | None = None) -> dict:
        name, v = _name(name), _version(version)
        if label is not None:
            _name(label, "label")
        return service.status(name, v, label)

    async def _metadata(name: str, version: str | None = None, label: str | None = None) -> dict:
        model = await resolve(name, version, label)
        return tf_serving.metadata_response(model.name, model.version, model.signature_defs)

    async def _predict(request: Request, name: str, version: str | None = None,
                       label: str | None = None):
        model = await resolve(name, version, label)
        # A predict on the sensitivity signature runs an attack: it queues with the reports.
        # (A cheap look at the bytes; the worker checks the parsed request properly.)
        return await model_call(request, lambda body: lanes["sensitivity"]
                                if b'"sensitivity"' in body else lanes["predict"],
                                service.predict, model, settings.max_images)

    async def _classify(request: Request, name: str, version: str | None = None,
                        label: str | None = None):
        model = await resolve(name, version, label)
        return await model_call(request, lanes["predict"], service.classify, model, settings.max_images)

    async def _sensitivity(request: Request, name: str, version: str | None = None,
                           label: str | None = None):
        model = await resolve(name, version, label)
        service.check_sensitivity(model)
        return await model_call(request, lanes["sensitivity"], service.sensitivity, model,
                                settings.max_sensitivity_images)

    prefixes = ["/v1/models/{name}", "/v1/models/{name}/versions/{version}",
                "/v1/models/{name}/labels/{label}"]
    for prefix in prefixes:
        app.get(prefix, summary="Version status (TF Serving's GetModelStatusResponse)",
                responses=_ERRORS)(_status)
        app.get(prefix + "/metadata", summary="Signature definitions (TF Serving's "
                "GetModelMetadataResponse)", responses=_ERRORS)(_metadata)
        app.post(prefix + ":predict", summary="Predict (TF Serving REST format)", responses=_ERRORS,
                 openapi_extra=_body_doc(PredictRequest))(_predict)
        app.post(prefix + ":classify", summary="Classify (TF Serving REST format): class "
                 "probabilities per example", responses=_ERRORS, openapi_extra=_CLASSIFY_DOC)(_classify)
        app.post(prefix + "/sensitivity", summary="Neuron-sensitivity report (clean vs adversarial)",
                 response_model=SensitivityReport, responses=_ERRORS,
                 openapi_extra=_body_doc(SensitivityRequest))(_sensitivity)

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
                f"Model names cannot contain path separators or '..'. Received: name={name[:100]!r}"
            )
        if rest.endswith(":regress"):
            raise BadRequest("Regression is not served: these models are classifiers "
                             "(use :classify or :predict).", 404)
        raise BadRequest(f"No such route: {request.method} /v1/models/{rest[:200]}", 404)

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
    A specific ``host`` address is added to the allowed ``Host`` names; when binding
    every interface (``0.0.0.0``, ``::``), list the names clients use in
    ``settings.allowed_hosts``.
    """
    import uvicorn

    settings = settings or ServiceSettings()
    if "*" not in settings.allowed_hosts:
        if host in ("0.0.0.0", "::", ""):
            logger.warning("Binding every interface: only requests with Host %s are answered; "
                           "list the names clients use in ServiceSettings.allowed_hosts.",
                           list(settings.allowed_hosts))
        elif host.lower() not in settings.allowed_hosts:
            settings = dataclasses.replace(settings, allowed_hosts=(*settings.allowed_hosts, host))
    app = create_app(base_dir, settings=settings)
    uvicorn.Server(uvicorn_config(app, host=host, port=port, log_level=log_level)).run()
