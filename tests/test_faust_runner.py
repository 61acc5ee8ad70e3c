"""The stage runner that carries a stage inside a Faust worker: redelivered events count once.

Faust hands the runner an event with its Kafka message; these tests hand it the same shape (the
topic, offset and headers a Kafka message has) and a dict for the stage's Faust table.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from _kafka_stages import Heard
from livecoach.events import Signal, Utterance
from livecoach.stream._faust_runner import ORIGIN_HEADER, StageRunner


class Counted:
    """A stage that counts what reaches it per call (in its Faust-table state)."""

    name = "count"
    consumes = ("signals",)
    produces = None

    async def start(self): ...

    async def stop(self): ...

    async def handle(self, event, state):
        state.setdefault("seen", []).append(event.evidence[0].seq)
        return []


def _utterance(seq: int) -> Utterance:
    return Utterance(call_id="c1", seq=seq, speaker="customer", text=f"line {seq}", t_start=float(seq))


def _message(value, offset: int, origin: str | None = None):
    headers = [(ORIGIN_HEADER, origin.encode())] if origin else []
    return SimpleNamespace(value=value.model_dump_json().encode(),
                           message=SimpleNamespace(topic="t", partition=0, offset=offset, headers=headers))


def _signal(seq: int) -> Signal:
    from livecoach.events import EvidenceRef

    return Signal(call_id="c1", kind="heard", confidence=1.0, detector="heard",
                  evidence=[EvidenceRef(seq=seq, excerpt="x", t=0.0)])


def test_a_redelivered_call_event_is_applied_once():
    runner = StageRunner(Heard(), table={})
    for offset, seq in [(10, 1), (11, 2), (10, 1), (12, 3), (11, 2)]:  # 1 and 2 come again after a takeover
        asyncio.run(runner.on_message(_message(_utterance(seq), offset), "calls"))
    assert runner.table["c1"]["s"]["n"] == 3
    assert (runner.handled, runner.skipped) == (3, 2)


def test_an_output_made_from_an_earlier_offset_still_counts_when_it_arrives_late():
    # after a partition is read again from its committed offset, the re-made output of source
    # offset 13 reaches the next stage after that of offset 15: it is new, not a repeat
    runner = StageRunner(Counted(), table={})
    for off, seq in [(12, 5), (15, 7), (13, 6), (15, 7), (12, 5)]:
        asyncio.run(runner.on_message(_message(_signal(seq), 100 + off, origin=f"heard|calls|{off}|0"), "signals"))
    assert runner.table["c1"]["s"]["seen"] == [5, 7, 6]
    assert runner.skipped == 2


def test_call_events_that_never_arrived_are_handled_from_the_store_first_and_in_order():
    # seq 2 and 3 were stored (and acked by the gateway) but never reached this stage
    stored = {s: _utterance(s) for s in (1, 2, 3, 4)}
    asked = []

    def fetch_missing(call_id, seqs):
        asked.append((call_id, seqs))
        return [stored[s] for s in seqs]

    runner = StageRunner(Heard(), table={}, fetch_missing=fetch_missing)
    for offset, seq in [(10, 1), (13, 4), (11, 2)]:  # the late copy of 2 counts once
        asyncio.run(runner.on_message(_message(_utterance(seq), offset), "calls"))
    assert asked == [("c1", [2, 3])]
    assert runner.table["c1"]["s"]["n"] == 4
    assert (runner.handled, runner.filled, runner.skipped) == (4, 2, 1)
