"""Stages that belong to no detector: storing what the pipeline produced."""

from __future__ import annotations

import logging
from typing import Any, Sequence

from livecoach.bus import DETECTIONS, NOTES, SIGNALS
from livecoach.events import Event, QANote, Signal
from livecoach.pipeline import Stage
from livecoach.store import Store

log = logging.getLogger(__name__)


class StoreSignals(Stage):
    """Persist every signal the policy let through (once: signal ids are deterministic)."""

    name = "store_signals"
    consumes = (SIGNALS,)

    def __init__(self, store: Store):
        self.store = store

    async def handle(self, event: Event, state: dict[str, Any]) -> Sequence[Event]:
        if isinstance(event, Signal):
            await self.store.save_signal(event)
        return ()


class StoreNotes(Stage):
    """Persist QA note drafts (a lead's decision is never overwritten)."""

    name = "store_notes"
    consumes = (NOTES,)

    def __init__(self, store: Store):
        self.store = store

    async def handle(self, event: Event, state: dict[str, Any]) -> Sequence[Event]:
        if isinstance(event, QANote):
            await self.store.save_note(event)
        return ()


class LeadsOnly(Stage):
    """The fallback policy: every detection goes to the lead feed, nothing to agents."""

    name = "policy"
    consumes = (DETECTIONS,)
    produces = SIGNALS

    async def handle(self, event: Event, state: dict[str, Any]) -> Sequence[Event]:
        if isinstance(event, Signal):
            return [event.model_copy(update={"audience": "lead"})]
        return ()
