"""The :class:`Attack` base class and the argument checks shared by every attack.

An attack is an immutable bag of hyperparameters (keyword-only, echoed by
``get_config``) and one method, ``_attack``, written in TensorFlow ops. The base class
owns everything around it: validating the inputs at the public boundary, turning
numpy into tensors, deriving ``get_config`` from the ``__init__`` signature, and
compiling ``_attack`` once per (model, hyperparameters) with
``tf.function(reduce_retracing=True)`` so that repeated calls do not retrace.
"""

from __future__ import annotations

import abc
import functools
import inspect
import logging
import math
import numbers
import weakref
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

__all__ = ["DEFAULT_EPS", "NORMS", "Attack"]

logger = logging.getLogger(__name__)

#: The distance measures of the attacks that take ``norm=``.
NORMS = ("linf", "l2")
#: The radius such an attack takes when ``eps`` is None: the SNS paper's eps=8 (L-inf)
#: and eps=80 (L2) on the 0..255 scale, the defaults of ``pgd_linf`` and ``pgd_l2``.
DEFAULT_EPS = MappingProxyType({"linf": 8 / 255, "l2": 80 / 255})


class Attack(abc.ABC):
    """Base class of all attacks: ``attack(model, x, y=None, target=None) -> x_adv``.

    Inputs may be numpy arrays or tensors; ``x`` holds images in [0, 1] (any layout the
    model accepts, batch first), ``y`` and ``target`` hold integer class labels of shape
    ``(batch,)``. The result is always a ``tf.Tensor`` of float32 images in [0, 1] with
    the shape of ``x``. When ``y`` is None the model's own predictions are used as
    labels (which avoids label leaking). With ``target`` the attack is targeted: it
    pushes every example towards its ``target`` class.

    A randomised attack (random start, sampled directions) draws from its own stream,
    seeded by its ``seed``: a fresh attack with the same seed repeats its results, and
    each further call on the same object continues the stream, as a NumPy
    ``Generator`` does. To repeat a run, build the attack again (for example
    ``type(attack).from_config(attack.get_config())``).

    The model must map images to **logits** (no softmax) and is always called with
    ``training=False``. Subclasses declare their hyperparameters as keyword-only
    arguments of ``__init__`` (see :meth:`hyperparameters`), store each under an
    attribute of the same name, and
    implement ``_attack(model, x, y, target)`` with TensorFlow ops only (``target`` is
    None for untargeted runs); ``get_config`` follows from the signature.
    """

    #: Registry name, set by :func:`keras_sns.attacks.register`.
    name: ClassVar[str] = ""
    #: Distance measure bounding the perturbation: "linf", "l2" or None (unbounded).
    norm: ClassVar[str | None] = None
    #: Black-box attacks only ever read the model's outputs, never its gradients.
    black_box: ClassVar[bool] = False
    #: Whether ``target=`` is accepted.
    supports_targeted: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = vars(cls).get("__init__")
        if init is not None and any(p.kind is inspect.Parameter.VAR_KEYWORD
                                    for p in inspect.signature(init).parameters.values()):
            init.__signature__ = _merged_signature(init, super(cls, cls).__init__)

    @classmethod
    def hyperparameters(cls) -> tuple[str, ...]:
        """The names of the keyword-only arguments of ``__init__``, in signature order.

        A subclass that adds or re-defaults a few hyperparameters may declare only those
        and forward the rest with ``**params`` to its parent's ``__init__``: its
        signature (``inspect.signature``, ``help()``) then lists the parent's too, with
        their defaults.

        Example:
            >>> from keras_sns.attacks import FastGradientSignMethod
            >>> FastGradientSignMethod.hyperparameters()
            ('eps',)
        """
        return _keyword_only(cls.__init__)

    def get_config(self) -> dict[str, Any]:
        """Return the hyperparameters, such that ``type(self)(**config)`` rebuilds it.

        One entry per keyword-only argument of ``__init__``, read from the attribute
        of the same name (the checked, normalised value the attack runs with).
        """
        return {name: getattr(self, name) for name in self.hyperparameters()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Attack:
        """Rebuild an attack from :meth:`get_config`'s output."""
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    @abc.abstractmethod
    def _attack(self, model, x: tf.Tensor, y: tf.Tensor, target: tf.Tensor | None):
        """The attack in TensorFlow ops (``target`` is None for untargeted runs)."""

    def _check_num_classes(self, num_classes: int, targeted: bool) -> None:
        """Hook for attacks that need a minimum number of classes (e.g. DLR)."""

    def _set_seed(self, seed: int | None) -> None:
        """Check and store ``seed``, and create the attack's own random stream from it."""
        self.seed = check_seed(seed)
        self._rng = make_generator(self.seed)

    # ------------------------------------------------------------------ calling

    def __call__(self, model, x, y=None, target=None) -> tf.Tensor:
        """Run the attack on a batch.

        Args:
            model: A Keras model (or any callable) mapping images to logits.
            x: Images in [0, 1], batch first, numpy or tensor.
            y: Integer labels of shape ``(batch,)``; None uses the model's predictions.
            target: Optional integer target labels of shape ``(batch,)``: targeted attack.

        Returns:
            A float32 ``tf.Tensor`` of adversarial images with the shape of ``x``.

        Raises:
            ValueError: For images outside [0, 1] or not finite, images that do not fit
                the model's input shape, or labels of the wrong shape or range.
        """
        x = as_images(x)
        check_model_input(model, x)
        n = int(x.shape[0])
        if target is not None and not self.supports_targeted:
            raise ValueError(f"The {self.name!r} attack does not support target=.")
        if n == 0:
            return tf.identity(x)
        num_classes = _num_classes(model)
        if num_classes is not None:
            self._check_num_classes(num_classes, target is not None)
        if y is None:
            y = tf.argmax(model(x, training=False), axis=-1, output_type=tf.int32)
        else:
            y = _as_labels(y, n, "y", num_classes)
        if target is not None:
            target = _as_labels(target, n, "target", num_classes)
        logger.debug("Running %r on a batch of %d (targeted=%s).", self, n, target is not None)
        return self._run(model, x, y, target)

    def _run(self, model, x: tf.Tensor, y: tf.Tensor, target: tf.Tensor | None) -> tf.Tensor:
        """Run a validated, non-empty batch: through the compiled attack by default.

        Ensembles override this to run their stages eagerly, one compiled attack at a
        time, and log between them.
        """
        return self._compiled(model)(x, y, target)

    def perturb(self, model, x: tf.Tensor, y: tf.Tensor, target: tf.Tensor | None = None) -> tf.Tensor:
        """The attack as TensorFlow ops, for use inside a compiled step (a train_step).

        No validation: ``x`` must already be a float32 tensor of images in [0, 1] and
        ``y`` int32 labels. Use ``__call__`` elsewhere. It goes through the same
        compiled function as ``__call__`` so that AutoGraph converts the attack's loop
        even when the caller's graph was traced without AutoGraph.
        """
        return self._compiled(model)(x, y, target)

    def _compiled(self, model):
        """The compiled attack for ``model`` and the current hyperparameters.

        Cached per model in a ``WeakKeyDictionary`` so that a finished model can be
        garbage-collected; the compiled function reaches the model through a weak
        reference for the same reason. Keyed on the config too, so that changing an
        attribute can never reuse a function traced with the old value.
        """
        if "_functions" not in self.__dict__:
            self._functions = weakref.WeakKeyDictionary()
        key = tuple(sorted(self.get_config().items()))
        try:
            per_model = self._functions.setdefault(model, {})
            model_ref = weakref.ref(model)
        except TypeError:  # not weak-referenceable: compile without caching
            per_model, model_ref = {}, (lambda: model)
        if key not in per_model:
            # A partial, not a closure: TensorFlow counts traces per code object, so every
            # closure of one ``def`` would share one count and a fresh function for each
            # new model or setting would be reported as "retracing".
            per_model[key] = tf.function(functools.partial(_run_attack, self, model_ref),
                                         reduce_retracing=True)
        return per_model[key]


def _run_attack(attack: Attack, model_ref, x, y, target):
    return attack._attack(model_ref(), x, y, target)


@functools.cache
def _keyword_only(init) -> tuple[str, ...]:
    return tuple(p.name for p in inspect.signature(init).parameters.values()
                 if p.kind is inspect.Parameter.KEYWORD_ONLY)


def _merged_signature(init, parent_init) -> inspect.Signature:
    """``init``'s signature with ``**params`` replaced by the parent's keyword arguments.

    The parent's keyword-only arguments keep their order and defaults unless ``init``
    declares them itself; the ones only ``init`` declares follow.
    """
    own = inspect.signature(init)
    mine = {p.name: p for p in own.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    parent = [p for p in inspect.signature(parent_init).parameters.values()
              if p.kind is inspect.Parameter.KEYWORD_ONLY]
    keywords = [mine.pop(p.name, p) for p in parent] + list(mine.values())
    positional = [p for p in own.parameters.values()
                  if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    return own.replace(parameters=positional + keywords)


# ---------------------------------------------------------------------- validation


def check_eps(eps: float, *, norm: str | None) -> float:
    """Check an epsilon-ball radius; L-inf radii on [0, 1] images are at most 1."""
    value = check_real("eps", eps, minimum=0.0)
    if norm == "linf" and value > 1:
        raise ValueError(
            "Expected eps <= 1 for an L-inf attack on images in [0, 1] (paper eps=8 "
            f"on the 0..255 scale is 8/255). Received: eps={eps}"
        )
    return value


def check_threat_model(eps: float | None, norm: str) -> tuple[float, str]:
    """Check ``norm`` (one of :data:`NORMS`) and ``eps``; None means the norm's default.

    Returns:
        ``(eps, norm)``, with ``eps`` from :data:`DEFAULT_EPS` when it was None.
    """
    norm = check_choice("norm", norm, NORMS)
    return check_eps(DEFAULT_EPS[norm] if eps is None else eps, norm=norm), norm


def check_real(name: str, value, *, minimum: float | None = None, strict: bool = False,
               maximum: float | None = None) -> float:
    """Check a finite real number within bounds; return it as a Python float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"Expected {name} to be a finite number. Received: {name}={value!r}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ValueError(f"Expected {name} {'>' if strict else '>='} {minimum:g}. Received: {name}={value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"Expected {name} <= {maximum:g}. Received: {name}={value}")
    return float(value)


def check_step_size(step_size) -> float | None:
    """Check an optional step length (None: the attack's own default); return it."""
    return None if step_size is None else check_real("step_size", step_size, minimum=0.0)


def check_int(name: str, value, *, minimum: int = 1) -> int:
    """Check an integer count such as ``steps``; return it as a Python int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"Expected {name} to be an integer. Received: {name}={value!r}")
    if value < minimum:
        raise ValueError(f"Expected {name} >= {minimum}. Received: {name}={value}")
    return int(value)


def check_choice(name: str, value, choices: tuple[str, ...]) -> str:
    """Check that ``value`` is one of the strings ``choices``; return it."""
    if value not in choices:
        expected = ", ".join(repr(c) for c in choices)
        raise ValueError(f"Expected {name} to be one of {expected}. Received: {name}={value!r}")
    return value


def check_seed(seed) -> int | None:
    """Check a random seed (None or a non-negative integer)."""
    return None if seed is None else check_int("seed", seed, minimum=0)


def make_generator(seed: int | None) -> tf.random.Generator:
    """The attack's own random stream: reproducible from ``seed``, or fresh if None."""
    if seed is None:
        return tf.random.Generator.from_non_deterministic_state()
    return tf.random.Generator.from_seed(seed)


def as_images(x) -> tf.Tensor:
    """Check a batch of images in [0, 1] (numpy or tensor) and return it as float32."""
    try:
        x = tf.convert_to_tensor(x)
    except (TypeError, ValueError) as e:
        raise ValueError(f"Expected x to be an array of images. Received: {type(x).__name__} ({e})") from None
    if not (x.dtype.is_floating or x.dtype.is_integer):
        raise ValueError(f"Expected x to hold numbers. Received: x.dtype={x.dtype.name}")
    x = tf.cast(x, tf.float32)
    if x.shape.rank is None or x.shape.rank < 2:
        raise ValueError(
            f"Expected x with a batch axis, shape (batch, ...). Received: x.shape={tuple(x.shape)}"
        )
    if int(tf.size(x)) > 0:
        lo, hi = float(tf.reduce_min(x)), float(tf.reduce_max(x))
        if not (math.isfinite(lo) and math.isfinite(hi)) or not bool(tf.reduce_all(tf.math.is_finite(x))):
            raise ValueError("Expected x to be finite. Received: x containing NaN or inf")
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                "Expected x in [0, 1] (scale 0..255 images by 1/255). "
                f"Received: x with min={lo:g}, max={hi:g}"
            )
    return x


def _model_shape(model, attr: str):
    try:
        shape = getattr(model, attr, None)
    except (AttributeError, ValueError, RuntimeError):  # Keras raises if never built
        return None
    if isinstance(shape, tuple) and shape and not isinstance(shape[0], (tuple, list)):
        return shape
    return None  # unknown, or several inputs/outputs


def check_model_input(model, x: tf.Tensor) -> None:
    """Check that ``x`` fits the model's declared input shape, with a readable error."""
    if not callable(model):
        raise ValueError(f"Expected model to be a callable Keras model. Received: model={model!r}")
    expected = _model_shape(model, "input_shape")
    if expected is None:
        return
    got = tuple(x.shape)
    if len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected[1:], got[1:])):
        want = ("batch",) + tuple(expected[1:])
        raise ValueError(
            f"Expected x of shape {want} to match the model's input shape {expected}. "
            f"Received: x.shape={got}"
        )


def _num_classes(model) -> int | None:
    shape = _model_shape(model, "output_shape")
    return int(shape[-1]) if shape is not None and shape[-1] is not None else None


def _as_labels(labels, n: int, name: str, num_classes: int | None) -> tf.Tensor:
    arr = np.asarray(labels.numpy() if isinstance(labels, tf.Tensor) else labels)
    if arr.shape != (n,) or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise ValueError(
            f"Expected {name} to be integer class labels of shape ({n},), one per image "
            f"(not one-hot). Received: {name}.shape={arr.shape}, {name}.dtype={arr.dtype}"
        )
    if num_classes is not None and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(
            f"Expected {name} in [0, {num_classes - 1}] for a model with {num_classes} "
            f"outputs. Received: {name} with min={arr.min()}, max={arr.max()}"
        )
    return tf.constant(arr, tf.int32)
