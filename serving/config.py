"""Server-side limits and settings of the service."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_ALLOWED_HOSTS", "DEFAULT_HOST", "DEFAULT_PORT", "ServiceSettings"]

#: Loopback only unless told otherwise: the service has no authentication.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8500
#: Host header values accepted by default: the loopback names (DNS-rebinding guard).
DEFAULT_ALLOWED_HOSTS = ("localhost", "127.0.0.1", "::1")

_POSITIVE_INTS = (
    "max_body_bytes", "max_images", "max_sensitivity_images", "max_attack_steps", "workers",
    "report_workers", "max_buffered_bytes", "max_connections", "max_header_bytes",
    "max_loaded_versions",
)
_NON_NEGATIVE_INTS = ("max_queue", "max_report_queue")
_POSITIVE_SECONDS = ("header_timeout_s", "body_timeout_s", "keep_alive_timeout_s")


@dataclass(frozen=True)
class ServiceSettings:
    """Limits and tuning of one service instance.

    Every request's work is bounded: the body by ``max_body_bytes`` and, while it is
    read, by the JSON arrays and values that ``max_images`` images of the model's shape
    need; the bodies held at once by ``max_buffered_bytes``; the model calls by the
    worker threads and their bounded queues (503 with ``Retry-After`` when full); the
    connections by ``max_connections`` and the three timeouts.

    Attributes:
        max_body_bytes: Largest request body accepted (413 above it). 16 MiB holds
            about 500 Fashion-MNIST images as JSON.
        max_images: Most images in one ``:predict`` or ``:classify`` request (413
            above it, detected while the body is read).
        max_sensitivity_images: Most images in one ``/sensitivity`` request; each
            costs ``steps + 2`` forward passes and ``steps`` backward passes.
        max_attack_steps: A model version whose exported attack runs more steps than
            this is served for predictions only; its ``/sensitivity`` answers 422.
        max_attack_eps: Likewise for the attack radius.
        workers: Threads that run predictions and classifications, off the event loop.
        report_workers: Threads that run sensitivity reports. Reports have their own
            threads and queue so that they never hold up a prediction.
        max_queue: Predictions waiting for a worker; one more gets 503.
        max_report_queue: Reports waiting for a report worker; one more gets 503.
        retry_after_s: The ``Retry-After`` header (seconds) of a 503.
        max_buffered_bytes: Request bodies held in memory at once, being read or
            waiting for a worker, all requests together (503 above it).
        max_connections: Open connections; one more is answered 503 and closed.
        header_timeout_s: Time from the first byte of a request (or from the
            connection) to the end of its headers (408 and close after it).
        body_timeout_s: Time to receive a whole body once its headers are in (408).
        keep_alive_timeout_s: An idle keep-alive connection is closed after this.
        max_header_bytes: Largest request line plus headers (400 above it).
        allowed_hosts: ``Host`` header names accepted (the port is ignored); others
            get 400, which stops DNS rebinding. ``"*"`` accepts any host. The loopback
            names by default; add the names clients use when binding elsewhere.
        poll_interval_s: How often a background thread re-scans the base directory
            for new, removed or repaired versions and a changed ``models.config``.
        max_loaded_versions: Versions of one model kept in memory: the newest good one
            plus versions asked for explicitly, least recently used dropped first.
    """

    max_body_bytes: int = 16 * 1024 * 1024
    max_images: int = 256
    max_sensitivity_images: int = 32
    max_attack_steps: int = 100
    max_attack_eps: float = 0.5
    workers: int = 2
    report_workers: int = 1
    max_queue: int = 64
    max_report_queue: int = 4
    retry_after_s: int = 1
    max_buffered_bytes: int = 64 * 1024 * 1024
    max_connections: int = 256
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_timeout_s: float = 5.0
    max_header_bytes: int = 16 * 1024
    allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
    poll_interval_s: float = 2.0
    max_loaded_versions: int = 2

    def __post_init__(self) -> None:
        for name in _POSITIVE_INTS + _NON_NEGATIVE_INTS + ("retry_after_s",):
            value = getattr(self, name)
            minimum = 0 if name in _NON_NEGATIVE_INTS else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(
                    f"Expected {name} to be an integer >= {minimum}. Received: {name}={value!r}"
                )
        for name in _POSITIVE_SECONDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"Expected {name} > 0 (seconds). Received: {name}={value!r}")
        if not 0 <= self.max_attack_eps <= 1:
            raise ValueError(
                f"Expected max_attack_eps in [0, 1]. Received: max_attack_eps={self.max_attack_eps}"
            )
        if isinstance(self.poll_interval_s, bool) or not self.poll_interval_s > 0:
            raise ValueError(
                f"Expected poll_interval_s > 0. Received: poll_interval_s={self.poll_interval_s}"
            )
        if self.max_buffered_bytes < self.max_body_bytes:
            raise ValueError(
                "Expected max_buffered_bytes >= max_body_bytes (one largest body must fit). "
                f"Received: max_buffered_bytes={self.max_buffered_bytes}, "
                f"max_body_bytes={self.max_body_bytes}"
            )
        hosts = self.allowed_hosts
        if isinstance(hosts, str) or not hosts or not all(isinstance(h, str) and h for h in hosts):
            raise ValueError(
                "Expected allowed_hosts to be a non-empty tuple of host names (or ('*',)). "
                f"Received: allowed_hosts={hosts!r}"
            )
        object.__setattr__(self, "allowed_hosts", tuple(h.lower() for h in hosts))
