"""Stages and the pipeline that carries them on a bus.

A stage is transport-free: it takes one event plus that call's state (a plain JSON-able dict the
runtime keeps per stage and call) and returns the events it produces. The in-process bus and the
Faust workers run the same stage objects; only where ``state`` lives differs.

    class Shout(Stage):
        name = "shout"
        consumes = (CALLS,)
        produces = SIGNALS
        async def handle(self, event, state):
            ...
            return [Signal(...)]
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Sequence

from livecoach.bus import Bus
from livecoach.events import CallEnded, Event

log = logging.getLogger(__name__)


class Stage:
    """Base class for a pipeline stage (subclass and implement :meth:`handle`)."""

    name: ClassVar[str] = "stage"
    consumes: ClassVar[tuple[str, ...]] = ()
    produces: ClassVar[str | None] = None
    # With the Kafka bus: "worker" stages run in `livecoach worker` processes (calls split between
    # them); "gateway" stages run in every `livecoach serve` process and see every event (the live board).
    placement: ClassVar[str] = "worker"

    async def start(self) -> None:
        """Load models, open pools. Called once before the first event."""

    async def stop(self) -> None:
        """Release what :meth:`start` took."""

    async def handle(self, event: Event, state: dict[str, Any]) -> Sequence[Event]:
        raise NotImplementedError


class Pipeline:
    """Subscribes stages to a bus and routes what they return to their output topic."""

    def __init__(self, bus: Bus, stages: Sequence[Stage]):
        self.bus = bus
        self.stages = list(stages)
        self._state: dict[str, dict[str, dict[str, Any]]] = {s.name: {} for s in self.stages}
        self.errors = 0
        for stage in self.stages:
            for topic in stage.consumes:
                bus.subscribe(topic, self._runner(stage), group=stage.name)
            bind = getattr(stage, "bind_publisher", None)
            if callable(bind) and stage.produces:
                # a stage that produces between events (e.g. a tier-1 verdict) publishes through this
                bind(self._publisher(stage.produces))

    def _publisher(self, topic: str):
        async def publish(event: Event) -> None:
            await self.bus.publish(topic, event.call_id, event)

        return publish

    def _runner(self, stage: Stage):
        states = self._state[stage.name]

        async def run(event: Event) -> None:
            call_id = event.call_id
            state = states.setdefault(call_id, {})
            try:
                out = await stage.handle(event, state)
            except Exception:  # one bad event must not stop a stage for every call
                self.errors += 1
                log.exception("stage %s failed on %s/%s", stage.name, call_id, getattr(event, "type", "?"))
                out = ()
            if isinstance(event, CallEnded):
                states.pop(call_id, None)
            if out and stage.produces:
                for e in out:
                    await self.bus.publish(stage.produces, e.call_id, e)

        return run

    async def start(self) -> None:
        for s in self.stages:
            await s.start()

    async def stop(self) -> None:
        for s in reversed(self.stages):
            try:
                await s.stop()
            except Exception:
                log.exception("stage %s failed to stop", s.name)
