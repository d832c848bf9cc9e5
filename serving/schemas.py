"""Request and response schemas, and the checks that turn JSON into model inputs.

Every check raises :class:`BadRequest` with a message that names the field, what was
expected and what was received; the app turns it into a 4xx ``{"error": ...}``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "BadRequest",
    "ImageReport",
    "LayerReport",
    "PredictRequest",
    "SensitivityReport",
    "SensitivityRequest",
    "parse_images",
    "parse_labels",
    "validate",
]


class BadRequest(Exception):
    """A client error: the service answers ``status`` with ``{"error": message}``.

    Args:
        message: What was wrong, naming the field or limit and the value received.
        status: The HTTP status (4xx, or 503 for a full queue).
        headers: Extra response headers (``Retry-After``, ``Connection: close``).
    """

    def __init__(self, message: str, status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.headers = headers


class PredictRequest(BaseModel):
    """TF Serving's REST predict request: ``instances`` (row) or ``inputs`` (columnar).

    ``instances`` is a list of images (or of ``{"images": image}`` objects); ``inputs``
    is a batch of images (or ``{"images": batch}``). Images are float arrays of the
    model's input shape with values in [0, 1].
    """

    model_config = ConfigDict(extra="forbid")
    signature_name: str | None = Field(
        default=None, description="'serving_default' (the default) or 'sensitivity' (columnar format)."
    )
    instances: Any = Field(default=None, description="Row format: a list of images.")
    inputs: Any = Field(default=None, description="Columnar format: a batch of images.")


class SensitivityRequest(BaseModel):
    """A batch of images in [0, 1] and optional integer labels (default: predictions)."""

    model_config = ConfigDict(extra="forbid")
    images: Any = Field(description="A batch of images of the model's input shape, values in [0, 1].")
    labels: list[Any] | None = Field(
        default=None, description="One integer class per image; the clean predictions if omitted."
    )


class LayerReport(BaseModel):
    """Neuron sensitivity of one layer over the request's images."""

    mean_sensitivity: float = Field(description="Eq. 1 averaged over the layer's channels.")
    top_k_channels: list[int] = Field(
        description="The k most sensitive channels (eq. 2), most sensitive first."
    )
    top_k_sensitivity: list[float] = Field(description="Their neuron sensitivities.")


class ImageReport(BaseModel):
    """Clean vs adversarial prediction of one image."""

    label: int
    clean_class: int
    adversarial_class: int
    flipped: bool = Field(description="Whether the attack changed the prediction.")
    sensitivity_score: float = Field(
        description="The activation shift under the export's attack: mean over the layers, "
                    "channels and positions of |F(x) - F(x')|. A per-image instability "
                    "measure, not an adversarial-example detector (docs/serving.md, section 4)."
    )


class SensitivityReport(BaseModel):
    """The answer of ``POST /v1/models/{name}/sensitivity``."""

    model: str
    version: int
    attack: dict[str, Any] | None = Field(description="The attack the export runs (name and settings).")
    images: list[ImageReport]
    layers: dict[str, LayerReport]


def validate(schema: type[BaseModel], payload: Any) -> BaseModel:
    """Validate a parsed JSON body against ``schema``, as a :class:`BadRequest`."""
    if not isinstance(payload, dict):
        raise BadRequest(f"Expected a JSON object. Received: {type(payload).__name__}")
    try:
        return schema.model_validate(payload)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in e.errors()
        )
        raise BadRequest(f"Invalid request: {problems}") from None


def parse_images(value: Any, input_shape: tuple[int, ...], *, max_images: int,
                 field: str = "images", may_hold_booleans: bool = True) -> np.ndarray:
    """Turn a JSON batch of images into a float32 array, checking everything.

    Args:
        value: Nested lists, shape ``[batch, *input_shape]``.
        input_shape: The model's image shape, e.g. ``(28, 28, 1)``.
        max_images: Largest batch accepted (413 above it).
        field: The field name used in error messages.
        may_hold_booleans: False when the caller knows that no boolean can be among the
            values (its JSON text has no ``true``/``false``), which skips a scan that
            costs as much as the conversion itself.

    Raises:
        BadRequest: ragged or wrongly shaped arrays, non-numbers (strings, booleans,
            null, also a single boolean among numbers), an empty batch, too many
            images (413), values outside [0, 1] (checked before the float32 cast, so
            1.00000001 is refused), NaN or infinity.

    Example:
        >>> parse_images([[[[0.5]]]], (1, 1, 1), max_images=4).shape
        (1, 1, 1, 1)
    """
    if not isinstance(value, list):
        raise BadRequest(f"Expected {field} to be a list of images. Received: {type(value).__name__}")
    if len(value) > max_images:
        raise BadRequest(
            f"Too many images: {len(value)} in {field}, at most {max_images} per request.", 413
        )
    if not value:
        raise BadRequest(f"Expected at least one image in {field}. Received: an empty list")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        raise BadRequest(
            f"Expected {field} to be a regular array of shape [batch, "
            f"{', '.join(map(str, input_shape))}]. Received: nested lists of unequal lengths"
        ) from None
    if arr.dtype.kind not in "iuf":
        kinds = {"b": "booleans", "U": "strings", "O": "null or mixed values"}
        kind = kinds.get(arr.dtype.kind, arr.dtype.name)
        raise BadRequest(f"Expected {field} to hold numbers. Received: {kind}")
    want = (len(value), *input_shape)
    if arr.shape != want:
        raise BadRequest(
            f"Expected {field} of shape [batch, {', '.join(map(str, input_shape))}] "
            f"(here {list(want)}). Received: shape {list(arr.shape)}"
        )
    # NumPy turns a boolean among numbers into 1.0 or 0.0; only the Python objects tell.
    if may_hold_booleans and bool in set(map(type, np.asarray(value, dtype=object).ravel())):
        raise BadRequest(f"Expected {field} to hold numbers. Received: a boolean among them")
    if not np.isfinite(arr).all():
        raise BadRequest(f"Expected finite values in {field}. Received: NaN or infinity")
    # Checked at the precision received: 1.00000001 would round to 1.0 in float32.
    lo, hi = arr.min(), arr.max()
    if lo < 0 or hi > 1:
        raise BadRequest(
            f"Expected {field} values in [0, 1] (scale 0..255 images by 1/255). "
            f"Received: min={float(lo)!r}, max={float(hi)!r}"
        )
    return arr.astype(np.float32)


def parse_labels(value: list[Any], n: int, num_classes: int) -> np.ndarray:
    """Check integer class labels, one per image, and return them as int64."""
    if len(value) != n:
        raise BadRequest(f"Expected {n} labels, one per image. Received: {len(value)} labels")
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < num_classes:
            shown = v if isinstance(v, (int, float, str, bool)) or v is None else type(v).__name__
            raise BadRequest(
                f"Expected labels to be integers in [0, {num_classes - 1}]. "
                f"Received: labels[{i}]={shown!r}"
            )
    return np.asarray(value, dtype=np.int64)

