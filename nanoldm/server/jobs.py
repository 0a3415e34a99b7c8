"""One job at a time: :class:`JobQueue` runs every job that touches the model (generations, model switches) on
one worker thread, with at most ``size`` jobs waiting behind the running one; one more is refused at once
(:class:`QueueFull`, the API's 503) instead of waiting without bound.

A waiting job whose client went away is dropped from the queue (its awaiting task is cancelled, which cancels
the future); a running one finishes and its result is discarded. Either way the server goes on.
"""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")


class QueueFull(Exception):
    """No room for another job; ``retry_after``: seconds after which one may well be free."""

    def __init__(self, waiting: int, retry_after: int):
        super().__init__(f"the queue is full ({waiting} jobs waiting); try again later")
        self.retry_after = retry_after


class JobQueue:
    def __init__(self, size: int):
        self.size = size
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nanoldm-job")
        self._lock = threading.Lock()
        self._pending = 0  # the running job and those waiting
        self._last_seconds = 1.0  # how long the last job ran: for Retry-After

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    def submit(self, fn: Callable[..., T], *args) -> Future:
        """Queue ``fn(*args)``; QueueFull when ``size`` jobs already wait behind a running one."""
        with self._lock:
            if self._pending > self.size:
                raise QueueFull(self._pending - 1, max(1, round(self._last_seconds * self._pending)))
            self._pending += 1
        future = self._executor.submit(self._timed, fn, *args)
        future.add_done_callback(self._done)
        return future

    async def run(self, fn: Callable[..., T], *args) -> T:
        """``fn(*args)`` on the worker thread, awaited without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def _timed(self, fn, *args):
        start = time.monotonic()
        try:
            return fn(*args)
        finally:
            self._last_seconds = time.monotonic() - start

    def _done(self, _future: Future) -> None:
        with self._lock:
            self._pending -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
