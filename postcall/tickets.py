"""Closed help-desk tickets as conversations: a ticket becomes a chat call whose end triggers a note.

Format (``POST /v1/tickets`` body, or one JSON object a line for ``livecoach import FILE.jsonl``)::

    {"ticket_id": "T-1001", "agent_id": "alice", "queue": "billing", "product_area": "cards",
     "customer": {"name": "Dana Reyes", "email": "dana@example.com", "segment": "smb"},
     "tags": ["payments"],
     "thread": [{"speaker": "customer", "text": "my card was charged twice", "at": "2026-11-20T10:00:00Z"},
                {"speaker": "agent", "text": "sorry about that, let me check", "at": "2026-11-20T10:04:00Z"}],
     "csat": 3, "resolution_minutes": 42, "escalations": 1,
     "agent_notes": "refund raised", "kb_articles": ["KB-112 double charges"],
     "opened_at": "2026-11-20T10:00:00Z", "closed_at": "2026-11-20T10:42:00Z"}

The call id is ``ticket-<ticket_id>``; re-importing the same ticket is a no-op ("duplicate").
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import insert, select

from livecoach.bus import CALLS
from livecoach.events import CallEnded, CallStarted, Event, Utterance
from livecoach.postcall import tables as Q
from livecoach.postcall.schema import Ticket


def call_id_for(ticket_id: str) -> str:
    return ("ticket-" + re.sub(r"[^A-Za-z0-9._:-]", "-", ticket_id))[:128]


def ticket_events(t: Ticket) -> list[Event]:
    cid = call_id_for(t.ticket_id)
    opened = t.opened_at or next((m.at for m in t.thread if m.at), None) or datetime.now(timezone.utc)
    if opened.tzinfo is None:
        opened = opened.replace(tzinfo=timezone.utc)
    customer = {k: str(v)[:256] for k, v in list(t.customer.items())[:32]}
    evs: list[Event] = [CallStarted(call_id=cid, seq=1, channel="chat", agent_id=t.agent_id, queue=t.queue,
                                    tags=t.tags, customer=customer, started_at=opened)]
    for m in t.thread:
        at = m.at.replace(tzinfo=m.at.tzinfo or timezone.utc) if m.at else None
        ts = max(0.0, (at - opened).total_seconds()) if at else None
        evs.append(Utterance(call_id=cid, seq=len(evs) + 1, speaker=m.speaker, text=m.text, t_start=ts, source="chat"))
    closed = t.closed_at or datetime.now(timezone.utc)
    evs.append(CallEnded(call_id=cid, seq=len(evs) + 1, ended_at=closed, csat=t.csat))
    return evs


async def import_ticket(store, bus, t: Ticket) -> dict[str, Any]:
    """Store the ticket's conversation and publish it so the note drafter runs on its end."""
    cid = call_id_for(t.ticket_id)
    header = await asyncio.to_thread(store.get_call_header, cid)
    if header is not None and header["status"] == "ended":
        return {"call_id": cid, "ticket_id": t.ticket_id, "status": "duplicate", "events": 0}

    def meta(conn):
        if conn.execute(select(Q.qa_tickets.c.call_id).where(Q.qa_tickets.c.call_id == cid)).first():
            return
        closed = t.closed_at
        conn.execute(insert(Q.qa_tickets).values(
            call_id=cid, ticket_id=t.ticket_id, product_area=t.product_area, segment=t.customer.get("segment"),
            csat=t.csat, resolution_minutes=t.resolution_minutes, escalations=t.escalations,
            agent_notes=t.agent_notes, kb_articles=t.kb_articles,
            closed_at=closed.replace(tzinfo=closed.tzinfo or timezone.utc) if closed else None,
            imported_at=datetime.now(timezone.utc)))

    evs = ticket_events(t)
    start = (header or {}).get("last_seq", 0)
    n = 0
    for ev in evs:
        if ev.seq <= start:
            continue
        if isinstance(ev, CallEnded):
            await store.run_write(meta)  # ticket fields are in place before the note is drafted
        res = await store.append(ev)
        if not res.ok:
            raise ValueError(f"ticket {t.ticket_id}: {res.code}: {res.message}")
        if res.outcome == "stored":
            n += 1
            if bus is not None:
                await bus.publish(CALLS, cid, ev)
    return {"call_id": cid, "ticket_id": t.ticket_id, "status": "imported", "events": n}
