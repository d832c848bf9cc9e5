"""The sensitivity-report HTTP service: TF-Serving-compatible predictions and reports.

The service serves the SavedModels that :func:`keras_sns.export.export` writes under a
base directory (``BASE_DIR/NAME/VERSION/``), the same layout TensorFlow Serving reads:

* ``GET /healthz``, ``GET /v1/models``;
* TF Serving's REST API under ``/v1/models/{name}[/versions/{v}|/labels/{label}]``:
  version status (``GET``), ``/metadata`` (signature definitions), ``:predict``
  (``instances`` or ``inputs`` in, ``predictions`` or ``outputs`` out) and ``:classify``,
  errors as ``{"error": ...}``;
* ``POST /v1/models/{name}[/versions/{v}|/labels/{label}]/sensitivity``: clean vs
  adversarial predictions, per-layer mean neuron sensitivity and top-k sensitive
  channels, and a sensitivity score per image, from the export's ``sensitivity``
  signature;
* ``GET /metrics`` (Prometheus) and ``GET /docs``, ``/redoc`` (OpenAPI, served offline).

Every request's work is bounded (:class:`ServiceSettings`); bad input gets a 4xx JSON
error, a full queue 503 with ``Retry-After``.

Example:
    >>> import uvicorn
    >>> from serving import create_app, uvicorn_config
    >>> app = create_app("exports")                                         # doctest: +SKIP
    >>> uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=8500)).run()  # doctest: +SKIP

It imports the library (``keras_sns``), never its command line.
"""

from serving.app import create_app, run
from serving.config import ServiceSettings
from serving.protocol import uvicorn_config

__all__ = ["ServiceSettings", "create_app", "run", "uvicorn_config"]
