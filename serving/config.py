"""Server-side limits and settings of the service."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "ServiceSettings"]

#: Loopback only unless told otherwise: the service has no authentication.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8500


@dataclass(frozen=True)
class ServiceSettings:
    """Limits and tuning of one service instance.

    Attributes:
        max_body_bytes: Largest request body accepted (413 above it). 16 MiB holds
            about 500 Fashion-MNIST images as JSON.
        max_images: Most images in one ``:predict`` request (413 above it).
        max_sensitivity_images: Most images in one ``/sensitivity`` request; each
            costs ``steps + 2`` forward passes and ``steps`` backward passes.
        max_attack_steps: A model version whose exported attack runs more steps than
            this is served for predictions only; its ``/sensitivity`` answers 422.
        max_attack_eps: Likewise for the attack radius.
        workers: Threads that run model calls, off the event loop.
        poll_interval_s: How often (at most) the base directory is re-scanned for
            new, removed or repaired versions; a scan happens on the next request
            after the interval.
        max_loaded_versions: Versions of one model kept in memory: the newest good one
            plus versions asked for explicitly, least recently used dropped first.
    """

    max_body_bytes: int = 16 * 1024 * 1024
    max_images: int = 256
    max_sensitivity_images: int = 32
    max_attack_steps: int = 100
    max_attack_eps: float = 0.5
    workers: int = 2
    poll_interval_s: float = 2.0
    max_loaded_versions: int = 2

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_images", "max_sensitivity_images",
                     "max_attack_steps", "workers", "max_loaded_versions"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected {name} to be an integer >= 1. Received: {name}={value!r}")
        if not 0 <= self.max_attack_eps <= 1:
            raise ValueError(
                f"Expected max_attack_eps in [0, 1]. Received: max_attack_eps={self.max_attack_eps}"
            )
        if not self.poll_interval_s >= 0:
            raise ValueError(
                f"Expected poll_interval_s >= 0. Received: poll_interval_s={self.poll_interval_s}"
            )
