"""Trusted ``Host`` headers: the guard against DNS rebinding.

A web page on ``evil.example`` whose name is re-pointed at 127.0.0.1 can make a browser
send requests to a loopback service with ``Host: evil.example``. Answering only the
names the service is meant to be reached by stops that. Starlette has a middleware for
this, but it answers in plain text; this one answers in the service's JSON error shape.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

__all__ = ["TrustedHostMiddleware", "host_name"]


def host_name(host: str) -> str:
    """The name part of a ``Host`` header: no port, no IPv6 brackets, lower case.

    Example:
        >>> host_name("[::1]:8500"), host_name("LocalHost:80"), host_name("example.org.")
        ('::1', 'localhost', 'example.org')
    """
    host = host.strip().lower()
    if host.startswith("["):
        name = host[1:].split("]", 1)[0]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name.rstrip(".")


class TrustedHostMiddleware:
    """ASGI middleware answering 400 to requests whose ``Host`` is not allowed.

    ``exempt`` paths are answered whatever the host: a liveness probe (which sends the
    pod's address) reveals nothing and computes nothing.

    Args:
        app: The wrapped ASGI app.
        allowed_hosts: Accepted names (compared with :func:`host_name`), or ``"*"``.
        exempt: Paths answered for any host.
    """

    def __init__(self, app, allowed_hosts: tuple[str, ...], exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.allowed = frozenset(host_name(h) for h in allowed_hosts)
        self.exempt = frozenset(exempt)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or self.any_host or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        raw = next((v for k, v in scope["headers"] if k == b"host"), None)
        host = raw.decode("latin-1") if raw is not None else None
        if host is not None and host_name(host) in self.allowed:
            await self.app(scope, receive, send)
            return
        shown = repr(host[:100]) if host is not None else "no Host header"
        response = JSONResponse(
            {"error": f"Untrusted Host header: {shown}. This server answers "
                      f"{sorted(self.allowed)} (ServiceSettings.allowed_hosts)."},
            status_code=400,
        )
        await response(scope, receive, send)
