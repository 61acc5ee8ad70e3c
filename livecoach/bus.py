"""The bus: publish/subscribe keyed by call_id.

One call's events on one topic are delivered in order (like a Kafka partition); different calls
run concurrently. The in-process implementation is :class:`livecoach.stream.LocalBus`; the Kafka
one carries the same stages (see stream/).

Topics:
  ``calls``      CallStarted, final Utterance, AgentAction, CallEnded — after they are stored
  ``partials``   PartialUtterance — live ASR hypotheses (console only)
  ``detections`` Signal candidates from tier-0/tier-1 detectors, before the policy
  ``signals``    Signal after the policy (stored, shown to leads, cues sent to agents)
  ``notes``      QANote drafts
"""

from __future__ import annotations

from typing import Awaitable, Callable, Protocol

from livecoach.events import Event

CALLS, PARTIALS, DETECTIONS, SIGNALS, NOTES = "calls", "partials", "detections", "signals", "notes"
TOPICS = (CALLS, PARTIALS, DETECTIONS, SIGNALS, NOTES)

Handler = Callable[[Event], Awaitable[None]]


class Bus(Protocol):
    async def publish(self, topic: str, key: str, event: Event) -> None:
        """Deliver ``event`` to every subscriber group of ``topic``, in order per ``key``."""

    def subscribe(self, topic: str, handler: Handler, *, group: str) -> None:
        """Register ``handler`` for ``topic``; each group sees every event once."""

    async def start(self) -> None: ...

    async def drain(self) -> None:
        """Wait until everything published so far has been handled (tests, demo, shutdown)."""

    async def stop(self) -> None: ...
