"""Micro-batching: many concurrent requests -> one encoder call.

An LLM forward over a batch of 32 users costs little more than over one, so the service queues
requests and a single worker task drains the queue: it waits for the first request, then collects
more until `max_batch` are waiting or `max_wait_ms` has passed, runs the batch function once in a
worker thread (the event loop keeps accepting requests meanwhile), and resolves each caller's future
with its own result. Batches run one at a time, so the encoder is never called concurrently, and
always on the same dedicated thread (torch's OpenMP pool belongs to the calling thread: one thread
keeps one warm pool instead of one per executor thread).

With `max_wait_ms=0` (the service's default) a batch starts as soon as a request arrives, with
whatever else is already queued: a lone client never waits for company, and under load the requests
that arrive while one batch runs form the next, so batches still fill up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")


@dataclass
class BatcherStats:
    """Counters for /healthz and the latency benchmark."""

    requests: int = 0
    batches: int = 0
    largest_batch: int = 0

    @property
    def mean_batch(self) -> float:
        return self.requests / self.batches if self.batches else 0.0


class MicroBatcher(Generic[RequestT, ResultT]):
    """Collects `submit`ted requests into batches for `batch_fn` (one result per request, in order)."""

    def __init__(
        self,
        batch_fn: Callable[[Sequence[RequestT]], Sequence[ResultT]],
        max_batch: int = 32,
        max_wait_ms: float = 0.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch: must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms: must be >= 0, got {max_wait_ms}")
        self.batch_fn = batch_fn
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.stats = BatcherStats()
        self._queue: asyncio.Queue[tuple[RequestT, asyncio.Future[ResultT]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._thread: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Start the worker on the running event loop (call from the app's lifespan)."""
        self._queue = asyncio.Queue()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="karma-encoder")
        self._worker = asyncio.create_task(self._run(), name="karma-micro-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._worker = None
        if self._thread is not None:
            self._thread.shutdown(wait=False)
        self._thread = None

    async def submit(self, request: RequestT) -> ResultT:
        """Queue one request and wait for its own result (or the batch's exception)."""
        if self._queue is None or self._worker is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        future: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        await self._queue.put((request, future))
        return await future

    async def _collect(self) -> list[tuple[RequestT, asyncio.Future[ResultT]]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while len(batch) < self.max_batch:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                # Take whatever is already waiting, without waiting any longer.
                while len(batch) < self.max_batch and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            live = [(r, f) for r, f in batch if not f.cancelled()]  # caller went away
            if not live:
                continue
            requests = [r for r, _ in live]
            self.stats.requests += len(live)
            self.stats.batches += 1
            self.stats.largest_batch = max(self.stats.largest_batch, len(live))
            try:
                loop = asyncio.get_running_loop()
                results = await loop.run_in_executor(self._thread, self.batch_fn, requests)
                if len(results) != len(requests):
                    raise RuntimeError(
                        f"batch_fn returned {len(results)} results for {len(requests)}"
                    )
            except Exception as exc:  # every caller of the batch sees the failure
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(live, results):
                if not future.done():
                    future.set_result(result)
