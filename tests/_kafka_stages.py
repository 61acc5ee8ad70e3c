"""Stages the Kafka tests add to the real line-up (workers load them with --extra-stage)."""

from __future__ import annotations

import os

from livecoach.bus import CALLS, SIGNALS
from livecoach.events import EvidenceRef, Signal, Utterance
from livecoach.pipeline import Stage


class Heard(Stage):
    """One signal per utterance carrying how many utterances of the call this stage had counted.

    Signal ids depend on the utterance only, so a repeated delivery is stored once; the count lives in
    the per-call state, so a repeated *application* shows as a count that skips ahead, and lost state
    (a worker died, its table was not restored) as a count that starts again from 1.
    """

    name = "heard"
    consumes = (CALLS,)
    produces = SIGNALS

    async def handle(self, event, state):
        if not isinstance(event, Utterance):
            return []
        state["n"] = state.get("n", 0) + 1
        return [Signal(call_id=event.call_id, kind="heard", confidence=1.0, detector=self.name,
                       evidence=[EvidenceRef(seq=event.seq, excerpt=event.text[:40], t=event.t_start)],
                       details={"n": state["n"], "pid": os.getpid()})]


def heard(settings, store) -> Stage:
    return Heard()
