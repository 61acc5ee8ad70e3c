"""Start-up catch-up: calls that ended while the server was down get their QA note.

An event is acked once it is stored; the pipeline sees it after that. A crash (SIGKILL, power loss)
between the two leaves stored events that no stage has seen. On start the embedded server looks
for ended calls without a QA note (ended within ``settings.catchup_window_days``) and drafts them
with the live post-call stage (``NoteDrafter``: it reads the stored call through the store, as it
does live), publishing each note on the ``notes`` topic so it is stored and fed like a live one.
It runs in the background: the server is ready at once; progress is logged and kept in
:class:`CatchUp` (``app.state.catch_up``).

What is not caught up, on purpose:

* Live signals (detectors, policy, agent prompts) for utterances stored but not processed before
  the crash. They are coaching for a moment that has passed: a prompt to an agent minutes late, or a
  lead alert for a call already over, is noise. The detectors' per-call state (cooldowns, caps,
  compliance order) is lost with the process too, so re-running only the unprocessed tail would
  judge it without its context (e.g. "disclosure missing" for a call whose disclosure came before
  the crash). Calls still open go on with the next utterance; the QA note (which reads the whole
  stored transcript) is the complete record. The stored ``CallEnded`` is therefore handed to the
  drafter only, never republished on the ``calls`` topic.
* With the Kafka bus the gateway does nothing here: the workers own the pipeline (and their
  consumer offsets); a gateway drafting notes would race them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import exists, select

from livecoach import tables as T
from livecoach.events import CallEnded, utcnow

log = logging.getLogger("livecoach.catchup")
MAX_CALLS = 10_000  # a start-up drafts at most this many (oldest first); the rest wait for the next start


@dataclass
class CatchUp:
    """What the start-up catch-up found and did (``state``: skipped | running | done | failed)."""

    state: str = "skipped"
    reason: str = ""
    found: int = 0
    drafted: int = 0
    failed: int = 0
    seconds: float = 0.0
    task: asyncio.Task | None = None


def calls_missing_notes(store, window_days: float, limit: int = MAX_CALLS) -> list[CallEnded]:
    """Ended calls (ended within ``window_days``) that have no QA note, oldest first, as the end
    events their call rows record (the drafter needs no more)."""
    since = utcnow() - timedelta(days=window_days)
    c = T.calls.c
    q = (select(c.call_id, c.last_seq, c.ended_at, c.csat)
         .where(c.status == "ended", c.ended_at >= since, ~exists().where(T.notes.c.call_id == c.call_id))
         .order_by(c.ended_at).limit(limit))
    with store.engine.connect() as conn:
        return [CallEnded(call_id=r.call_id, seq=r.last_seq, ended_at=r.ended_at, csat=r.csat)
                for r in conn.execute(q)]


def _visible() -> None:
    """Under ``livecoach serve`` only uvicorn's loggers have handlers: write through theirs."""
    if not log.hasHandlers():
        for h in logging.getLogger("uvicorn").handlers:
            log.addHandler(h)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)


def start(settings, store, bus, stages) -> CatchUp:
    """Begin the catch-up in the background (or say why not) and return its record."""
    _visible()
    if settings.bus != "memory":
        log.info("catch-up skipped: bus %s, the workers own the pipeline", settings.bus)
        return CatchUp(reason="kafka bus: the workers own the pipeline")
    drafter = next((s for s in stages if s.name == "postcall"), None)
    if not settings.postcall or drafter is None:
        return CatchUp(reason="post-call notes are off")
    if settings.catchup_window_days <= 0:
        log.info("catch-up skipped: catchup_window_days is 0")
        return CatchUp(reason="catchup_window_days is 0")
    record = CatchUp(state="running")
    record.task = asyncio.create_task(_run(record, settings, store, bus, drafter), name="catch-up")
    return record


async def stop(record: CatchUp | None) -> None:
    if record is not None and record.task is not None and not record.task.done():
        record.task.cancel()
        await asyncio.gather(record.task, return_exceptions=True)


async def _run(record: CatchUp, settings, store, bus, drafter) -> None:
    t0 = time.monotonic()
    window = settings.catchup_window_days
    try:
        ended_calls = await asyncio.to_thread(calls_missing_notes, store, window)
    except Exception as exc:  # the database is down at start: ingest says so; nothing to draft now
        record.state, record.reason = "failed", f"{type(exc).__name__}"
        log.warning("catch-up: could not look for calls without a note (%s); they are drafted on a later start",
                    exc)
        return
    record.found = len(ended_calls)
    if not ended_calls:
        record.state = "done"
        log.info("catch-up: every call ended in the last %g days has a QA note", window)
        return
    log.info("catch-up: %d calls ended without a QA note in the last %g days; drafting them", len(ended_calls),
             window)
    for ended in ended_calls:
        cid = ended.call_id
        try:
            notes = await drafter.handle(ended, {})
            for note in notes:
                await bus.publish(drafter.produces, cid, note)
            record.drafted += 1 if notes else 0
            record.failed += 0 if notes else 1
        except asyncio.CancelledError:
            raise
        except Exception:
            record.failed += 1
            log.exception("catch-up: drafting the note of call %s failed", cid)
    record.seconds = time.monotonic() - t0
    record.state = "done"
    log.info("catch-up: caught up %d calls (%d drafted, %d failed) in %.1f s", record.found, record.drafted,
             record.failed, record.seconds)

