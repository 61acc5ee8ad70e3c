"""HTTP API of the post-call QA notes: the note, review decisions, the review queue, late CSAT,
tickets, the coaching loop and measurement. Every endpoint checks roles; agents see only their
own notes (and only once a lead has approved or edited them)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request

from livecoach import audit, limits
from livecoach.auth import Principal, require
from livecoach.postcall import records
from livecoach.postcall.records import ReviewError
from livecoach.postcall.schema import (CoachingSessionIn, CsatIn, CsatResult, Note, ReviewQueue, ReviewRequest,
                                       ReviewResult, SelfAssessmentIn, Ticket, TicketResult)
from livecoach.postcall.tickets import import_ticket

router = APIRouter(prefix="/v1", tags=["qa notes"])


def _opt(request: Request, name: str, default):
    return getattr(request.app.state.settings, name, default)


async def _write(request: Request, fn):
    try:
        return await request.app.state.store.run_write(fn)
    except ReviewError as exc:
        raise HTTPException(exc.status, str(exc)) from None


@router.get("/calls/{call_id}/note", response_model=Note, response_model_exclude_none=False,
            summary="The call's QA note (leads: any; agents: their own, once approved or edited)")
async def get_note(call_id: str, request: Request, who: Principal = require("lead", "agent")) -> dict[str, Any]:
    engine = request.app.state.store.engine
    note = await asyncio.to_thread(records.read_note, engine, call_id, _opt(request, "postcall_follow_up_calls", 5))
    if note is None:
        raise HTTPException(404, f"no note for call {call_id!r} (yet)")
    agent_id = note.pop("agent_id")  # the agent's id can be a name: it stays out of the note JSON
    if who.role == "agent" and (agent_id != who.agent_id or note["status"] not in ("approved", "edited")):
        raise HTTPException(404, f"no note for call {call_id!r} (yet)")
    client = audit.client_of(request)

    def viewed(c):
        if who.role in ("lead", "admin"):
            records.mark_reviewed(c, call_id, who.name, who.role)
        audit.record(c, who, "view", call_id, client=client)

    await request.app.state.store.run_write(viewed)
    return note


@router.post("/calls/{call_id}/note/review", response_model=ReviewResult,
             summary="A lead approves, edits (kept as a diff) or rejects (with a reason) a draft note")
async def review_note(call_id: str, body: ReviewRequest, request: Request,
                      who: Principal = require("lead")) -> dict[str, Any]:
    def decide(c):
        out = records.decide(c, call_id, who.name, who.role, body.action, body.reason, body.changes)
        audit.record(c, who, body.action, call_id, client=audit.client_of(request),
                     details={"reason": body.reason} if body.reason else None)
        return out

    return await _write(request, decide)


@router.get("/review/queue", response_model=ReviewQueue,
            summary="Draft notes awaiting a lead: customer risk and low confidence first, then oldest")
async def review_queue(request: Request, limit: int = Query(100, ge=1, le=1000), agent_id: str | None = None,
                       queue: str | None = None, who: Principal = require("lead")) -> dict[str, Any]:
    return await asyncio.to_thread(records.review_queue, request.app.state.store.engine, limit=limit,
                                   agent_id=agent_id, queue=queue)


@router.post("/calls/{call_id}/csat", response_model=CsatResult,
             summary="A CSAT that arrived after the call; a low one re-queues the note for review")
async def post_csat(call_id: str, body: CsatIn, request: Request,
                    who: Principal = require("ingest", "lead")) -> dict[str, Any]:
    low = float(_opt(request, "postcall_low_csat", 4.0))

    def csat(c):
        out = records.late_csat(c, call_id, body.csat, body.source, who.name, who.role, low)
        if "status" in out:  # the call has a note, and the CSAT changed it
            audit.record(c, who, "csat", call_id, client=audit.client_of(request),
                         details={"csat": body.csat, "requeued": out["requeued"]})
        return out

    return await _write(request, csat)


@router.post("/calls/{call_id}/note/self-assessment", summary="The agent's own view of a reviewed call")
async def self_assessment(call_id: str, body: SelfAssessmentIn, request: Request,
                          who: Principal = require("agent")) -> dict[str, Any]:
    agent = who.agent_id or who.name

    def add(c):
        out = records.add_self_assessment(c, call_id, agent, body.went_well, body.struggled, body.context)
        audit.record(c, who, "self_assessment", call_id, client=audit.client_of(request))
        return out

    return await _write(request, add)


@router.post("/coaching/sessions", summary="Record a coaching session: one behaviour, next action, follow-up date")
async def add_session(body: CoachingSessionIn, request: Request, who: Principal = require("lead")) -> dict[str, Any]:
    def add(c):
        out = records.add_session(c, body.call_id, who.name, body.criterion, body.next_action,
                                  body.follow_up_date, body.notes)
        audit.record(c, who, "coaching_session", body.call_id, client=audit.client_of(request),
                     details={"criterion": body.criterion})
        return out

    return await _write(request, add)


@router.get("/coaching/sessions", summary="Coaching sessions with follow-up on the agent's later calls "
            "(agents: their own)")
async def list_sessions(request: Request, agent_id: str | None = None,
                        who: Principal = require("lead", "agent")) -> dict[str, Any]:
    if who.role == "agent":
        agent_id = who.agent_id
    n = int(_opt(request, "postcall_follow_up_calls", 5))
    return {"sessions": await asyncio.to_thread(records.list_sessions, request.app.state.store.engine, agent_id, n)}


@router.post("/tickets", response_model=TicketResult,
             summary="Import a closed help-desk ticket; its QA note is drafted like a call's")
async def post_ticket(ticket: Ticket, request: Request, who: Principal = require("ingest", "lead")) -> dict[str, Any]:
    limits.take_new_call(request.app, who)  # 429 + Retry-After past the token's new-call rate
    try:
        return await import_ticket(request.app.state.store, request.app.state.bus, ticket)
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None


@router.get("/qa/metrics", summary="Measurement: review events, override rate, themes, documentation gaps, "
            "CSAT recovery, pilot metric, trends")
async def qa_metrics(request: Request, who: Principal = require("lead")) -> dict[str, Any]:
    low = float(_opt(request, "postcall_low_csat", 4.0))
    from livecoach.postcall import _themes

    def run() -> dict[str, Any]:
        return records.metrics(request.app.state.store.engine, low,
                               encoder=_themes.encoder_for(getattr(request.app.state, "settings", None)))

    return await asyncio.to_thread(run)
