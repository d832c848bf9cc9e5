"""Which compute precision is fast on this machine: ``--precision auto``.

Half precision only pays where the hardware computes it natively. Where it does not,
TensorFlow emulates it and a training step gets *slower*: on an AVX2-only CPU,
``mixed_bfloat16`` made small_cnn's step 8.6x slower than float32 (issue 12). So the
decision is made from the hardware, never assumed:

- a GPU with compute capability >= 8.0 (Ampere and later): ``mixed_bfloat16`` (native
  bfloat16 tensor cores, and no loss scaling needed);
- a GPU with compute capability 7.x (Volta, Turing): ``mixed_float16`` (float16 tensor
  cores, no bfloat16);
- an older GPU: ``float32``;
- no GPU, a CPU with ``amx_bf16`` or ``avx512_bf16`` (Intel Sapphire Rapids and later,
  AMD Zen 4 and later): ``mixed_bfloat16`` (oneDNN runs bfloat16 matmuls and
  convolutions natively);
- any other CPU: ``float32``.

:func:`choose_precision` is the pure decision on a :class:`Hardware` description (what
the tests fake); :func:`hardware_description` reads the real machine (``/proc/cpuinfo``
and TensorFlow's GPU list); :func:`resolve_precision` turns ``"auto"`` or an explicit
policy into ``(policy, reason)``. TensorFlow is imported only to list GPUs, so this
module stays in the package's lowest room and the CLI's ``--help`` stays fast.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass, field

from keras_sns.config import PRECISIONS

__all__ = ["BF16_CPU_FLAGS", "GPU", "Hardware", "choose_precision", "hardware_description",
           "read_cpu", "resolve_precision", "saved_model_precision"]

logger = logging.getLogger(__name__)

#: CPU flags (as ``/proc/cpuinfo`` spells them) of native bfloat16 arithmetic.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class GPU:
    """One GPU: its name and CUDA compute capability ``(major, minor)`` (None: unknown)."""

    name: str
    compute_capability: tuple[int, int] | None = None


@dataclass(frozen=True)
class Hardware:
    """What the precision decision looks at.

    Args:
        cpu_model: The CPU's model name (``/proc/cpuinfo``'s ``model name``).
        cpu_flags: Its feature flags, e.g. ``{"avx2", "avx512_bf16", "amx_bf16"}``.
        gpus: The GPUs TensorFlow sees (it places the work there when there are any).
    """

    cpu_model: str = "unknown CPU"
    cpu_flags: frozenset[str] = field(default_factory=frozenset)
    gpus: tuple[GPU, ...] = ()

    def to_dict(self) -> dict:
        """JSON-ready form (flags: only the ones the decision reads, plus AVX levels)."""
        shown = sorted(f for f in self.cpu_flags
                       if f in BF16_CPU_FLAGS or f in ("avx2", "avx512f", "amx_tile"))
        return {"cpu_model": self.cpu_model, "cpu_flags": shown,
                "gpus": [{"name": g.name, "compute_capability":
                          None if g.compute_capability is None else
                          f"{g.compute_capability[0]}.{g.compute_capability[1]}"}
                         for g in self.gpus]}


def choose_precision(hardware: Hardware) -> tuple[str, str]:
    """The Keras dtype policy that is fastest on ``hardware``, and why.

    Args:
        hardware: A :class:`Hardware` description (real or faked).

    Returns:
        ``(policy, reason)``: policy is ``"float32"``, ``"mixed_bfloat16"`` or
        ``"mixed_float16"``; reason is one sentence naming the hardware fact it
        rests on.

    Example:
        >>> choose_precision(Hardware("AMD EPYC", frozenset({"avx2"})))[0]
        'float32'
        >>> choose_precision(Hardware("Xeon", frozenset({"avx512_bf16", "amx_bf16"})))[0]
        'mixed_bfloat16'
        >>> choose_precision(Hardware(gpus=(GPU("Tesla T4", (7, 5)),)))[0]
        'mixed_float16'
    """
    if hardware.gpus:
        # Work is placed on the GPUs; with several, the slowest decides.
        known = [g.compute_capability for g in hardware.gpus if g.compute_capability]
        names = ", ".join(g.name for g in hardware.gpus)
        if len(known) < len(hardware.gpus):
            return "float32", f"GPU ({names}) of unknown compute capability: float32 is safe"
        cc = min(known)
        text = f"GPU {names}, compute capability {cc[0]}.{cc[1]}"
        if cc >= (8, 0):
            return "mixed_bfloat16", f"{text}: native bfloat16 tensor cores (>= 8.0)"
        if cc >= (7, 0):
            return "mixed_float16", f"{text}: float16 tensor cores, no bfloat16 (7.x)"
        return "float32", f"{text}: no tensor cores (< 7.0), half precision is not faster"
    native = [f for f in BF16_CPU_FLAGS if f in hardware.cpu_flags]
    if native:
        return "mixed_bfloat16", (f"CPU {hardware.cpu_model} computes bfloat16 natively "
                                  f"({', '.join(native)})")
    return "float32", (f"CPU {hardware.cpu_model} has no native bfloat16 "
                       f"({' or '.join(BF16_CPU_FLAGS)}): it would be emulated, and slower")


def saved_model_precision(saved: str, precision: str = "auto",
                          hardware: Hardware | None = None) -> tuple[str, str]:
    """The dtype policy to run an already trained model in, and why.

    ``"auto"`` keeps the model's own precision where the hardware computes it natively
    and falls back to float32 elsewhere: a model trained in bfloat16 on an AVX512-BF16
    CPU runs in float32 on an AVX2-only one (where bfloat16 is emulated and about 8x
    slower), and a float32 model is never switched to half precision behind the user's
    back (its robust accuracy would change with the machine). Any other value is used
    as given.

    Args:
        saved: The model's own policy (:func:`keras_sns.models.model_precision`).
        precision: ``"auto"`` or one of :data:`keras_sns.config.PRECISIONS`.
        hardware: The machine to decide for (None: this one).

    Returns:
        ``(policy, reason)``.

    Example:
        >>> saved_model_precision("mixed_bfloat16", hardware=Hardware("EPYC", frozenset({"avx2"})))[0]
        'float32'
    """
    if precision != "auto":
        return resolve_precision(precision)
    if saved == "float32":
        return "float32", "the model's own precision (float32)"
    best, why = choose_precision(hardware or hardware_description())
    if best == saved:
        return saved, f"the model's own precision ({saved}): {why}"
    return "float32", (f"the model was trained in {saved}, which this machine does not run "
                       f"natively ({why}): running it in float32")


def read_cpu(cpuinfo: str | None = None) -> tuple[str, frozenset[str]]:
    """The CPU's model name and flags from the text of ``/proc/cpuinfo``.

    Args:
        cpuinfo: The file's text; None reads ``/proc/cpuinfo`` (where there is none,
            as on macOS, the model comes from :mod:`platform` and the flags are empty).

    Returns:
        ``(model name, flags)`` of the first processor listed.

    Example:
        >>> read_cpu("model name\\t: AMD EPYC\\nflags\\t\\t: fpu avx2 avx512_bf16\\n")
        ('AMD EPYC', frozenset({'fpu', 'avx2', 'avx512_bf16'}))
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return platform.processor() or platform.machine() or "unknown CPU", frozenset()
    model, flags = None, None
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if model is None and key in ("model name", "cpu model", "hardware"):
            model = value.strip()
        elif flags is None and key in ("flags", "features"):  # "Features" on ARM
            flags = frozenset(value.split())
        if model is not None and flags is not None:
            break
    return model or platform.processor() or "unknown CPU", flags or frozenset()


def _gpus() -> tuple[GPU, ...]:
    import tensorflow as tf  # only here: listing GPUs needs the runtime

    found = []
    for device in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(device)
        except (ValueError, RuntimeError):  # details unavailable: decide on float32
            details = {}
        cc = details.get("compute_capability")
        found.append(GPU(details.get("device_name", device.name),
                         tuple(int(v) for v in cc) if cc else None))
    return tuple(found)


def hardware_description() -> Hardware:
    """Describe this machine: CPU model and flags, and the GPUs TensorFlow sees.

    Returns:
        A :class:`Hardware` (``KERAS_SNS_CPU_FLAGS``, a space-separated list, replaces
        the flags read from ``/proc/cpuinfo``: a way to see what ``auto`` would do on
        another CPU).

    Example:
        >>> hardware_description().cpu_model  # doctest: +SKIP
        'AMD EPYC'
    """
    model, flags = read_cpu()
    override = os.environ.get("KERAS_SNS_CPU_FLAGS")
    if override is not None:
        flags = frozenset(override.split())
    return Hardware(model, flags, _gpus())


def resolve_precision(precision: str = "auto",
                      hardware: Hardware | None = None) -> tuple[str, str]:
    """The dtype policy to run with: ``"auto"`` decided from the hardware, else as given.

    Args:
        precision: ``"auto"`` or one of :data:`keras_sns.config.PRECISIONS`.
        hardware: The machine to decide for (None: this one, read lazily).

    Returns:
        ``(policy, reason)``.

    Raises:
        ValueError: for an unknown precision.

    Example:
        >>> resolve_precision("float32")
        ('float32', 'requested (--precision float32)')
    """
    if precision == "auto":
        policy, reason = choose_precision(hardware or hardware_description())
        logger.info("Precision auto -> %s: %s", policy, reason)
        return policy, reason
    if precision not in PRECISIONS:
        raise ValueError(f"Expected precision in {['auto', *PRECISIONS]}. "
                         f"Received: precision={precision!r}")
    return precision, f"requested (--precision {precision})"
