"""DynamicBatcher: coalescing, bounds, per-request results, failure isolation and draining on close.

A recording stand-in for the encoder returns a vector computed from each input, so every request can be checked to
get exactly its own rows back, and the calls it received show how requests were coalesced.
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from e5v_qdrant.errors import E5VInputError
from e5v_qdrant.server.batching import DynamicBatcher, QueueFullError


def vector(text: str) -> np.ndarray:
    return np.array([len(text), sum(map(ord, text))], dtype=np.float32)


class Recorder:
    """Embeds ``text`` as ``vector(text)``; records each call's inputs and thread; refuses texts containing 'BAD'."""

    def __init__(self, delay: float = 0.0):
        self.calls: list[list[str]] = []
        self.threads: set[str] = set()
        self.delay = delay

    def embed_texts(self, texts):
        self.calls.append(list(texts))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        for i, t in enumerate(texts):
            if "BAD" in t:
                raise E5VInputError(f"item {i}", "refused")
        return np.stack([vector(t) for t in texts])


async def started(encoder, **kw) -> DynamicBatcher:
    batcher = DynamicBatcher(encoder, **kw)
    await batcher.start()
    return batcher


async def test_concurrent_requests_share_one_call_and_get_their_own_rows():
    enc = Recorder()
    batcher = await started(enc, max_wait_ms=200)
    requests = [[f"text {i}"] if i % 3 else [f"text {i}", f"more {i}"] for i in range(9)]
    results = await asyncio.gather(*(batcher.submit("text", r) for r in requests))
    await batcher.close()
    assert len(enc.calls) == 1 and len(enc.calls[0]) == sum(map(len, requests))
    for r, got in zip(requests, results, strict=True):
        np.testing.assert_array_equal(got, np.stack([vector(t) for t in r]))
    assert enc.threads == {"e5v-model_0"}  # never the event loop's thread


async def test_images_of_one_batch_are_answered_one_by_one_texts_together():
    """Images gain nothing from a shared forward pass, so each image request is its own encoder call and is answered
    when its image is done; the texts collected with them still share one call."""
    enc = Recorder(delay=0.2)
    enc.embed_images = enc.embed_texts  # the recorder treats an "image" as its name
    batcher = await started(enc, max_wait_ms=200)
    done: dict[str, float] = {}

    async def ask(kind, item):
        out = await batcher.submit(kind, [item])
        done[item] = time.perf_counter()
        return out

    start = time.perf_counter()
    results = await asyncio.gather(*(ask("image", f"img {i}") for i in range(3)), ask("text", "a"), ask("text", "b"))
    await batcher.close()
    assert sorted(map(sorted, enc.calls)) == [["a", "b"], ["img 0"], ["img 1"], ["img 2"]]
    for item, got in zip(["img 0", "img 1", "img 2", "a", "b"], results, strict=True):
        np.testing.assert_array_equal(got, vector(item)[None])
    first, last = sorted(done[f"img {i}"] - start for i in range(3))[::2]
    assert last - first >= 0.3  # answered 0.2 s apart, not all at the end of one shared call


async def test_batch_size_and_token_budget_bound_each_call():
    enc = Recorder()
    batcher = await started(enc, max_wait_ms=200, max_batch_size=4)
    await asyncio.gather(*(batcher.submit("text", [f"t{i}"]) for i in range(10)))
    assert [len(c) for c in enc.calls] == [4, 4, 2]
    await batcher.close()

    enc = Recorder()
    batcher = await started(enc, max_wait_ms=200, max_batch_tokens=100)
    await asyncio.gather(*(batcher.submit("text", [f"t{i}"], tokens=40) for i in range(5)))
    assert [len(c) for c in enc.calls] == [2, 2, 1]
    big = await batcher.submit("text", ["huge"], tokens=500)  # over the budget alone: still runs, alone
    np.testing.assert_array_equal(big[0], vector("huge"))
    await batcher.close()


async def test_a_bad_input_fails_only_its_request():
    enc = Recorder()
    batcher = await started(enc, max_wait_ms=200)
    outcomes = await asyncio.gather(
        batcher.submit("text", ["fine 1"]), batcher.submit("text", ["BAD one"]), batcher.submit("text", ["fine 2"]),
        return_exceptions=True,
    )  # fmt: skip
    await batcher.close()
    assert isinstance(outcomes[1], E5VInputError)
    np.testing.assert_array_equal(outcomes[0][0], vector("fine 1"))
    np.testing.assert_array_equal(outcomes[2][0], vector("fine 2"))


async def test_event_loop_stays_free_while_the_model_runs():
    enc = Recorder(delay=0.5)
    batcher = await started(enc, max_wait_ms=0)
    job = asyncio.create_task(batcher.submit("text", ["slow"]))
    await asyncio.sleep(0.05)
    t0 = time.perf_counter()
    await asyncio.sleep(0.01)  # would wait for the 0.5 s call if the model ran on the loop
    assert time.perf_counter() - t0 < 0.2 and not job.done()
    await job
    await batcher.close()


async def test_close_finishes_queued_jobs_and_refuses_new_ones():
    enc = Recorder(delay=0.2)
    batcher = await started(enc, max_wait_ms=0, max_batch_size=1)
    jobs = [asyncio.create_task(batcher.submit("text", [f"q{i}"])) for i in range(4)]
    await asyncio.sleep(0.05)
    await batcher.close()
    assert all(j.done() and not j.exception() for j in jobs)
    assert sum(len(c) for c in enc.calls) == 4
    with pytest.raises(QueueFullError, match="shutting down"):
        await batcher.submit("text", ["late"])


async def test_queue_bound_refuses_with_queue_full():
    enc = Recorder(delay=0.3)
    batcher = await started(enc, max_wait_ms=0, max_queue=3, max_batch_size=1)
    first = asyncio.create_task(batcher.submit("text", ["a"]))
    await asyncio.sleep(0.05)  # "a" is on the model thread, no longer waiting
    waiting = [asyncio.create_task(batcher.submit("text", [x])) for x in "bcd"]
    await asyncio.sleep(0)
    with pytest.raises(QueueFullError, match="max_queue 3"):
        await batcher.submit("text", ["e"])
    await asyncio.gather(first, *waiting)
    await batcher.close()


def test_split_chunks_bounds_inputs_and_tokens():
    from e5v_qdrant.server.batching import split_chunks

    assert split_chunks([10, 10, 10, 10, 10], max_items=2, max_tokens=100) == [(0, 2), (2, 4), (4, 5)]
    assert split_chunks([60, 50, 30, 500, 5], max_items=8, max_tokens=100) == [(0, 1), (1, 3), (3, 4), (4, 5)]
    assert split_chunks([], max_items=8, max_tokens=100) == []


class TokenTimed(Recorder):
    """Takes 10 microseconds per character of its inputs (a character stands for a token here)."""

    def embed_texts(self, texts):
        self.delay = 1e-5 * sum(map(len, texts))
        return super().embed_texts(texts)


async def test_a_short_request_is_not_held_behind_a_big_one():
    """32 texts of 7.7k tokens (246k tokens, ~2.5 s here) run as a series of budget-sized calls; a 2-word request
    sent meanwhile joins the next call and is answered in a fraction of the big request's time."""
    enc = TokenTimed()
    waits = []
    batcher = await started(enc, max_wait_ms=5, max_batch_tokens=16384, on_wait=lambda t, s: waits.append((t, s)))
    big_texts = [f"{i:02d}" + "x" * 7698 for i in range(32)]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    big = asyncio.create_task(batcher.submit("text", big_texts, tokens=[7700] * 32))
    await asyncio.sleep(0.3)
    t1 = loop.time()
    small = await batcher.submit("text", ["two words"], tokens=[2])
    small_seconds = loop.time() - t1
    big_vectors = await big
    big_seconds = loop.time() - t0
    await batcher.close()
    np.testing.assert_array_equal(small[0], vector("two words"))
    np.testing.assert_array_equal(big_vectors, np.stack([vector(t) for t in big_texts]))  # all, in order
    assert max(len(c) for c in enc.calls) <= 3  # never the 32 texts in one call
    assert small_seconds <= 0.25 * big_seconds, (small_seconds, big_seconds)
    assert sorted(t for t, _ in waits) == [2, 32 * 7700]


async def test_a_failing_chunk_fails_its_whole_request_once():
    enc = Recorder()
    batcher = await started(enc, max_wait_ms=5, max_batch_size=2)
    outcome, other = await asyncio.gather(
        batcher.submit("text", ["a", "b", "c BAD", "d", "e"]), batcher.submit("text", ["fine"]), return_exceptions=True
    )
    await batcher.close()
    assert isinstance(outcome, E5VInputError)
    np.testing.assert_array_equal(other[0], vector("fine"))
    assert batcher.waiting == 0
