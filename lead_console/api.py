"""Read API for calls: what leads (all calls) and agents (their own calls) may see."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request

from livecoach.auth import Principal, require
from livecoach.lead_console._board import mask_text

router = APIRouter(prefix="/v1", tags=["calls"])

MASK = "•••"


def mask_customer(call: dict[str, Any], who: Principal) -> dict[str, Any]:
    """Known customer fields are shown to leads and admins only. For other roles they are masked in
    the customer record and wherever their values appear: transcript, action arguments, evidence."""
    if who.role in ("lead", "admin") or not call.get("customer"):
        return call
    known = {k: str(v) for k, v in call["customer"].items() if isinstance(v, (str, int, float))}

    def hide(v: Any) -> Any:
        return mask_text(v, known) if isinstance(v, str) else v

    call = {**call, "customer": {k: MASK for k in call["customer"]}}
    if "utterances" in call:
        call["utterances"] = [{**u, "text": hide(u.get("text"))} for u in call["utterances"]]
    if "actions" in call:
        call["actions"] = [{**a, "args": {k: hide(v) for k, v in (a.get("args") or {}).items()}}
                           for a in call["actions"]]
    if "signals" in call:
        call["signals"] = [{**s, "message": hide(s.get("message")),
                            "evidence": [{**e, "excerpt": hide(e.get("excerpt"))} for e in s.get("evidence") or []]}
                           for s in call["signals"]]
    return call


@router.get("/calls", summary="List calls (agents see only their own)")
async def list_calls(request: Request, status: Literal["active", "ended"] | None = None,
                     limit: int = Query(500, ge=1, le=5000),
                     who: Principal = require("lead", "agent")) -> dict[str, Any]:
    store = request.app.state.store
    agent = who.agent_id if who.role == "agent" else None
    calls = await asyncio.to_thread(store.list_calls, status=status, agent_id=agent, limit=limit)
    return {"calls": [mask_customer(c, who) for c in calls]}


@router.get("/calls/{call_id}", summary="One call with its utterances, actions and signals")
async def get_call(call_id: str, request: Request, who: Principal = require("lead", "agent")) -> dict[str, Any]:
    store = request.app.state.store
    call = await asyncio.to_thread(store.get_call, call_id)
    if call is None or not who.can_see_call(call):
        # an agent is not told whether another agent's call exists
        raise HTTPException(404, f"no call {call_id!r}")
    if who.role == "agent":
        call["signals"] = [s for s in call["signals"] if s["audience"] == "agent"]
    return mask_customer(call, who)
