"""Read API for calls: what leads (all calls) and agents (their own calls) may see."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request

from livecoach.auth import Principal, require

router = APIRouter(prefix="/v1", tags=["calls"])

MASK = "•••"


def mask_customer(call: dict[str, Any], who: Principal) -> dict[str, Any]:
    """Known customer fields are shown to leads and admins only."""
    if who.role not in ("lead", "admin") and call.get("customer"):
        call = {**call, "customer": {k: MASK for k in call["customer"]}}
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
