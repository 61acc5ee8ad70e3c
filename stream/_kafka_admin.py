"""Kafka plumbing shared by the gateway bus, the Faust workers, tests and the bench.

Topic names: ``<prefix>.<bus topic>`` (``livecoach.calls`` …), every topic with the same partition
count so that one call (key = call_id) lands on the same partition number everywhere, which the
Faust tables rely on (a table's changelog partition is the source event's partition).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Iterable

from livecoach.bus import TOPICS

log = logging.getLogger(__name__)


def bootstrap_servers(bus_url: str) -> str:
    """``kafka://h1:9092,h2:9092`` → ``h1:9092,h2:9092`` (what Kafka clients take)."""
    if not bus_url.startswith("kafka://"):
        raise ValueError(f"not a Kafka bus URL: {bus_url!r} (expected kafka://host:port)")
    servers = bus_url[len("kafka://"):].strip("/")
    if not servers:
        raise ValueError("kafka:// URL names no broker (expected kafka://host:port)")
    return servers


def topic_name(prefix: str, topic: str) -> str:
    return f"{prefix}.{topic}"


def all_topic_names(prefix: str) -> list[str]:
    return [topic_name(prefix, t) for t in TOPICS]


async def ensure_topics(servers: str, names: Iterable[str], partitions: int, *, timeout: float = 30.0) -> None:
    """Create the topics that do not exist yet; fail loudly if one exists with another partition count
    (a producer that auto-created it would break per-call partitioning)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    names = list(names)
    deadline = time.monotonic() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=10_000)
        try:
            await admin.start()
            break
        except Exception as exc:
            if time.monotonic() > deadline:
                raise ConnectionError(f"no Kafka broker answers at {servers}: {exc}") from exc
            await asyncio.sleep(0.5)
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            resp = await admin.create_topics([NewTopic(n, partitions, 1) for n in missing])
            for err in getattr(resp, "topic_errors", []):
                name, code = err[0], err[1]
                if code not in (0, 36):  # 36: created meanwhile by another process
                    raise RuntimeError(f"could not create topic {name}: error {code} {err[2] if len(err) > 2 else ''}")
        for desc in await admin.describe_topics(names):
            n = len(desc.get("partitions", []))
            if n != partitions:
                raise RuntimeError(f"topic {desc['topic']} has {n} partitions, livecoach is configured for "
                                   f"{partitions} (LIVECOACH_KAFKA_PARTITIONS); every topic must match")
    finally:
        await admin.close()


async def _partitions(consumer, names: Iterable[str]) -> list:
    from aiokafka import TopicPartition

    tps = []
    for n in names:
        parts = consumer.partitions_for_topic(n)
        if parts is None:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public call
            parts = consumer.partitions_for_topic(n) or set()
        tps += [TopicPartition(n, p) for p in parts]
    return tps


async def pin_start_offsets(servers: str, group: str, names: Iterable[str]) -> int:
    """Commit the first offset of every partition of ``names`` that ``group`` has never committed.

    Faust commits a partition with no committed offset from whatever it acknowledged first, so a
    record it skipped at the very start of a partition (a rebalance race) would be committed past
    unseen. With a start offset on record, such a gap holds the commit back instead, where the
    worker's check finds it and reads the records again (see ``faust_app._reread_lost_offsets`` and ``_faust_consumer``).
    Returns how many partitions were pinned; a group that is already running is left as it is.
    """
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await _partitions(consumer, names)
        missing = [tp for tp in tps if await consumer.committed(tp) is None]
        if not missing:
            return 0
        starts = await consumer.beginning_offsets(missing)
        consumer.assign(missing)  # aiokafka commits only for partitions the consumer holds
        try:
            await consumer.commit({tp: starts[tp] for tp in missing})
        except Exception as exc:  # the group has live members: they hold the offsets
            log.warning("start offsets for %s not pinned (%s: %s)", group, type(exc).__name__, exc)
            return 0
        return len(missing)
    finally:
        await consumer.stop()


async def group_lag(servers: str, group: str, names: Iterable[str], *, detail: dict | None = None) -> dict[str, int]:
    """Messages each topic holds beyond what consumer group ``group`` has committed (``detail`` gets
    ``{"topic/partition": (committed, end)}`` for every partition that lags)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await _partitions(consumer, names)
        ends = await consumer.end_offsets(tps) if tps else {}
        lag: dict[str, int] = {}
        for tp in tps:
            committed = await consumer.committed(tp)
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, ends[tp] - (committed or 0))
            if detail is not None and ends[tp] > (committed or 0):
                detail[f"{tp.topic}/{tp.partition}"] = (committed, ends[tp])
        return lag
    finally:
        await consumer.stop()


async def wait_until_processed(servers: str, groups: Iterable[str], names: Iterable[str], *,
                               timeout: float = 120.0, settle: float = 1.0) -> None:
    """Wait until every group has committed every message on ``names`` (twice, ``settle`` apart).

    Workers send a stage's output before committing its input, so all-zero lag means the pipeline
    has nothing left in flight.
    """
    groups, names = list(groups), list(names)
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    last: dict[str, dict[str, int]] = {}
    while time.monotonic() < deadline:
        last = {g: await group_lag(servers, g, names) for g in groups}
        if all(v == 0 for lags in last.values() for v in lags.values()):
            if quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= settle:
                return
        else:
            quiet_since = None
        await asyncio.sleep(0.3)
    detail: dict = {}
    for g in groups:
        await group_lag(servers, g, names, detail=detail)
    raise TimeoutError(f"workers did not catch up in {timeout:.0f} s; lag: {last}; "
                       f"(committed, end) per partition: {detail}")
