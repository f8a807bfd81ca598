"""Dynamic batching: coalesce concurrent embedding requests into few encoder calls on one worker thread, and\nsplit big requests into chunks interleaved fairly with the others."""

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

__all__ = ["DynamicBatcher", "QueueFullError", "KINDS", "split_chunks"]

log = logging.getLogger(__name__)

#: Job kinds and the encoder method each runs through. ``composed`` items are ``(image, text)`` pairs.
KINDS = ("text", "image", "composed")


class QueueFullError(E5VError, RuntimeError):
    """More inputs are waiting for the model than ``max_queue`` allows; the client should retry later."""


@dataclass(eq=False)
class _Job:
    """One request: its inputs, their token counts, and the chunks (``(start, stop)`` item ranges) not yet run."""

    kind: str
    items: list[Any]
    tokens: list[int]
    future: asyncio.Future = field(repr=False)
    seq: int = 0
    submitted: float = 0.0
    chunks: collections.deque[tuple[int, int]] = field(default_factory=collections.deque)
    results: dict[int, np.ndarray] = field(default_factory=dict)
    in_flight: int = 0
    served: int = 0  # tokens handed to the model so far: the fairness key
    waited: bool = False  # its first chunk has been handed to the model

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens)


@dataclass(eq=False)
class _Chunk:
    job: _Job
    start: int
    stop: int

    @property
    def items(self) -> list[Any]:
        return self.job.items[self.start : self.stop]


def split_chunks(tokens: Sequence[int], *, max_items: int, max_tokens: int) -> list[tuple[int, int]]:
    """Consecutive ``(start, stop)`` ranges of inputs with at most ``max_items`` inputs and ``max_tokens`` tokens each
    (an input over ``max_tokens`` alone is a chunk of its own)."""
    chunks, start, total = [], 0, 0
    for i, count in enumerate(tokens):
        if i > start and (i - start >= max_items or total + count > max_tokens):
            chunks.append((start, i))
            start, total = i, 0
        total += count
    if tokens:
        chunks.append((start, len(tokens)))
    return chunks


class DynamicBatcher:
    """Queue embedding jobs and run them through the encoder in coalesced calls, one call at a time, fairly.

    Each request is split into chunks of at most ``max_batch_size`` inputs and half ``max_batch_tokens`` tokens. A
    collector task on the event loop gathers requests (after the first, it waits up to ``max_wait_ms`` for others
    while the batch is not full), then fills each batch with chunks taken round-robin from the waiting requests,
    least-served first (the requests that have had the fewest tokens run so far), up to ``max_batch_size`` inputs and
    ``max_batch_tokens`` tokens. So a big request runs as a series of batches, and a short request arriving meanwhile
    joins the next one instead of waiting for the whole big request (fair queueing by tokens); half-budget chunks
    leave room to share a batch with them. The batch runs on a single worker thread (the event loop stays free for
    health checks and new requests): one encoder call for its texts, and one per image or composed chunk: an image
    is 1.2k–2.9k tokens, which gains nothing from sharing a forward pass (see ``E5VEncoder._batches``). If a call
    fails on one bad input, each chunk of that call is retried alone so only the offending request fails.

    Args:
        encoder: an ``E5VEncoder`` (``embed_texts``, ``embed_images``, ``embed_composed``).
        max_batch_size: most inputs per coalesced call.
        max_wait_ms: how long the collector waits for more jobs after the first.
        max_batch_tokens: token budget per coalesced call; a single input over it still runs, alone.
        max_queue: most inputs waiting; ``submit`` raises ``QueueFullError`` beyond it.
        on_batch: called on the event loop after each call as ``on_batch(kind, n_items, seconds)`` (metrics).
        on_wait: called when a request's first chunk is handed to the model, as ``on_wait(request_tokens, seconds
            waited)`` (metrics: queue wait per request size).

    Example:
        >>> batcher = DynamicBatcher(encoder, max_batch_size=32, max_wait_ms=5)  # doctest: +SKIP
        >>> await batcher.start(); vectors = await batcher.submit("text", ["a cat"], tokens=[20])  # doctest: +SKIP
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
        on_wait: Callable[[int, float], None] | None = None,
    ):
        self.encoder = encoder
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_batch_tokens = max_batch_tokens
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.on_wait = on_wait
        self._queue: asyncio.Queue[_Job | None] | None = None
        self._active: list[_Job] = []  # admitted requests with chunks not yet handed to the model
        self._waiting = 0
        self._seq = 0
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

    async def submit(self, kind: str, items: Sequence[Any], *, tokens: int | Sequence[int] = 0) -> np.ndarray:
        """Embed ``items`` of one ``kind`` as part of the next batches; returns their vectors in order.

        Args:
            tokens: each input's token count (or the request's total, spread evenly); sizes the chunks and batches.

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
        if isinstance(tokens, int):
            share, extra = divmod(tokens, max(len(items), 1))
            tokens = [share + (1 if i < extra else 0) for i in range(len(items))]
        self._seq += 1
        loop = asyncio.get_running_loop()
        job = _Job(kind, list(items), list(tokens), loop.create_future(), self._seq, loop.time())
        job.chunks.extend(
            split_chunks(job.tokens, max_items=self.max_batch_size, max_tokens=max(1, self.max_batch_tokens // 2))
        )
        self._waiting += len(job.items)
        self._queue.put_nowait(job)
        return await job.future

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` on the model worker thread, between batches (for search's own encoder call)."""
        if self._executor is None:
            raise QueueFullError("the batcher is not running (start() was not awaited, or it has shut down)")
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    # ------------------------------------------------------------------ collector (event loop)
    def _admit(self, job: _Job | None) -> bool:
        """Add a queued job to the active ones; ``False`` for the shutdown marker."""
        if job is None:
            return False
        self._active.append(job)
        return True

    def _full(self) -> bool:
        pending = [(c, j) for j in self._active for c in j.chunks]
        size = sum(stop - start for (start, stop), _ in pending)
        tokens = sum(sum(j.tokens[start:stop]) for (start, stop), j in pending)
        return size >= self.max_batch_size or tokens >= self.max_batch_tokens

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while True:
            if not self._active:
                if stopping and self._queue.empty():
                    return
                if not self._admit(await self._queue.get()):
                    stopping = True
                    continue
                deadline = loop.time() + self.max_wait
                while not stopping and not self._full():  # the batching window: let others join
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(self._queue.get(), remaining)
                    except asyncio.TimeoutError:
                        break
                    stopping = not self._admit(job)
            while not self._queue.empty():  # whatever else arrived meanwhile, without waiting
                stopping = not self._admit(self._queue.get_nowait()) or stopping
            batch = self._take_batch(loop.time())
            if batch:
                await self._run(batch)

    def _take_batch(self, now: float) -> list[_Chunk]:
        """Chunks for the next call: round-robin over the active requests, least-served first, within the bounds."""
        for job in [j for j in self._active if j.future.done()]:  # the client went away: drop what is left
            self._drop(job)
        batch: list[_Chunk] = []
        size = tokens = 0
        order = sorted(self._active, key=lambda j: (j.served, j.seq))
        taken = True
        while taken and size < self.max_batch_size and tokens < self.max_batch_tokens:
            taken = False
            for job in order:
                if not job.chunks:
                    continue
                start, stop = job.chunks[0]
                cost = sum(job.tokens[start:stop])
                if batch and (size + stop - start > self.max_batch_size or tokens + cost > self.max_batch_tokens):
                    continue
                job.chunks.popleft()
                if not job.waited:
                    job.waited = True
                    if self.on_wait is not None:
                        self.on_wait(job.total_tokens, now - job.submitted)
                job.in_flight += 1
                job.served += cost
                batch.append(_Chunk(job, start, stop))
                size, tokens, taken = size + stop - start, tokens + cost, True
        self._active = [j for j in self._active if j.chunks]
        self._waiting -= size
        return batch

    def _drop(self, job: _Job) -> None:
        self._waiting -= sum(stop - start for start, stop in job.chunks)
        job.chunks.clear()

    async def _run(self, batch: list[_Chunk]) -> None:
        loop = asyncio.get_running_loop()
        texts = [chunk for chunk in batch if chunk.job.kind == "text"]
        # the texts share one call; each image / composed chunk is its own, answered when its image is done
        calls = ([("text", texts)] if texts else []) + [(c.job.kind, [c]) for c in batch if c.job.kind != "text"]
        for kind, chunks in calls:
            started = time.perf_counter()
            outcomes = await loop.run_in_executor(self._executor, self._embed_chunks, kind, chunks)
            if self.on_batch is not None:
                self.on_batch(kind, sum(c.stop - c.start for c in chunks), time.perf_counter() - started)
            for chunk, outcome in zip(chunks, outcomes, strict=True):
                self._deliver(chunk, outcome)

    def _deliver(self, chunk: _Chunk, outcome: np.ndarray | BaseException) -> None:
        job = chunk.job
        job.in_flight -= 1
        if job.future.done():  # the client went away, or another chunk of the request failed
            return
        if isinstance(outcome, BaseException):
            self._drop(job)
            job.future.set_exception(outcome)
            return
        job.results[chunk.start] = outcome
        if not job.chunks and job.in_flight == 0:
            job.future.set_result(np.concatenate([job.results[k] for k in sorted(job.results)]))

    # ------------------------------------------------------------------ model worker thread
    def _call(self, kind: str, items: list[Any]) -> np.ndarray:
        enc = self.encoder
        if kind == "text":
            return enc.embed_texts(items)
        if kind == "image":
            return enc.embed_images(items)
        return enc.embed_composed([image for image, _ in items], [text for _, text in items])

    def _embed_chunks(self, kind: str, chunks: list[_Chunk]) -> list[np.ndarray | BaseException]:
        """One encoder call for all ``chunks``; on an input error, each chunk alone so only the bad one fails."""
        items = [item for chunk in chunks for item in chunk.items]
        try:
            vectors = self._call(kind, items)
        except E5VInputError as exc:
            if len(chunks) == 1:
                return [exc]
            return [self._embed_alone(kind, chunk) for chunk in chunks]
        except Exception as exc:  # a model failure fails every request of the call, never the server
            log.exception("encoder call on %d %s inputs failed", len(items), kind)
            return [exc] * len(chunks)
        out, start = [], 0
        for chunk in chunks:
            out.append(vectors[start : start + chunk.stop - chunk.start])
            start += chunk.stop - chunk.start
        return out

    def _embed_alone(self, kind: str, chunk: _Chunk) -> np.ndarray | BaseException:
        try:
            return self._call(kind, chunk.items)
        except Exception as exc:
            return exc
