"""Runs one Stage inside a Faust worker: per-call state in a Faust Table, at-least-once made idempotent.

Kafka delivers at least once: after a crash, events since the last committed offset come again,
and the Faust table (restored from its changelog) may already hold their effect. So each call's
table entry keeps, next to the stage's own state, a marker of what the stage has applied:

* events with a ``seq`` (the stored call events) — which seqs were handled;
* events another stage produced — the producing stage and the source offset/index they came from,
  carried in the ``lc-origin`` header (a re-produced duplicate has a new offset of its own but the
  same origin); every origin is kept, since after a takeover they can arrive out of order.

A seen event is skipped. Outputs are delivered (broker-acknowledged) *before* the table entry that
marks their input as applied is written, and Faust flushes the producer before committing offsets,
so a crash can repeat an output (same origin, same deterministic signal id: dropped downstream) but
never lose one.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from typing import Any

from livecoach.bus import CALLS
from livecoach.events import CallEnded, Event, parse_event
from livecoach.pipeline import Stage

log = logging.getLogger(__name__)
# every event a stage applies or skips, at INFO, when the worker runs with ``worker_trace``
trace = logging.getLogger("livecoach.trace")

ORIGIN_HEADER = "lc-origin"
_CACHE_MAX = 20_000
_ORIGINS_MAX = 4_000


def _header(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    items = headers.items() if isinstance(headers, dict) else headers
    for k, v in items:
        if k == name:
            return v.decode() if isinstance(v, (bytes, bytearray)) else str(v)
    return None


class _SeqMarks:
    """Seqs handled for one topic: a contiguous high-water mark plus the few seen above it."""

    @staticmethod
    def seen(mark: dict[str, Any], seq: int) -> bool:
        return seq <= mark.get("hw", 0) or seq in mark.get("above", ())

    @staticmethod
    def add(mark: dict[str, Any], seq: int) -> None:
        hw = mark.get("hw", 0)
        above = set(mark.get("above", ()))
        above.add(seq)
        while hw + 1 in above:
            hw += 1
            above.discard(hw)
        mark["hw"] = hw
        mark["above"] = sorted(s for s in above if s > hw)


class _OriginMarks:
    """Source positions (offset, index) already applied for one producer and source topic of one call.

    Not a high-water mark: after a takeover a partition is read again from its committed offset, so
    an output made from an earlier source offset can arrive after one made from a later offset and
    must still count. Every position is kept (a call has a few hundred events at most); past
    ``_ORIGINS_MAX`` the older half folds into a floor below which everything counts as seen.
    """

    @staticmethod
    def seen(mark: Any, pos: list[int]) -> bool:
        if not mark:
            return False
        if isinstance(mark, list):  # an entry written before positions were kept: a high-water mark
            return pos <= mark
        floor = mark.get("floor")
        return (floor is not None and pos <= floor) or pos in mark.get("seen", [])

    @staticmethod
    def add(mark: Any, pos: list[int]) -> dict[str, Any]:
        if not isinstance(mark, dict):
            mark = {"floor": mark} if mark else {}
        seen = sorted([*mark.get("seen", []), pos])
        if len(seen) > _ORIGINS_MAX:
            cut = len(seen) // 2
            floor = seen[cut - 1]
            mark["floor"] = max(floor, mark["floor"]) if mark.get("floor") else floor
            seen = seen[cut:]
        mark["seen"] = seen
        return mark


class StageRunner:
    """Feeds Faust events to one stage; ``table`` is that stage's Faust Table (key call_id)."""

    def __init__(self, stage: Stage, table, out_topic=None, fetch_missing=None):
        """``fetch_missing(call_id, seqs) -> events``: stored call events by seq (a sync store read),
        used when a call's events arrive with a gap; None: gaps are not filled."""
        self.stage = stage
        self.fetch_missing = fetch_missing
        self.filled = 0
        self.table = table
        self.out_topic = out_topic
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._started = False
        self._start_lock = asyncio.Lock()
        self.handled = 0
        self.skipped = 0
        self.errors = 0
        self.busy: tuple[str, str, float] | None = None  # (what, call_id, since): for the stall watchdog

    async def ensure_started(self) -> None:
        if self._started:
            return
        async with self._start_lock:
            if not self._started:
                await self.stage.start()
                self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self.stage.stop()

    def forget(self) -> None:
        """Partitions moved: read state from the table again (another worker may have advanced it)."""
        self._cache.clear()

    def _entry(self, call_id: str) -> dict[str, Any]:
        entry = self._cache.get(call_id)
        if entry is None:
            stored = self.table.get(call_id)
            entry = json.loads(json.dumps(stored)) if stored else {"s": {}, "m": {}}
            self._cache[call_id] = entry
            while len(self._cache) > _CACHE_MAX:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(call_id)
        return entry

    async def on_message(self, fevent, topic: str) -> None:
        """Handle one Faust event (inside the agent, so table writes go to the right changelog)."""
        msg = fevent.message
        try:
            event = parse_event(fevent.value)
        except Exception:
            self.errors += 1
            log.warning("unreadable message on %s/%s@%s skipped", msg.topic, msg.partition, msg.offset)
            return
        call_id = event.call_id
        entry = self._entry(call_id)
        marks = entry["m"]
        origin = _header(msg.headers, ORIGIN_HEADER)
        if origin:
            producer, src, off, idx = origin.rsplit("|", 3)
            mkey, mval = f"{producer}|{src}", [int(off), int(idx)]
            if _OriginMarks.seen(marks.get(mkey), mval):
                trace.info("%s skip %s %s/%s@%s origin=%s", self.stage.name, call_id, msg.topic,
                           msg.partition, msg.offset, origin)
                self.skipped += 1
                return
        elif getattr(event, "seq", None) is not None:
            mkey = f"seq|{topic}"
            mark = marks.get(mkey, {})
            if _SeqMarks.seen(mark, event.seq):
                trace.info("%s skip %s %s/%s@%s seq=%s", self.stage.name, call_id, msg.topic,
                           msg.partition, msg.offset, event.seq)
                self.skipped += 1
                return
            if self.fetch_missing is not None and topic == CALLS:
                missing = [s for s in range(mark.get("hw", 0) + 1, event.seq) if not _SeqMarks.seen(mark, s)]
                if missing:
                    await self._fill(call_id, entry, topic, missing)
        else:
            mkey = None
        trace.info("%s apply %s %s/%s@%s seq=%s origin=%s", self.stage.name, call_id, msg.topic,
                   msg.partition, msg.offset, getattr(event, "seq", None), origin)
        await self._apply(event, entry, topic, mkey, origin and mval, msg.offset)

    async def _fill(self, call_id: str, entry: dict[str, Any], topic: str, seqs: list[int]) -> None:
        """Handle stored events of this call that never reached the stage (skipped by Faust around a
        rebalance, or stored by the gateway but never published), in order, before the current one.
        The store is the record: the gateway acks an event only once it is stored."""
        try:
            found = await asyncio.to_thread(self.fetch_missing, call_id, seqs)
        except Exception:
            log.exception("stage %s: cannot read missing events %s of %s from the store", self.stage.name, seqs,
                          call_id)
            return
        if found:
            log.warning("stage %s: call %s events %s never arrived; handled from the store", self.stage.name,
                        call_id, [e.seq for e in found])
        for ev in sorted(found, key=lambda e: e.seq):
            self.filled += 1
            await self._apply(ev, entry, topic, f"seq|{topic}", None, -ev.seq)

    async def _apply(self, event: Event, entry: dict[str, Any], topic: str, mkey: str | None,
                     origin_pos: list[int] | None, offset: int) -> None:
        call_id = event.call_id
        marks = entry["m"]
        await self.ensure_started()
        loop = asyncio.get_running_loop()
        self.busy = ("handle", call_id, loop.time())
        try:
            out = await self.stage.handle(event, entry["s"])
        except Exception:  # one bad event must not stop a stage for every call
            self.errors += 1
            log.exception("stage %s failed on %s/%s", self.stage.name, call_id, getattr(event, "type", "?"))
            out = ()
        if out and self.stage.produces and self.out_topic is not None:
            self.busy = ("deliver", call_id, loop.time())
            pending = []
            for i, e in enumerate(out):
                pending.append(await self.out_topic.send(
                    key=e.call_id.encode(), value=e.model_dump_json().encode(),
                    headers=[(ORIGIN_HEADER, f"{self.stage.name}|{topic}|{offset}|{i}".encode())]))
            await asyncio.gather(*pending)  # on the broker before the input counts as applied
            trace.info("%s delivered %d for %s", self.stage.name, len(pending), call_id)
        if mkey is not None:
            if origin_pos:
                marks[mkey] = _OriginMarks.add(marks.get(mkey), origin_pos)
            else:
                _SeqMarks.add(marks.setdefault(mkey, {}), event.seq)
        if isinstance(event, CallEnded):
            entry["s"] = {}  # as the in-process pipeline drops state at the end of the call
        self.table[call_id] = self._snapshot(entry)
        self.handled += 1
        self.busy = None
        trace.info("%s done %s", self.stage.name, call_id)

    def _snapshot(self, entry: dict[str, Any]) -> dict[str, Any]:
        try:
            return json.loads(json.dumps(entry))
        except (TypeError, ValueError):
            log.error("stage %s keeps state that is not JSON (%s); stored as text", self.stage.name,
                      sorted(entry["s"]))
            return json.loads(json.dumps(entry, default=str))

    async def publish_between_events(self, event: Event) -> None:
        """For stages that produce outside ``handle`` (``bind_publisher``): no origin, no replay."""
        if self.out_topic is None:
            return
        fut = await self.out_topic.send(key=event.call_id.encode(), value=event.model_dump_json().encode())
        await fut
