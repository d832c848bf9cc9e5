"""Bounded model calls: worker threads behind a bounded queue, per kind of work.

A :class:`Lane` owns a few worker threads and a queue of at most ``max_queue`` waiting
requests; one more is answered 503 with ``Retry-After`` at once, so a burst never piles
up unbounded work. A request waiting in the queue whose client disconnects leaves the
queue and its work is never run. Predictions and sensitivity reports have a lane each,
so slow reports (an attack per request) never hold up a prediction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from serving.body import ClientGone
from serving.schemas import BadRequest

__all__ = ["Lane", "wait_for_disconnect"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


async def wait_for_disconnect(receive: Callable[[], Awaitable[dict]]) -> None:
    """Return when the ASGI ``receive`` channel reports that the client went away.

    Call only after the request body has been read: then the server sends nothing else
    but ``http.disconnect``.
    """
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class Lane:
    """Worker threads for one kind of model call, with a bounded queue in front.

    Used from one event loop; the threads run the calls.

    Args:
        name: Names the threads and the metrics (``predict``, ``sensitivity``).
        workers: Threads, hence calls running at once.
        max_queue: Requests waiting for a thread; one more gets 503.
        retry_after_s: The ``Retry-After`` of that 503.
    """

    def __init__(self, name: str, workers: int, max_queue: int, retry_after_s: int) -> None:
        self.name = name
        self.workers = workers
        self.max_queue = max_queue
        self.retry_after_s = retry_after_s
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix=f"keras-sns-{name}")
        self.running = 0
        self.waiting = 0
        self.abandoned = 0  # queued requests dropped because their client left
        self._slots: asyncio.Semaphore | None = None  # made in the serving loop

    async def run(self, fn: Callable[..., T], *args: Any,
                  disconnected: Callable[[], Awaitable[None]] | None = None) -> T:
        """Run ``fn(*args)`` in a worker thread once one is free.

        Args:
            fn: The blocking call.
            *args: Its arguments.
            disconnected: Returns an awaitable that completes when the client leaves;
                while queued, that abandons the call.

        Raises:
            BadRequest: 503 when the queue is full.
            ClientGone: the client left while queued (``fn`` never ran).
        """
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.workers)
        if self.running >= self.workers and self.waiting >= self.max_queue:
            raise BadRequest(
                f"Server busy: {self.waiting} {self.name} requests already waiting "
                f"(max_queue={self.max_queue}); retry later.", 503,
                headers={"retry-after": str(self.retry_after_s)},
            )
        self.waiting += 1
        try:
            await self._acquire(disconnected)
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, partial(fn, *args))
        finally:
            self.running -= 1
            self._slots.release()

    async def _acquire(self, disconnected) -> None:
        if disconnected is None or not self._slots.locked():
            await self._slots.acquire()
            return
        acquire = asyncio.ensure_future(self._slots.acquire())
        gone = asyncio.ensure_future(disconnected())
        try:
            await asyncio.wait({acquire, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not acquire.done():
                acquire.cancel()
        if acquire.done() and not acquire.cancelled():
            return
        self.abandoned += 1
        logger.debug("Dropped a queued %s request: its client disconnected.", self.name)
        raise ClientGone()

    def shutdown(self) -> None:
        """Stop the threads; queued calls that have not started are cancelled."""
        self.executor.shutdown(wait=True, cancel_futures=True)
