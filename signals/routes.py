"""HTTP and websocket API of the signal policy.

- ``WS  /v1/agents/{agent_id}/prompts`` — an agent's cue channel (agent token whose agent_id is the
  path's; admins may watch any). Frames out: ``ready``, ``cue``, ``ack``, ``error``. Frames in:
  ``{"type": "response", "signal_id": …, "action": "accepted|dismissed|ignored", "reason": …}``.
- ``POST /v1/signals/{id}/response`` — the same response over HTTP (agents: own cues; leads:
  acknowledged | dismissed | accepted on any signal).
- ``POST /v1/signals/{id}/handoff`` — the lead's one-click hand-off to the routed desk.
- ``GET  /v1/signals/feed`` — lead feed of active calls, ranked by risk.
- ``GET  /v1/signals/metrics`` — prompts per call, responses per kind, tier-1 load and agreement.
- ``GET  /v1/signals/policy``, ``PUT /v1/signals/phase`` (admin), ``POST /v1/signals/policy/reload`` (admin).
- ``GET  /metrics`` — the same figures for Prometheus (lead/admin bearer token).
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import insert, select

from livecoach import tables as T
from livecoach.auth import Principal, require, ws_authenticate
from livecoach.limits import admit_socket, strict_json, text_frame_bytes
from livecoach.signals._metrics import PrometheusCollector, signal_metrics
from livecoach.signals._prompt_hub import PromptHub, cue_frame
from livecoach.signals.routing import DESKS, route_for

router = APIRouter(tags=["signals"])

AGENT_ACTIONS = ("accepted", "dismissed", "ignored")
LEAD_ACTIONS = ("acknowledged", "dismissed", "accepted")


class ResponseIn(BaseModel):
    action: str = Field(description="agents: accepted | dismissed | ignored; leads: acknowledged | dismissed | accepted")
    reason: str | None = Field(None, max_length=500)


class HandoffIn(BaseModel):
    desk: str | None = Field(None, description=f"One of {', '.join(DESKS)}; empty: the signal's routed desk")
    reason: str | None = Field(None, max_length=500)


class PhaseIn(BaseModel):
    phase: Literal[1, 2, 3, 4]


def _policy(request_or_ws) -> Any:
    stages = getattr(request_or_ws.app.state, "stages", None) or {}
    pol = stages.get("policy")
    if pol is None or not hasattr(pol, "set_phase"):
        raise HTTPException(503, "the signal policy stage is not running")
    return pol


def _get_signal(store, signal_id: str) -> dict[str, Any] | None:
    with store.engine.connect() as conn:
        row = conn.execute(select(T.signals).where(T.signals.c.id == signal_id)).mappings().first()
        if row is None:
            return None
        s = dict(row)
        s["agent_id"] = conn.execute(select(T.calls.c.agent_id).where(T.calls.c.call_id == s["call_id"])).scalar()
        return s


async def record_response(app, p: Principal, signal_id: str, action: str, reason: str | None) -> dict[str, Any]:
    """Check who may answer what, then store the response once (a repeat is not counted twice)."""
    store = app.state.store
    sig = await asyncio.to_thread(_get_signal, store, signal_id)
    if sig is None:
        raise HTTPException(404, f"no signal {signal_id}")
    if p.role == "agent":
        if sig["audience"] != "agent" or sig["agent_id"] != p.agent_id:
            raise HTTPException(404, f"no signal {signal_id}")  # not theirs: do not confirm it exists
        allowed = AGENT_ACTIONS
    else:
        allowed = AGENT_ACTIONS + LEAD_ACTIONS if p.role == "admin" else LEAD_ACTIONS
    if action not in allowed:
        raise HTTPException(422, f"action must be one of {', '.join(dict.fromkeys(allowed))}")
    now = datetime.now(timezone.utc)

    def write(conn):
        dup = conn.execute(select(T.feedback.c.id).where(
            T.feedback.c.signal_id == signal_id, T.feedback.c.actor == p.name, T.feedback.c.action == action)).first()
        if dup:
            return False
        conn.execute(insert(T.feedback).values(signal_id=signal_id, call_id=sig["call_id"], actor=p.name, role=p.role,
                                               action=action, reason=reason, created_at=now))
        return True

    stored = await store.run_write(write)
    return {"signal_id": signal_id, "call_id": sig["call_id"], "action": action,
            "outcome": "stored" if stored else "duplicate"}


@router.post("/v1/signals/{signal_id}/response", summary="Accept, dismiss or ignore a cue; acknowledge a lead signal")
async def respond(signal_id: str, body: ResponseIn, request: Request, p: Principal = require("agent", "lead")):
    return await record_response(request.app, p, signal_id, body.action, body.reason)


@router.post("/v1/signals/{signal_id}/handoff", summary="One click: hand the call to the routed desk")
async def handoff(signal_id: str, request: Request, body: HandoffIn | None = None, p: Principal = require("lead")):
    body = body or HandoffIn()
    store = request.app.state.store
    sig = await asyncio.to_thread(_get_signal, store, signal_id)
    if sig is None:
        raise HTTPException(404, f"no signal {signal_id}")
    route = (sig.get("details") or {}).get("route") or route_for(sig["kind"])
    desk = body.desk or (route or {}).get("desk")
    if not desk:
        raise HTTPException(422, f"a {sig['kind']} signal has no desk to hand off to; name one: {', '.join(DESKS)}")
    if desk not in DESKS:
        raise HTTPException(422, f"unknown desk {desk!r}; one of {', '.join(DESKS)}")
    now = datetime.now(timezone.utc)

    def write(conn):
        conn.execute(insert(T.feedback).values(signal_id=signal_id, call_id=sig["call_id"], actor=p.name, role=p.role,
                                               action="handoff", reason=json.dumps({"desk": desk, "note": body.reason}),
                                               created_at=now))

    await store.run_write(write)
    request.app.state.metrics["handoffs"] += 1
    return {"signal_id": signal_id, "call_id": sig["call_id"], "desk": desk, "desk_name": DESKS[desk],
            "status": "requested", "by": p.name, "at": now.isoformat()}


def _feed(store, limit: int) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(T.signals, T.calls.c.agent_id).join(T.calls, T.calls.c.call_id == T.signals.c.call_id)
            .where(T.signals.c.audience == "lead", T.calls.c.status == "active")
            .order_by(T.signals.c.created_at.desc()).limit(limit * 4)).mappings().all()
    out = []
    for r in rows:
        d = dict(r)
        d["risk"] = float((d.get("details") or {}).get("risk", d["confidence"]))
        out.append(d)
    out.sort(key=lambda d: (-(d["details"] or {}).get("alert", False), -d["risk"]))
    return out[:limit]


@router.get("/v1/signals/feed", summary="Lead feed: signals of active calls, highest risk first (not capped)")
async def feed(request: Request, limit: int = 200, p: Principal = require("lead")):
    limit = max(1, min(limit, 2000))
    return {"signals": await asyncio.to_thread(_feed, request.app.state.store, limit)}


@router.get("/v1/signals/metrics", summary="Prompts per call, responses per kind, tier-1 load and agreement")
async def metrics(request: Request, p: Principal = require("lead")):
    stages = getattr(request.app.state, "stages", None) or {}
    pol = stages.get("policy")
    return await asyncio.to_thread(signal_metrics, request.app.state.store, pol if hasattr(pol, "tier1") else None)


@router.get("/v1/signals/policy", summary="The policy in force: phase, thresholds by audience, last reload error")
async def policy_view(request: Request, p: Principal = require("lead")):
    return _policy(request).describe()


@router.put("/v1/signals/phase", summary="Change the rollout phase now (admin; no restart)")
async def set_phase(body: PhaseIn, request: Request, p: Principal = require("admin")):
    pol = _policy(request)
    pol.set_phase(body.phase, source=f"admin {p.name}")
    return {"phase": pol.phase, "phase_source": pol.phase_source, "audiences": pol.audiences()}


@router.post("/v1/signals/policy/reload", summary="Re-read the policy file now (admin)")
async def reload_policy(request: Request, p: Principal = require("admin")):
    pol = _policy(request)
    pol.reload()
    if pol.holder.error:
        raise HTTPException(422, f"policy not reloaded, the previous one stays in force: {pol.holder.error}")
    return {"phase": pol.phase, "reloads": pol.holder.reloads, "policy_file": str(pol.holder.path)}


@router.get("/metrics", include_in_schema=False)
async def prometheus(request: Request, p: Principal = require("lead")):
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    reg = getattr(request.app.state, "prometheus_registry", None)
    if reg is None:
        reg = request.app.state.prometheus_registry = CollectorRegistry(auto_describe=False)
        reg.register(PrometheusCollector(request.app))
    body = await asyncio.to_thread(generate_latest, reg)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _backlog(store, agent_id: str) -> list[dict[str, Any]]:
    """Unanswered cues of the agent's active calls (a reconnecting screen gets them again)."""
    with store.engine.connect() as conn:
        answered = select(T.feedback.c.signal_id).where(T.feedback.c.role == "agent")
        rows = conn.execute(
            select(T.signals).join(T.calls, T.calls.c.call_id == T.signals.c.call_id)
            .where(T.calls.c.agent_id == agent_id, T.calls.c.status == "active", T.signals.c.audience == "agent",
                   T.signals.c.id.not_in(answered))
            .order_by(T.signals.c.created_at)).mappings().all()
    return [cue_frame(dict(r)) for r in rows]


@router.websocket("/v1/agents/{agent_id}/prompts")
async def prompts(ws: WebSocket, agent_id: str):
    p = await ws_authenticate(ws, ("agent",))
    if p is None:
        return
    if p.role != "admin" and p.agent_id != agent_id:
        await ws.accept()
        await ws.close(code=4403, reason="an agent receives only its own cues")
        return
    if not await admit_socket(ws, p):  # over the token's socket or new-call limit: 4429
        return
    await ws.accept()
    hub = PromptHub.for_app(ws.app)
    q = hub.connect(agent_id)
    lock = asyncio.Lock()

    async def send(frame: dict[str, Any]) -> None:
        async with lock:
            await ws.send_json(frame)

    try:
        await send({"type": "ready", "agent_id": agent_id})
        for frame in await asyncio.to_thread(_backlog, ws.app.state.store, agent_id):
            await send(frame)

        async def pump():
            while True:
                await send(await q.get())

        pumper = asyncio.create_task(pump())
        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    raise WebSocketDisconnect(msg.get("code", 1000))
                await _on_frame(ws, send, p, msg.get("text"))
        finally:
            pumper.cancel()
    except WebSocketDisconnect:
        pass
    finally:
        hub.disconnect(agent_id, q)


async def _on_frame(ws: WebSocket, send, p: Principal, raw: str | None) -> None:
    limit = ws.app.state.settings.max_frame_bytes
    if raw is None:
        await send({"type": "error", "code": "binary_not_accepted",
                    "message": "this socket takes JSON text frames"})
        return
    size = text_frame_bytes(raw)
    if size > limit:
        await send({"type": "error", "code": "frame_too_large",
                    "message": f"frame is {size} bytes; the limit is {limit}"})
        return
    try:
        data = strict_json(raw)
        if not isinstance(data, dict) or data.get("type") != "response":
            raise ValueError('send {"type": "response", "signal_id": ..., "action": "accepted|dismissed|ignored"}')
        body = ResponseIn.model_validate({k: data.get(k) for k in ("action", "reason") if k in data})
        sid = data.get("signal_id")
        if sid is None or sid == "":
            raise ValueError("signal_id is missing")
        if not isinstance(sid, str) or len(sid) > 128 or not sid.isprintable():
            raise ValueError("signal_id must be the cue's id: a string of at most 128 printable characters")
    except (ValueError, ValidationError) as exc:
        await send({"type": "error", "code": "bad_frame", "message": str(exc)[:300]})
        return
    try:
        res = await record_response(ws.app, p, sid, body.action, body.reason)
    except HTTPException as exc:
        await send({"type": "error", "code": f"http_{exc.status_code}", "signal_id": sid,
                    "message": str(exc.detail)})
        return
    await send({"type": "ack", **res})
