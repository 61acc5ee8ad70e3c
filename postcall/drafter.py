"""The post-call stage: on CallEnded, read the stored call and draft its QA note."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
import logging
from typing import Any, Sequence

from livecoach.bus import CALLS, NOTES
from livecoach.events import CallEnded, Event, QANote
from livecoach.pipeline import Stage
from livecoach.postcall import _detectors, _tier1, records
from livecoach.postcall._scoring import draft_note
from livecoach.postcall.rubric import Rubric, load_rubric

log = logging.getLogger(__name__)


def draft_for_call(store, rubric: Rubric, call_id: str, *, use_detectors: bool = True,
                   wait_for_detectors: bool = False, low_csat: float = 4.0,
                   follow_up_calls: int = 5, tier1: "_tier1.Tier1Reader | None" = None,
                   wait_for_tier1: bool = False) -> dict[str, Any] | None:
    """Read everything a note needs from the store (sync) and draft its body; None for no call."""
    call = store.get_call(call_id)
    if call is None:
        return None
    extra = records.drafting_context(store.engine, call)
    return draft_note(call, rubric, late_csat=extra["late_csat"], ticket=extra["ticket"],
                      previous_focus=extra["previous_focus"], use_detectors=use_detectors,
                      wait_for_detectors=wait_for_detectors, low_csat=low_csat, follow_up_calls=follow_up_calls,
                      tier1=tier1, wait_for_tier1=wait_for_tier1)


def note_event(body: dict[str, Any]) -> QANote:
    r = body["rubric"]
    return QANote(call_id=body["call_id"], rubric_id=r["id"], rubric_version=r["version"], status="draft", body=body)


class NoteDrafter(Stage):
    """Consumes ``calls``; on ``call_ended`` drafts a note (status draft) for the ``notes`` topic.

    Transport-free: it reads the stored call through the store, never the live pipeline, so a
    redelivered CallEnded drafts the same note again (the store never overwrites a lead's decision).
    """

    name = "postcall"
    consumes = (CALLS,)
    produces = NOTES

    def __init__(self, settings, store, *, tier1_backend=None):
        """``tier1_backend``: a loaded tier-1 backend to share (e.g. ``SignalPolicy.tier1.backend``);
        without one the drafter loads its own lazily through ``livecoach.signals.tier1.make_backend``
        (unless ``settings.tier1_backend == "off"``: context judgements then use rules)."""
        self.settings = settings
        self.store = store
        self.rubric = load_rubric(getattr(settings, "rubric_file", None))
        self.use_detectors = bool(getattr(settings, "postcall_detectors", True))
        self.low_csat = float(getattr(settings, "postcall_low_csat", 4.0))
        self.follow_up_calls = int(getattr(settings, "postcall_follow_up_calls", 5))
        self._warm: asyncio.Task | None = None
        self._warm_t1: asyncio.Task | None = None
        # Drafting scores a whole transcript: a few threads at most, so that calls ending in a burst
        # queue their notes instead of taking the CPU (and the GIL) from live ingest.
        self._workers = int(getattr(settings, "postcall_workers", 4))
        self._pool: ThreadPoolExecutor | None = None
        self.tier1 = _tier1.reader_for(settings, tier1_backend)
        if not self.rubric.approved:
            log.error("postcall: rubric %s v%s is %s: notes will carry an exception instead of a score",
                      self.rubric.id, self.rubric.version, self.rubric.approval.state)

    async def start(self) -> None:
        if self.use_detectors:  # load the detectors off the event loop; notes use rules until then
            self._warm = asyncio.create_task(asyncio.to_thread(_detectors.warm_up))
        if self.tier1.status != "off":  # notes drafted before it is ready use rules (and say so)
            self._warm_t1 = asyncio.create_task(asyncio.to_thread(self.tier1.warm_up))

    async def _models_ready(self, timeout: float = 120.0) -> None:
        """A note must not depend on how soon after start-up its call ended: wait (once) for the
        models being loaded; if they fail or take too long, the note says it used rules."""
        for task in (self._warm, self._warm_t1):
            if task is not None and not task.done():
                try:
                    await asyncio.wait_for(asyncio.shield(task), timeout)
                except Exception:  # noqa: BLE001 - the note records the fallback
                    pass

    async def stop(self) -> None:
        for task in (self._warm, self._warm_t1):
            if task is not None and not task.done():
                task.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def draft(self, call_id: str) -> dict[str, Any] | None:
        return draft_for_call(self.store, self.rubric, call_id, use_detectors=self.use_detectors,
                              low_csat=self.low_csat, follow_up_calls=self.follow_up_calls, tier1=self.tier1)

    async def handle(self, event: Event, state: dict[str, Any]) -> Sequence[Event]:
        if not isinstance(event, CallEnded):
            return ()
        await self._models_ready()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="postcall")
        body = await asyncio.get_running_loop().run_in_executor(self._pool, self.draft, event.call_id)
        if body is None:
            return ()
        await self.store.run_write(lambda conn: records.after_draft(conn, body))
        return [note_event(body)]
