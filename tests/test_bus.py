"""The in-process bus keeps one call's events in order and carries stages' outputs onward."""

from __future__ import annotations

import asyncio
import random

from livecoach.bus import CALLS, SIGNALS
from livecoach.events import CallEnded, CallStarted, Signal, Utterance
from livecoach.pipeline import Pipeline, Stage
from livecoach.stream.local_bus import LocalBus


class CountWords(Stage):
    """Raises a signal on every tenth customer word; keeps its count in the per-call state."""

    name = "count_words"
    consumes = (CALLS,)
    produces = SIGNALS

    async def handle(self, event, state):
        if isinstance(event, Utterance) and event.speaker == "customer":
            await asyncio.sleep(random.random() / 1000)  # calls interleave
            before = state.get("words", 0)
            state["words"] = before + len(event.text.split())
            if state["words"] // 10 > before // 10:
                return [Signal(call_id=event.call_id, kind="talkative", confidence=1.0, detector=self.name,
                               details={"words": state["words"], "seq": event.seq})]
        return []


async def test_events_of_one_call_arrive_in_order_across_many_calls():
    bus = LocalBus(partitions=4)
    seen: dict[str, list[int]] = {}

    async def record(ev):
        await asyncio.sleep(random.random() / 2000)
        seen.setdefault(ev.call_id, []).append(ev.seq)

    bus.subscribe(CALLS, record, group="recorder")
    await bus.start()
    for seq in range(1, 51):
        for c in range(20):
            await bus.publish(CALLS, f"call-{c}", Utterance(call_id=f"call-{c}", seq=seq, speaker="agent", text="x"))
    await bus.drain()
    await bus.stop()
    assert seen == {f"call-{c}": list(range(1, 51)) for c in range(20)}


async def test_stage_output_is_routed_and_state_is_per_call_and_dropped_at_call_end():
    bus = LocalBus(partitions=2)
    stage = CountWords()
    pipeline = Pipeline(bus, [stage])
    out: list[Signal] = []

    async def collect(ev):
        out.append(ev)

    bus.subscribe(SIGNALS, collect, group="collector")
    await pipeline.start()
    await bus.start()
    for cid in ("a", "b"):
        await bus.publish(CALLS, cid, CallStarted(call_id=cid, seq=1, agent_id="x"))
        for seq in range(2, 8):
            await bus.publish(CALLS, cid, Utterance(call_id=cid, seq=seq, speaker="customer", text="one two three"))
    await bus.drain()
    assert sorted((s.call_id, s.details["seq"]) for s in out) == [("a", 5), ("b", 5)]
    assert pipeline._state["count_words"]["a"] == {"words": 18}
    await bus.publish(CALLS, "a", CallEnded(call_id="a", seq=8))
    await bus.drain()
    assert "a" not in pipeline._state["count_words"]
    await bus.stop()


async def test_a_failing_stage_does_not_stop_other_calls():
    class Fragile(Stage):
        name = "fragile"
        consumes = (CALLS,)
        produces = SIGNALS

        async def handle(self, event, state):
            if event.call_id == "bad":
                raise RuntimeError("boom")
            return [Signal(call_id=event.call_id, kind="seen", confidence=1.0)]

    bus = LocalBus(partitions=1)
    pipeline = Pipeline(bus, [Fragile()])
    got = []

    async def collect(ev):
        got.append(ev.call_id)

    bus.subscribe(SIGNALS, collect, group="c")
    await bus.start()
    for cid in ("bad", "good", "bad", "good"):
        await bus.publish(CALLS, cid, CallStarted(call_id=cid, seq=1, agent_id="x"))
    await bus.drain()
    await bus.stop()
    assert got == ["good", "good"] and pipeline.errors == 2
