"""The gateway's side of the Kafka bus (``livecoach serve --bus kafka://host:port``).

The gateway stores each inbound event, acknowledges it, and publishes it here; the pipeline stages
run in ``livecoach worker`` processes (Faust, see :mod:`livecoach.stream.faust_app`). What the
gateway itself subscribes to (the live board: every gateway shows every call) is read by a
group-less consumer from the end of each topic, so every gateway process sees every event.

Messages: key = call_id (UTF-8), value = the event's JSON, topic = ``<prefix>.<bus topic>``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from livecoach.bus import Handler
from livecoach.events import Event, parse_event
from livecoach.stream._kafka_admin import all_topic_names, bootstrap_servers, ensure_topics, topic_name

log = logging.getLogger(__name__)


class KafkaBus:
    """Bus protocol over Kafka (aiokafka): publish keyed by call_id; broadcast subscriptions."""

    def __init__(self, settings):
        self.servers = bootstrap_servers(settings.bus)
        self.prefix = settings.kafka_topic_prefix
        self.partitions = settings.kafka_partitions
        self._handlers: dict[str, list[Handler]] = defaultdict(list)
        self._producer = None
        self._consumers: list = []
        self._tasks: list[asyncio.Task] = []
        self._inflight: set[asyncio.Future] = set()
        self.failed = 0
        self._started = False

    def subscribe(self, topic: str, handler: Handler, *, group: str) -> None:
        if self._started:
            raise RuntimeError("KafkaBus.subscribe must be called before start()")
        self._handlers[topic].append(handler)

    async def start(self) -> None:
        if self._started:
            return
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        await ensure_topics(self.servers, all_topic_names(self.prefix), self.partitions)
        self._producer = AIOKafkaProducer(bootstrap_servers=self.servers, acks="all", linger_ms=2,
                                          request_timeout_ms=30_000)
        await self._producer.start()
        for topic, handlers in self._handlers.items():
            consumer = AIOKafkaConsumer(topic_name(self.prefix, topic), bootstrap_servers=self.servers,
                                        group_id=None, auto_offset_reset="latest", enable_auto_commit=False)
            await consumer.start()
            self._consumers.append(consumer)
            self._tasks.append(asyncio.create_task(self._consume(consumer, handlers), name=f"kafka:{topic}"))
        self._started = True

    async def _consume(self, consumer, handlers: list[Handler]) -> None:
        async for msg in consumer:
            try:
                event = parse_event(msg.value)
            except Exception:
                log.warning("unreadable message on %s/%s@%s skipped", msg.topic, msg.partition, msg.offset)
                continue
            for h in handlers:
                try:
                    await h(event)
                except Exception:
                    log.exception("gateway handler failed on %s", msg.topic)

    async def publish(self, topic: str, key: str, event: Event) -> None:
        if self._producer is None:
            raise RuntimeError("KafkaBus is not started")
        fut = await self._producer.send(topic_name(self.prefix, topic), value=event.model_dump_json().encode(),
                                        key=key.encode())
        self._inflight.add(fut)
        fut.add_done_callback(self._sent)

    def _sent(self, fut: asyncio.Future) -> None:
        self._inflight.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            self.failed += 1
            log.error("publishing to Kafka failed: %s (the event is stored, but the workers will "
                      "not see it)", fut.exception())

    async def drain(self) -> None:
        """Wait until everything published so far is acknowledged by the broker."""
        if self._producer is not None:
            await self._producer.flush()
        if self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for c in self._consumers:
            await c.stop()
        self._tasks.clear()
        self._consumers.clear()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        self._started = False
