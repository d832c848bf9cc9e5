"""The sensitivity-report HTTP service: TF-Serving-compatible predictions and reports.

The service serves the SavedModels that :func:`keras_sns.export.export` writes under a
base directory (``BASE_DIR/NAME/VERSION/``), the same layout TensorFlow Serving reads:

* ``GET /healthz``, ``GET /v1/models``, ``GET /v1/models/{name}`` (version status);
* ``POST /v1/models/{name}[/versions/{v}|/labels/{label}]:predict`` in TF Serving's
  REST format (``instances`` or ``inputs`` in, ``predictions`` or ``outputs`` out,
  errors as ``{"error": ...}``);
* ``POST /v1/models/{name}[/versions/{v}]/sensitivity``: clean vs adversarial
  predictions, per-layer mean neuron sensitivity and top-k sensitive channels, and a
  sensitivity score per image, from the export's ``sensitivity`` signature;
* ``GET /metrics`` (Prometheus) and ``GET /docs`` (OpenAPI).

Example:
    >>> import uvicorn
    >>> from serving import create_app
    >>> uvicorn.run(create_app("exports"), host="127.0.0.1", port=8500)  # doctest: +SKIP

It imports the library (``keras_sns``), never its command line.
"""

from serving.app import create_app, run
from serving.config import ServiceSettings

__all__ = ["ServiceSettings", "create_app", "run"]
