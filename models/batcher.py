"""Micro-batching across concurrent calls.

Every call's detector awaits ``batcher.submit(item)``; one worker thread runs ``fn(batch)`` on
whatever has queued up: a batch closes when it holds ``max_batch`` items or ``max_wait_ms`` after
its first item arrived, whichever comes first. While the worker computes a batch, new items queue,
so under load batches fill up on their own (throughput grows with load) and at low load an item
waits at most ``max_wait_ms``.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Generic, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    def __init__(self, fn: Callable[[list[T]], Sequence[R]], max_batch: int = 32, max_wait_ms: float = 2.0,
                 name: str = "batcher"):
        self.fn = fn
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.name = name
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.batches = 0
        self.items = 0

    def _ensure(self) -> asyncio.Queue:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._loop is not loop or self._task is None or self._task.done():
            self._loop = loop
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run(), name=self.name)
        return self._queue

    async def submit(self, item: T) -> R:
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._ensure().put_nowait((item, fut))
        return await fut

    async def submit_many(self, items: Sequence[T]) -> list[R]:
        return list(await asyncio.gather(*(self.submit(i) for i in items)))

    async def _run(self) -> None:
        q = self._queue
        assert q is not None
        loop = asyncio.get_running_loop()
        while True:
            first = await q.get()
            batch: list[tuple[Any, asyncio.Future]] = [first]
            deadline = time.perf_counter() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    batch.append(q.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(q.get(), remaining))
                except asyncio.TimeoutError:
                    break
            live = [(i, f) for i, f in batch if not f.done()]
            if not live:
                continue
            try:
                results = await loop.run_in_executor(self._pool, self.fn, [i for i, _ in live])
                if len(results) != len(live):
                    raise RuntimeError(f"{self.name}: fn returned {len(results)} results for {len(live)} items")
                for (_, f), r in zip(live, results):
                    if not f.done():
                        f.set_result(r)
            except Exception as exc:  # every waiter learns about the failure; the loop goes on
                for _, f in live:
                    if not f.done():
                        f.set_exception(exc)
            self.batches += 1
            self.items += len(live)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        self._pool.shutdown(wait=False, cancel_futures=True)
