"""In-process asyncio bus: per-key ordering through hashed partitions, bounded queues."""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import defaultdict

from livecoach.bus import Handler
from livecoach.events import Event

log = logging.getLogger(__name__)


class _Group:
    def __init__(self, name: str, partitions: int, maxsize: int):
        self.name = name
        self.handlers: list[Handler] = []
        self.queues: list[asyncio.Queue[Event]] = [asyncio.Queue(maxsize) for _ in range(partitions)]
        self.tasks: list[asyncio.Task[None]] = []


class LocalBus:
    """Each subscriber group gets ``partitions`` ordered queues; a call always lands on the same one.

    ``publish`` waits when a queue is full (backpressure rather than loss).
    """

    def __init__(self, partitions: int = 32, maxsize: int = 10_000):
        self.partitions = partitions
        self.maxsize = maxsize
        self._groups: dict[str, dict[str, _Group]] = defaultdict(dict)
        self._running = False

    def subscribe(self, topic: str, handler: Handler, *, group: str) -> None:
        g = self._groups[topic].get(group)
        if g is None:
            g = self._groups[topic][group] = _Group(group, self.partitions, self.maxsize)
            if self._running:
                self._spawn(topic, g)
        g.handlers.append(handler)

    def _spawn(self, topic: str, g: _Group) -> None:
        for i, q in enumerate(g.queues):
            g.tasks.append(asyncio.create_task(self._consume(q, g), name=f"bus:{topic}:{g.name}:{i}"))

    async def _consume(self, q: asyncio.Queue[Event], g: _Group) -> None:
        while True:
            event = await q.get()
            try:
                for h in g.handlers:
                    try:
                        await h(event)
                    except Exception:
                        log.exception("bus handler in group %s failed", g.name)
            finally:
                q.task_done()

    def _partition(self, key: str) -> int:
        return zlib.crc32(key.encode()) % self.partitions

    async def publish(self, topic: str, key: str, event: Event) -> None:
        p = self._partition(key)
        for g in list(self._groups.get(topic, {}).values()):
            await g.queues[p].put(event)

    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        for topic, groups in self._groups.items():
            for g in groups.values():
                self._spawn(topic, g)

    async def drain(self) -> None:
        # Handlers publish onward, so repeat until a full pass finds every queue empty.
        while True:
            pending = [q for groups in self._groups.values() for g in groups.values() for q in g.queues
                       if q._unfinished_tasks]  # type: ignore[attr-defined]
            if not pending:
                return
            for q in pending:
                await q.join()

    async def stop(self) -> None:
        self._running = False
        tasks = [t for groups in self._groups.values() for g in groups.values() for t in g.tasks]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for groups in self._groups.values():
            for g in groups.values():
                g.tasks.clear()
