"""Reading a request body under the service's limits, before any JSON is parsed.

A JSON body costs far more to parse than to receive: 16 MiB of ``[],`` is five million
Python lists (seconds of work and gigabytes of memory), although it is within the size
limit. So the body is checked *while it is read*, with byte counts that cost nothing:

* its size (413 above ``max_body_bytes``);
* its JSON structure: the ``[``, ``{`` and ``,`` bytes may not exceed what the largest
  allowed batch of images of the model's shape needs (:class:`JsonBudget`; 413);
* the memory held by all bodies at once (:class:`BufferPool`; 503 with ``Retry-After``);
* its time: the whole body within ``body_timeout_s`` (408);
* its ``Content-Type``: JSON only (415), so that a web page cannot make a browser post
  a "simple" cross-origin request (``text/plain``, forms) that the server computes.

A client that disconnects mid-body raises :class:`ClientGone`: there is nobody to
answer, and nothing to log beyond a debug line.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.requests import ClientDisconnect, Request

from serving.schemas import BadRequest

__all__ = ["BufferPool", "ClientGone", "JsonBudget", "check_json_content_type", "limited_body"]

logger = logging.getLogger(__name__)

#: The status a request gets when its client went away before the answer (nginx's
#: "client closed request"); only the metrics ever see it.
CLIENT_GONE_STATUS = 499
# After a limit is hit, the rest of the body is still read (and dropped, uncounted) up
# to this many times the body limit, so that an ordinary client, which sends its whole
# body before reading, gets the 4xx instead of a reset connection. A body declared
# larger than that is refused at once, unread.
_DRAIN_FACTOR = 2
_CLOSE = {"connection": "close"}


class ClientGone(Exception):
    """The client disconnected before the request was answered."""


def check_json_content_type(content_type: str | None) -> None:
    """Accept ``application/json`` and ``application/*+json``; anything else is 415.

    A missing header is refused too: browsers send cross-origin requests without a
    preflight only with form or ``text/plain`` types, or with none at all.
    """
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return
    shown = repr(content_type) if content_type else "no Content-Type header"
    raise BadRequest(
        f"Expected Content-Type: application/json. Received: {shown}", 415
    )


@dataclass(frozen=True)
class JsonBudget:
    """The most JSON structure a body holding at most ``max_images`` images may have.

    An image of shape ``(h, w, c)`` as nested lists is ``1 + h + h*w`` arrays holding
    ``h*w*c`` numbers; its separators (``,``) are at most its numbers plus its arrays.
    The budget is that times ``max_images``, plus room for the request's own fields
    (labels: one value per image) and the row format's ``{"images": ...}`` objects.
    Brackets and commas inside strings count too, which only makes the check stricter
    for requests that carry long strings (no valid request does).

    Attributes:
        arrays: Most ``[`` bytes.
        objects: Most ``{`` bytes.
        separators: Most ``,`` bytes.
        what: The limit in words, for the error message.
    """

    arrays: int
    objects: int
    separators: int
    what: str

    @classmethod
    def for_images(cls, input_shape: tuple[int, ...], max_images: int) -> JsonBudget:
        """The budget of a batch of at most ``max_images`` images of ``input_shape``."""
        arrays_per_image = sum(math.prod(input_shape[:i]) for i in range(len(input_shape)))
        values_per_image = math.prod(input_shape)
        shape = ", ".join(map(str, input_shape))
        return cls(
            arrays=max_images * arrays_per_image + 8,
            objects=max_images + 8,
            separators=max_images * (values_per_image + arrays_per_image + 2) + 32,
            what=f"{max_images} images of shape [{shape}] (at most {max_images} per request)",
        )


class BufferPool:
    """Bytes of request bodies held in memory at once, all requests together.

    Used from the event loop only (no lock needed).

    Args:
        limit: The most bytes held at once.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> bool:
        """Reserve ``n`` bytes; False (and nothing reserved) if they do not fit."""
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give_back(self, n: int) -> None:
        """Release ``n`` bytes reserved with :meth:`take`."""
        self.used -= n


@asynccontextmanager
async def limited_body(
    request: Request,
    *,
    max_bytes: int,
    budget: JsonBudget,
    pool: BufferPool,
    timeout_s: float,
    retry_after_s: int,
) -> AsyncIterator[bytes]:
    """Read the body of a JSON request under every limit; yields the bytes.

    The bytes stay reserved in ``pool`` until the ``async with`` block ends, so a body
    waiting for a model worker still counts.

    Raises:
        BadRequest: 415 for a non-JSON type, 413 over the size or structure budget,
            408 past the timeout, 503 when the pool is full.
        ClientGone: the client disconnected mid-body.
    """
    check_json_content_type(request.headers.get("content-type"))
    reserved = [0]
    try:
        try:
            body = await asyncio.wait_for(
                _read(request, max_bytes, budget, pool, reserved, retry_after_s), timeout_s
            )
        except asyncio.TimeoutError:
            raise BadRequest(
                f"Request body not received within body_timeout_s={timeout_s:g} s.", 408,
                headers=_CLOSE,
            ) from None
        yield body
    finally:
        pool.give_back(reserved[0])


async def _read(request, max_bytes, budget, pool, reserved, retry_after_s) -> bytes:
    declared = request.headers.get("content-length")
    # h11 has checked the header (digits only, at most 20 of them); chunked bodies have none.
    declared = int(declared) if declared is not None and declared.isdigit() else None
    problem: BadRequest | None = None
    if declared is not None and declared > max_bytes:
        problem = BadRequest(f"Request body over the size limit of {max_bytes} bytes.", 413,
                             headers=_CLOSE)
        if declared > _DRAIN_FACTOR * max_bytes:
            raise problem
    chunks: list[bytes] = []
    size = arrays = objects = separators = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if problem is not None:
                if size > _DRAIN_FACTOR * max_bytes:
                    break
                continue  # drained, dropped
            if size > max_bytes:
                problem = BadRequest(f"Request body over the size limit of {max_bytes} bytes.", 413,
                                     headers=_CLOSE)
                continue
            arrays += chunk.count(b"[")
            objects += chunk.count(b"{")
            separators += chunk.count(b",")
            if arrays > budget.arrays or objects > budget.objects or separators > budget.separators:
                kind = ("JSON arrays" if arrays > budget.arrays else
                        "JSON objects" if objects > budget.objects else "JSON values")
                problem = BadRequest(
                    f"Too many images: the body holds more {kind} than {budget.what} need.", 413,
                    headers=_CLOSE,
                )
                continue
            if not pool.take(len(chunk)):
                raise BadRequest(
                    "Server busy: too many request bodies in memory "
                    f"(max_buffered_bytes={pool.limit}); retry later.", 503,
                    headers={**_CLOSE, "retry-after": str(retry_after_s)},
                )
            reserved[0] += len(chunk)
            chunks.append(chunk)
    except ClientDisconnect:
        logger.debug("Client of %s %s disconnected mid-body after %d bytes.",
                     request.method, request.url.path, size)
        raise ClientGone() from None
    if problem is not None:
        raise problem
    return b"".join(chunks)
