"""Helpers of the service tests: servers on free loopback ports and raw HTTP requests.

All traffic goes to 127.0.0.1. Imported by tests/test_serving*.py (pytest puts tests/
on sys.path); not a test module itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time

import uvicorn

from serving import ServiceSettings, create_app, uvicorn_config

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_in_thread(base, settings: ServiceSettings):
    """Run the service on ``base`` with uvicorn in a thread; yields ``(url, app)``."""
    port = free_port()
    app = create_app(base, settings=settings)
    server = uvicorn.Server(uvicorn_config(app, host=HOST, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://{HOST}:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def request_bytes(method: str, path: str, body: bytes = b"", *, host: str = HOST,
                  content_type: str | None = "application/json",
                  content_length: int | None = None, extra: str = "") -> bytes:
    """An HTTP/1.1 request as bytes (``content_length`` may lie about the body)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    if body or content_length is not None or method == "POST":
        lines.append(f"Content-Length: {len(body) if content_length is None else content_length}")
    head = "\r\n".join(lines) + "\r\n" + extra + "\r\n"
    return head.encode("latin-1") + body


def read_response(sock: socket.socket, timeout: float = 10.0):
    """Read one response; returns ``(status, headers, body)`` or None if closed silently."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            return None if not data else _parse(data, b"")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    status, headers = _head(head)
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            break
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length]


def _head(head: bytes):
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def _parse(data: bytes, rest: bytes):
    return (*_head(data.split(b"\r\n\r\n", 1)[0]), rest)


def raw_request(url: str, data: bytes, *, timeout: float = 10.0, shut_write: bool = False):
    """Send raw bytes on a new connection and read one response (None: closed silently)."""
    with socket.create_connection((HOST, port_of(url)), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if shut_write:
                sock.shutdown(socket.SHUT_WR)
        except (ConnectionResetError, BrokenPipeError):
            pass
        return read_response(sock, timeout)


def json_error(response) -> str:
    """The ``error`` string of a raw JSON error response."""
    status, headers, body = response
    assert headers.get("content-type", "").startswith("application/json"), (status, headers, body)
    error = json.loads(body)["error"]
    assert isinstance(error, str) and error
    return error


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory (``VmRSS``) or its peak (``VmHWM``), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(field)


def open_fds(pid: int) -> int:
    """Number of open file descriptors of a process."""
    return len(os.listdir(f"/proc/{pid}/fd"))
