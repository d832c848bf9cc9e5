"""The HTTP/1.1 connection limits that an ASGI app cannot enforce, and the uvicorn config.

An ASGI app sees a request only once its headers are complete, so three protections
live in the connection protocol, a subclass of uvicorn's h11 protocol:

* a cap on open connections: one more is answered 503 and closed at once;
* a header timeout: a request whose line and headers are not complete within
  ``header_timeout_s`` of its first byte (or of the connection) is answered 408 and
  closed, so stalled or trickled headers cannot hold descriptors;
* a JSON 400 (``{"error": ...}`` naming h11's complaint) for bytes that are not HTTP,
  where uvicorn answers in plain text.

Idle keep-alive connections are closed by uvicorn after ``keep_alive_timeout_s``; the
body timeout is the app's (:mod:`serving.body`). :func:`uvicorn_config` puts these
together for :func:`serving.run` and the tests.

The subclass relies on attributes of uvicorn's ``H11Protocol`` that are not a
documented API (``conn``, ``connections``, ``send_400_response``); the service tests
exercise each of them over real connections, so an incompatible uvicorn fails there.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import sys
from collections.abc import Callable
from functools import partial

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["GuardedH11Protocol", "uvicorn_config"]

logger = logging.getLogger(__name__)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a connection cap, a header timeout and JSON errors.

    Args:
        *args: uvicorn's (config, server_state, app_state).
        max_connections: Open connections allowed (this one included).
        header_timeout_s: Seconds allowed for a request line and headers.
        on_refused: Called with the reason when a connection is refused or closed
            here (``max_connections``, ``header_timeout``, ``invalid_http``).
        **kwargs: uvicorn's (``_loop``).
    """

    def __init__(self, *args, max_connections: int, header_timeout_s: float,
                 on_refused: Callable[[str], None] = lambda reason: None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.on_refused = on_refused
        self._header_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refuse("max_connections", 503,
                         f"Too many open connections (max_connections={self.max_connections}); "
                         "retry later.", retry_after=True)
            return
        self._arm_header_timer()

    def connection_lost(self, exc) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        # Waiting for (the rest of) a request's headers: the clock runs. A request whose
        # headers are complete stops it; uvicorn's keep-alive timer covers idle time.
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm_header_timer()
        else:
            self._cancel_header_timer()

    def send_400_response(self, msg: str) -> None:
        # Called by uvicorn inside its `except h11.RemoteProtocolError`, which is still
        # the exception being handled: its message says what was wrong.
        error = sys.exc_info()[1]
        detail = str(error)[:200] if isinstance(error, h11.RemoteProtocolError) else msg
        self._refuse("invalid_http", 400, f"Invalid HTTP request: {detail}")

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._refuse("header_timeout", 408, "Request headers not received within "
                         f"header_timeout_s={self.header_timeout_s:g} s.")

    def _refuse(self, reason: str, status: int, message: str, retry_after: bool = False) -> None:
        """Answer ``status`` with a JSON error and close, outside h11's state machine."""
        self._refused = True
        self._cancel_header_timer()
        self.on_refused(reason)
        logger.debug("Closing a connection from %s: %s", self.client, message)
        if self.transport.is_closing():
            return
        body = json.dumps({"error": message}).encode()
        head = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
                "content-type: application/json", f"content-length: {len(body)}",
                "connection: close"]
        if retry_after:
            head.append("retry-after: 1")
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        self.transport.close()


def uvicorn_config(app, *, host: str, port: int, log_level: str = "info", **kwargs) -> uvicorn.Config:
    """A uvicorn config for an app from :func:`serving.create_app`, with its limits.

    The connection cap (also the listen backlog) and the header and keep-alive timeouts
    come from the app's :class:`serving.ServiceSettings`; the protocol is
    :class:`GuardedH11Protocol`.

    Args:
        app: The app (its ``state.settings`` and ``state.metrics`` are read).
        host: Interface to bind.
        port: Port (0: any free port).
        log_level: uvicorn's log level.
        **kwargs: Other ``uvicorn.Config`` arguments.

    Example:
        >>> server = uvicorn.Server(uvicorn_config(create_app("exports"), host="127.0.0.1",
        ...                                        port=8500))  # doctest: +SKIP
    """
    settings = app.state.settings
    metrics = app.state.metrics
    protocol = partial(
        GuardedH11Protocol,
        max_connections=settings.max_connections,
        header_timeout_s=settings.header_timeout_s,
        on_refused=lambda reason: metrics.refused_connections.labels(reason).inc(),
    )
    return uvicorn.Config(
        app, host=host, port=port, log_level=log_level, http=protocol,
        # The kernel's queue of connections not yet accepted: a burst beyond the cap is
        # accepted, answered 503 and closed in one go, so it is bounded by this too.
        backlog=settings.max_connections,
        timeout_keep_alive=settings.keep_alive_timeout_s,
        h11_max_incomplete_event_size=settings.max_header_bytes,
        **kwargs,
    )
