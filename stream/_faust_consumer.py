"""Faust's aiokafka consumer with commits that never pass a record no stage handled.

Faust (faust-streaming 0.15) commits a partition through the run of consecutive offsets its streams
acknowledged. Three details of that bookkeeping let a takeover commit past a record that was never
handled, which is how the kill test lost a ``heard`` signal (docs/scale-out.md, "Takeover"):

1. A record a stream *skips* around a rebalance (older generation, or flow stopped) is acknowledged
   all the same. When the skip happens after the revoke cleared the partition's bookkeeping, its
   offset counts as handled in the next generation, and the commit can move past it before the copy
   fetched again after the seek has reached the stage; the next rebalance then starts after it.
2. The head-of-queue check lets one offset through: with committed offset ``c`` (the next record to
   read) and ``c + 1`` acknowledged, ``c`` itself is committed past (``min(acked) - c > 1``).
3. A committed offset of 0 is kept as "none", which switches that check off on every partition
   whose group started at the beginning of the log (``pin_start_offsets`` commits exactly that).

:class:`SafeCommitConsumer` refuses the acknowledgement of a skipped or stale record (it stays
unhandled, so the partition is read again from its commit: the stage runner skips what it already
applied), requires the acknowledged run to start exactly at the committed offset (or at a gap Faust
recorded between fetched records), and keeps a committed 0 as 0. :func:`lost_offsets` is the same
test, used by the worker's watchdog to re-read a partition whose commit is held back by a hole.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

from faust.transport.drivers.aiokafka import Consumer as _AiokafkaConsumer
from faust.types import TP
from faust.types.tuples import ack_lock


class SafeCommitConsumer(_AiokafkaConsumer):
    """Faust's aiokafka consumer; only the acknowledgement and commit bookkeeping differ."""

    def _stale(self, message) -> bool:
        app = self.app
        return (not app.flow_control.is_active()
                or getattr(message, "generation_id", None) != app.consumer_generation_id)

    def ack(self, message) -> bool:
        with ack_lock:
            if not message.acked and self._stale(message):
                # skipped by the stream, or finished after its partition was revoked: not handled
                # in this generation, so it must not count towards a commit
                message.acked = True
                self._unacked_messages.discard(message)
                return False
        return super().ack(message)

    def _new_offset(self, tp: TP) -> Optional[int]:
        acked = self._acked[tp]
        if not acked:
            return None
        gaps = self._gap[tp]
        if gaps:  # offsets missing from the log between fetched records count as handled
            top = max(acked)
            spans = sorted(gaps.overlap(0, top), key=lambda iv: iv.begin)
            if spans:
                fill = [o for iv in spans for o in range(iv.begin, iv.end)]
                acked.extend(fill)
                gaps.chop(0, max(fill[-1], top + 1))
        acked.sort()
        committed = self._committed_offset[tp]
        if committed is not None and acked[0] > committed:
            return None  # offsets [committed, first acked) not handled yet: no commit passes them
        run = 1
        while run < len(acked) and acked[run] <= acked[run - 1] + 1:
            run += 1
        top = acked[run - 1]
        del acked[:run]
        self._acked_index[tp].difference_update(range(top - run + 1, top + 1))
        return top + 1

    async def perform_seek(self) -> None:
        committed = await self.seek_to_committed()
        self._read_offset.update({tp: (o if o is not None and o >= 0 else None) for tp, o in committed.items()})
        self._committed_offset.update({_tp(tp): o for tp, o in committed.items() if o is not None and o >= 0})


def _tp(tp) -> TP:
    return tp if isinstance(tp, TP) else TP(tp.topic, tp.partition)


def install(app) -> None:
    """Make ``app`` (a faust.App whose consumer is not created yet) use :class:`SafeCommitConsumer`, and
    read its stream partitions again from their commits at the end of every rebalance."""
    app.transport.Consumer = SafeCommitConsumer
    end = app.on_rebalance_end

    def on_rebalance_end() -> None:
        end()
        asyncio.ensure_future(read_again_after_rebalance(app))

    app.on_rebalance_end = on_rebalance_end


async def read_again_after_rebalance(app) -> int:
    """Seek every stream partition back to its committed offset; returns how many.

    Faust resumes the flow of records during table recovery and then, at the end of the rebalance,
    resumes it again with ``clear_on_resume``: the streams' buffers are emptied, and records delivered
    in between that not every stream had taken are gone while the fetcher has moved past them. Their
    commit then waits for ever. Reading from the commit brings them back; the stage runners skip what
    they already applied.
    """
    if app.rebalancing or not app.flow_control.is_active():
        return 0
    consumer = app.consumer
    changelogs = app.tables.changelog_topics
    n = 0
    for tp, committed in list(consumer._committed_offset.items()):
        if committed is None or tp.topic in changelogs:
            continue
        await reread(consumer, tp, committed)
        n += 1
    return n


def lost_offsets(consumer, positions: dict[Any, int | None], *, idle: bool = False) -> dict[Any, tuple[int, int]]:
    """Partitions whose commit cannot advance: ``{tp: (committed, first)}`` where offsets
    ``[committed, first)`` were fetched but will never be handled. ``positions`` are the fetch positions
    of the stream partitions (``None``: unknown); ``idle``: no stage has handled anything since the last
    check and none is busy, so every record still marked in flight is an orphan.

    Two ways to get there, both seen in the kill test:

    * a hole: later offsets are acknowledged, the one at the commit never will be (skipped by a stream
      around a rebalance, or its acknowledgement refused as stale) and nothing of it is in flight;
    * a drop: the records were delivered to the streams' buffers and Faust's final "resume flow" of a
      rebalance cleared those buffers (``clear_on_resume``) before every stream had taken them; the
      fetcher has moved on, nothing is acknowledged at the commit, and the worker sits idle.
    """
    out: dict[Any, tuple[int, int]] = {}
    in_flight = {m.tp for m in consumer._unacked_messages}
    for tp, acked in list(consumer._acked.items()):
        committed = consumer._committed_offset.get(tp)
        if acked and committed is not None and tp not in in_flight and min(acked) > committed:
            out[tp] = (committed, min(acked))
    for tp, position in positions.items():
        committed = consumer._committed_offset.get(tp)
        if tp in out or committed is None or position is None or position <= committed:
            continue
        acked = consumer._acked.get(tp)
        if acked and min(acked) <= committed:
            continue  # the next commit moves on
        read = consumer._read_offset.get(tp)
        nothing_delivered = not acked and tp not in in_flight and (read is None or read <= committed)
        if idle or nothing_delivered:
            out[tp] = (committed, position)
    return out


async def reread(consumer, tp, offset: int) -> None:
    """Read ``tp`` again from ``offset`` (its commit), forgetting what it still marks in flight."""
    drop_orphans(consumer, tp)
    await consumer.seek(tp, offset)


def drop_orphans(consumer, tp) -> int:
    """Forget the records of ``tp`` still marked in flight (before it is read again from its commit)."""
    orphans = [m for m in list(consumer._unacked_messages) if m.tp == tp]
    for m in orphans:
        consumer._unacked_messages.discard(m)
    return len(orphans)


def positions(consumer) -> dict[Any, int | None]:
    """Fetch positions of the aiokafka consumer inside Faust's consumer thread (stream topics only)."""
    inner = consumer._thread._consumer
    if inner is None:
        return {}
    assignment = inner._subscription.subscription.assignment if inner._subscription.subscription else None
    if assignment is None:
        return {}
    changelogs = consumer.app.tables.changelog_topics
    out = {}
    for tp in list(assignment.tps):
        if tp.topic in changelogs:
            continue
        st = assignment.state_value(tp)
        out[_tp(tp)] = st.position if st.has_valid_position else None
    return out
