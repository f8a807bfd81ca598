"""Dynamic batching: coalesce concurrent embedding requests into few encoder calls on one worker thread."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import E5VError, E5VInputError

__all__ = ["DynamicBatcher", "QueueFullError", "KINDS"]

log = logging.getLogger(__name__)

#: Job kinds and the encoder method each runs through. ``composed`` items are ``(image, text)`` pairs.
KINDS = ("text", "image", "composed")


class QueueFullError(E5VError, RuntimeError):
    """More inputs are waiting for the model than ``max_queue`` allows; the client should retry later."""


@dataclass
class _Job:
    kind: str
    items: list[Any]
    tokens: int
    future: asyncio.Future = field(repr=False)


class DynamicBatcher:
    """Queue embedding jobs and run them through the encoder in coalesced calls, one call at a time.

    A collector task on the event loop takes the first waiting job, then keeps taking jobs until the batch holds
    ``max_batch_size`` inputs or ``max_batch_tokens`` tokens, or ``max_wait_ms`` has passed since it started
    collecting. The batch runs on a single worker thread (the event loop stays free for health checks and new
    requests): one encoder call for its texts, and one per image or composed request: an image is 1.2k–2.9k tokens,
    which gains nothing from sharing a forward pass (see ``E5VEncoder._batches``), so a shared call would only hold
    each answer until the last image of the call is done. Requests arriving meanwhile form the next batch. If a call
    fails on one bad input, each job of that call is retried alone so only the offending request fails.

    Args:
        encoder: an ``E5VEncoder`` (``embed_texts``, ``embed_images``, ``embed_composed``).
        max_batch_size: most inputs per coalesced call.
        max_wait_ms: how long the collector waits for more jobs after the first.
        max_batch_tokens: token budget per coalesced call; a job over it alone still runs, alone.
        max_queue: most inputs waiting; ``submit`` raises ``QueueFullError`` beyond it.
        on_batch: called on the event loop after each call as ``on_batch(kind, n_items, seconds)`` (metrics).

    Example:
        >>> batcher = DynamicBatcher(encoder, max_batch_size=32, max_wait_ms=5)  # doctest: +SKIP
        >>> await batcher.start(); vectors = await batcher.submit("text", ["a cat"], tokens=20)  # doctest: +SKIP
    """

    def __init__(
        self,
        encoder,
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_batch_tokens: int = 16384,
        max_queue: int = 4096,
        on_batch: Callable[[str, int, float], None] | None = None,
    ):
        self.encoder = encoder
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_batch_tokens = max_batch_tokens
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Job | None] | None = None
        self._held: collections.deque[_Job] = collections.deque()
        self._waiting = 0
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task | None = None
        self._closing = False

    @property
    def waiting(self) -> int:
        """Inputs queued and not yet handed to the encoder."""
        return self._waiting

    async def start(self) -> None:
        """Start the collector task and the model worker thread (call from the serving event loop)."""
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="e5v-model")
        self._task = asyncio.create_task(self._collect(), name="e5v-batcher")

    async def close(self) -> None:
        """Refuse new jobs, finish every queued one, then stop the worker thread."""
        if self._task is None:
            return
        self._closing = True
        self._queue.put_nowait(None)
        await self._task
        self._executor.shutdown(wait=True)
        self._task = None

    async def submit(self, kind: str, items: Sequence[Any], *, tokens: int = 0) -> np.ndarray:
        """Embed ``items`` of one ``kind`` as part of the next batch; returns their vectors in order.

        Raises:
            QueueFullError: too many inputs are already waiting, or the batcher is shutting down.
            E5VError: the encoder refused an input (e.g. a text longer than the model's positions).
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if self._task is None or self._closing:
            raise QueueFullError("the server is shutting down; retry against a running instance")
        if self._waiting + len(items) > self.max_queue:
            raise QueueFullError(
                f"{self._waiting} inputs are already waiting for the model (max_queue {self.max_queue}); retry later"
            )
        job = _Job(kind, list(items), tokens, asyncio.get_running_loop().create_future())
        self._waiting += len(job.items)
        self._queue.put_nowait(job)
        return await job.future

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` on the model worker thread, between batches (for search's own encoder call)."""
        if self._executor is None:
            raise QueueFullError("the batcher is not running (start() was not awaited, or it has shut down)")
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    # ------------------------------------------------------------------ collector (event loop)
    async def _next(self, timeout: float | None) -> _Job | None:
        if self._held:
            return self._held.popleft()
        if timeout is None:
            return await self._queue.get()
        if timeout <= 0:
            return self._queue.get_nowait()
        return await asyncio.wait_for(self._queue.get(), timeout)

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while True:
            first = await self._next(None)
            if first is None:
                if self._queue.empty() and not self._held:
                    return
                stopping = True
                continue
            batch, size, tokens = [first], len(first.items), first.tokens
            deadline = loop.time() + self.max_wait
            while size < self.max_batch_size:
                try:
                    job = await self._next(0 if stopping else deadline - loop.time())
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
                if job is None:  # shutdown requested: run what is queued without waiting for more
                    stopping = True
                    continue
                if size + len(job.items) > self.max_batch_size or tokens + job.tokens > self.max_batch_tokens:
                    self._held.append(job)
                    break
                batch.append(job)
                size += len(job.items)
                tokens += job.tokens
            self._waiting -= size
            await self._run(batch)
            if stopping and self._queue.empty() and not self._held:
                return

    async def _run(self, batch: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        texts = [job for job in batch if job.kind == "text"]
        # the texts share one call; each image / composed request is its own, answered when its image is done
        calls = ([("text", texts)] if texts else []) + [(job.kind, [job]) for job in batch if job.kind != "text"]
        for kind, jobs in calls:
            started = time.perf_counter()
            outcomes = await loop.run_in_executor(self._executor, self._embed_jobs, kind, jobs)
            if self.on_batch is not None:
                self.on_batch(kind, sum(len(j.items) for j in jobs), time.perf_counter() - started)
            for job, outcome in zip(jobs, outcomes, strict=True):
                if job.future.done():  # the client went away
                    continue
                if isinstance(outcome, BaseException):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome)

    # ------------------------------------------------------------------ model worker thread
    def _call(self, kind: str, items: list[Any]) -> np.ndarray:
        enc = self.encoder
        if kind == "text":
            return enc.embed_texts(items)
        if kind == "image":
            return enc.embed_images(items)
        return enc.embed_composed([image for image, _ in items], [text for _, text in items])

    def _embed_jobs(self, kind: str, jobs: list[_Job]) -> list[np.ndarray | BaseException]:
        """One encoder call for all ``jobs``; on an input error, each job alone so only the bad one fails."""
        items = [item for job in jobs for item in job.items]
        try:
            vectors = self._call(kind, items)
        except E5VInputError:
            if len(jobs) == 1:
                return [self._embed_alone(kind, jobs[0])]
            return [self._embed_alone(kind, job) for job in jobs]
        except Exception as exc:  # a model failure fails every request of the call, never the server
            log.exception("encoder call on %d %s inputs failed", len(items), kind)
            return [exc] * len(jobs)
        out, start = [], 0
        for job in jobs:
            out.append(vectors[start : start + len(job.items)])
            start += len(job.items)
        return out

    def _embed_alone(self, kind: str, job: _Job) -> np.ndarray | BaseException:
        try:
            return self._call(kind, job.items)
        except Exception as exc:
            return exc
