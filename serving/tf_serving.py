"""TF Serving's REST shapes: model status, model metadata and ``:classify``.

Clients written for TensorFlow Serving's REST API call these besides ``:predict``; the
answers here have the JSON shapes TF Serving gives (the protos of
``tensorflow_serving.apis`` printed with ``json_format``, snake_case field names):

* ``GET /v1/models/{name}[/versions/{v}|/labels/{l}]``: a ``GetModelStatusResponse``;
* ``GET /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata``: ``model_spec`` and
  ``metadata.signature_def``, a ``SignatureDefMap`` read from ``saved_model.pb``;
* ``POST /v1/models/{name}[/versions/{v}|/labels/{l}]:classify``: ``examples`` in,
  ``result`` out, one list of ``[label, score]`` pairs per example.

TF Serving classifies only through a signature whose method is
``tensorflow/serving/classify`` taking serialized ``tf.Example``s. Our exports have an
image signature, so ``:classify`` here reads each example's ``images`` feature (the
image as nested lists, or flat like a ``tf.Example`` float list) and answers with the
``serving_default`` probabilities, labels being the class indices as strings.
"""

from __future__ import annotations

import math
from typing import Any

from serving.schemas import BadRequest

__all__ = ["classify_images", "classify_result", "metadata_response", "version_status"]

#: The feature of a ``:classify`` example that holds the image.
IMAGE_FEATURE = "images"


def version_status(version: int, info: dict[str, Any]) -> dict[str, Any]:
    """One ``ModelVersionStatus`` of a model described by ``ModelRepository.describe``.

    A loaded version is ``AVAILABLE`` (with ``DATA_LOSS`` when its files vanished from
    disk: it answers from memory); a version that failed to load is ``END`` with the
    reason; a version on disk that is not loaded is ``END`` and ``OK``.
    """
    key = str(version)
    error = info["failed_versions"].get(key)
    missing = info["files_missing"].get(key)
    if version in info["loaded_versions"]:
        state = "AVAILABLE"
        status = ({"error_code": "DATA_LOSS",
                   "error_message": f"{missing} on disk; answering from the copy in memory"}
                  if missing else {"error_code": "OK", "error_message": ""})
    else:
        state = "END"
        status = ({"error_code": "UNKNOWN", "error_message": error}
                  if error else {"error_code": "OK", "error_message": ""})
    return {"version": key, "state": state, "status": status}


def metadata_response(name: str, version: int, signature_defs: dict[str, Any]) -> dict[str, Any]:
    """TF Serving's ``GetModelMetadataResponse`` as its REST API prints it."""
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": signature_defs},
    }


def classify_images(payload: Any, input_shape: tuple[int, ...]) -> list[Any]:
    """The images of a ``:classify`` request body (already parsed JSON), unchecked.

    Args:
        payload: ``{"signature_name"?, "context"?, "examples": [{"images": ...}, ...]}``.
        input_shape: The model's image shape, to reshape flat feature lists.

    Returns:
        One image (nested lists) per example, for :func:`serving.schemas.parse_images`.

    Raises:
        BadRequest: a missing or non-list ``examples``, an unknown field or feature,
            an example without ``images``, a flat list of the wrong length.
    """
    if not isinstance(payload, dict):
        raise BadRequest(f"Expected a JSON object. Received: {type(payload).__name__}")
    unknown = sorted(set(payload) - {"signature_name", "context", "examples"})
    if unknown:
        raise BadRequest(f"Invalid request: unknown fields {unknown} (expected signature_name, "
                         "context, examples)")
    signature = payload.get("signature_name")
    if signature not in (None, "", "serving_default"):
        raise BadRequest(
            f"Only signature_name='serving_default' is classified. Received: signature_name={signature!r}"
        )
    context = payload.get("context") or {}
    if not isinstance(context, dict):
        raise BadRequest(f"Expected context to be an object of features. Received: {type(context).__name__}")
    examples = payload.get("examples")
    if not isinstance(examples, list):
        raise BadRequest("Expected 'examples': a list of objects {\"images\": image}. "
                         f"Received: {type(examples).__name__ if 'examples' in payload else 'no examples'}")
    size = math.prod(input_shape)
    images = []
    for i, example in enumerate(examples):
        if not isinstance(example, dict):
            raise BadRequest(f"Expected examples[{i}] to be an object of features. "
                             f"Received: {type(example).__name__}")
        features = {**context, **example}
        if set(features) != {IMAGE_FEATURE}:
            raise BadRequest(f"Expected each example to have the one feature {IMAGE_FEATURE!r}. "
                             f"Received: examples[{i}] with {sorted(features)}")
        image = features[IMAGE_FEATURE]
        if (isinstance(image, list) and len(input_shape) > 1 and len(image) == size
                and not isinstance(image[0], list)):
            image = _reshape(image, input_shape)  # a tf.Example-style flat float list
        images.append(image)
    return images


def _reshape(flat: list[Any], shape: tuple[int, ...]) -> list[Any]:
    if len(shape) == 1:
        return flat
    step = math.prod(shape[1:])
    return [_reshape(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def classify_result(probabilities) -> dict[str, Any]:
    """``{"result": [[[label, score], ...], ...]}`` from a ``[batch, classes]`` array."""
    return {"result": [
        [[str(c), float(p)] for c, p in enumerate(row)] for row in probabilities.tolist()
    ]}
