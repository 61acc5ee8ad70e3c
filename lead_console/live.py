"""The live board: a pipeline stage that keeps it, and the websockets that push it to leads.

``BoardFeed`` (stage "board", consumes calls, signals and partials) updates the in-memory board
and only marks what changed; each connected browser has its own sender that wakes at most every
``push_ms`` and sends the cards changed since its last send. A slow browser therefore gets fewer,
fuller updates and never slows the pipeline or the other browsers; one that stops reading for
``SLOW_SOCKET_S`` is disconnected (its page reconnects and starts from a fresh snapshot).

Routes:
  ``WS  /v1/board/live``                   board snapshot, then deltas (lead)
  ``WS  /v1/console/calls/{call_id}/live``  one call's transcript lines, partials, signals, actions
  ``GET /v1/board``                        the board as JSON (lead)
  ``POST /v1/signals/{signal_id}/feedback`` a lead's action on a signal: joining, acknowledged,
                                           dismissed (with a reason) or handoff; stored as feedback
  ``GET /v1/signals/{signal_id}/feedback``  what was done with a signal
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, deque
from typing import Any, Literal, Sequence

from fastapi import APIRouter, Depends, HTTPException, Request, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, field_validator

from livecoach.auth import Principal, require
from livecoach.bus import CALLS, PARTIALS, SIGNALS
from livecoach.events import Event
from livecoach.lead_console import _data
from livecoach.lead_console._board import Board
from livecoach.lead_console._session import same_origin, ws_principal
from livecoach.limits import admit_socket
from livecoach.pipeline import Stage

log = logging.getLogger(__name__)

SLOW_SOCKET_S = 10.0
WATCH_QUEUE_MAX = 500

router = APIRouter(tags=["console"])


class _Sub:
    """One connected browser: what changed since its last send."""

    __slots__ = ("dirty", "items", "wake", "overflow")

    def __init__(self) -> None:
        self.dirty: set[str] = set()
        self.items: deque[dict[str, Any]] = deque()
        self.wake = asyncio.Event()
        self.overflow = False

    def push(self, item: dict[str, Any]) -> None:
        if item["type"] == "partial":   # only the latest hypothesis per speaker matters
            for i in range(len(self.items) - 1, -1, -1):
                old = self.items[i]
                if old["type"] == "partial" and old["speaker"] == item["speaker"]:
                    del self.items[i]
                    break
        if len(self.items) >= WATCH_QUEUE_MAX:
            self.items.clear()
            self.overflow = True      # the page reloads the call instead
        self.items.append(item)
        self.wake.set()


class BoardFeed(Stage):
    """Keeps the live board and wakes the console sockets; never waits on a browser."""

    name = "board"
    consumes = (CALLS, SIGNALS, PARTIALS)
    produces = None
    placement = "gateway"  # browsers connect to the gateway: every gateway keeps its own board

    def __init__(self, settings: Any = None, *, push_ms: int | None = None):
        self.push_s = (push_ms if push_ms is not None else getattr(settings, "console_push_ms", 250)) / 1000
        self.board = Board()
        self.boards: set[_Sub] = set()
        self.watchers: dict[str, set[_Sub]] = {}
        self.stats: Counter[str] = Counter()
        self._hydrated = False
        self._hydrate_lock: asyncio.Lock | None = None
        self.loop: asyncio.AbstractEventLoop | None = None   # the server's loop (for tests and tools)

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()

    async def handle(self, event: Event, state: dict[str, Any]) -> Sequence[Event]:
        changed, item = self.board.apply(event)
        self.stats["events"] += 1
        self._notify(changed, event.call_id, item)
        return ()

    def _notify(self, changed: str | None, call_id: str, item: dict[str, Any] | None) -> None:
        if changed:
            for s in self.boards:
                s.dirty.add(changed)
                s.wake.set()
        if item:
            for s in self.watchers.get(call_id, ()):
                s.push(item)

    def lead_action(self, signal_id: str, call_id: str, action: str, actor: str, reason: str | None) -> None:
        changed, item = self.board.apply_action(signal_id, call_id, action, actor, reason)
        self._notify(changed, call_id, item)

    async def hydrate(self, store) -> None:
        """Load the calls that were already active (a restart, or a console opened late) once."""
        if self._hydrated:
            return
        if self._hydrate_lock is None:
            self._hydrate_lock = asyncio.Lock()
        async with self._hydrate_lock:
            if self._hydrated:
                return
            active = await asyncio.to_thread(_data.active_board_rows, store)
            for row in active:
                _data.merge_into_board(self.board, row)
            self._hydrated = True
            for s in self.boards:
                s.dirty.update(self.board.calls)
                s.wake.set()

    # subscriptions ------------------------------------------------------
    def subscribe_board(self) -> _Sub:
        s = _Sub()
        self.boards.add(s)
        return s

    def watch(self, call_id: str) -> _Sub:
        s = _Sub()
        self.watchers.setdefault(call_id, set()).add(s)
        return s

    def unsubscribe(self, sub: _Sub, call_id: str | None = None) -> None:
        self.boards.discard(sub)
        if call_id is not None:
            subs = self.watchers.get(call_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    self.watchers.pop(call_id, None)


def board_feed(app) -> BoardFeed:
    feed = getattr(app.state, "stages", {}).get("board")
    if not isinstance(feed, BoardFeed):
        raise HTTPException(503, "the live board is not running")
    return feed


async def _serve(ws: WebSocket, feed: BoardFeed, sub: _Sub, first: dict[str, Any] | None,
                 build, call_id: str | None = None) -> None:
    """Send ``first`` then whatever ``build(sub)`` makes of each wake-up, at most every push_s."""

    async def pump() -> None:
        if first is not None:
            await asyncio.wait_for(ws.send_text(json.dumps(first, default=str)), SLOW_SOCKET_S)
        last = 0.0
        while True:
            await sub.wake.wait()
            delay = last + feed.push_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sub.wake.clear()
            msg = build(sub)
            if msg is not None:
                msg["server_ms"] = int(time.time() * 1000)
                await asyncio.wait_for(ws.send_text(json.dumps(msg, default=str)), SLOW_SOCKET_S)
                feed.stats["pushes"] += 1
            last = time.monotonic()

    task = asyncio.create_task(pump())
    # a page that leaves mid-send ends pump() with WebSocketDisconnect: expected, not worth a log line
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    try:
        recv = asyncio.create_task(ws.receive())
        while True:
            done, _ = await asyncio.wait({task, recv}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                exc = task.exception()
                if isinstance(exc, asyncio.TimeoutError):
                    feed.stats["slow_disconnects"] += 1
                    await ws.close(code=1013, reason="too slow to keep up; reconnect for a fresh board")
                recv.cancel()
                return
            try:
                if recv.result()["type"] == "websocket.disconnect":
                    return
            except (WebSocketDisconnect, RuntimeError):
                return
            recv = asyncio.create_task(ws.receive())   # pings from the page (text or binary): nothing to do
    except WebSocketDisconnect:
        return
    finally:
        task.cancel()
        feed.unsubscribe(sub, call_id)


@router.websocket("/v1/board/live")
async def board_socket(ws: WebSocket) -> None:
    who = await ws_principal(ws)
    if who is None:
        return
    feed = board_feed(ws.app)
    if not await admit_socket(ws, who):  # over the token's socket or new-call limit: 4429
        return
    await ws.accept()
    await feed.hydrate(ws.app.state.store)
    sub = feed.subscribe_board()
    sent_order: list[list[str]] = [[]]

    def build(s: _Sub) -> dict[str, Any] | None:
        dirty, s.dirty = s.dirty, set()
        order = feed.board.order()
        if not dirty and order == sent_order[0]:
            return None
        msg = feed.board.delta(dirty)
        if order != sent_order[0]:
            msg["order"] = order
            sent_order[0] = order
        return msg

    snap = feed.board.snapshot()
    sent_order[0] = snap["order"]
    snap["server_ms"] = int(time.time() * 1000)
    await _serve(ws, feed, sub, snap, build)


@router.websocket("/v1/console/calls/{call_id}/live")
async def call_socket(ws: WebSocket, call_id: str) -> None:
    who = await ws_principal(ws)
    if who is None:
        return
    feed = board_feed(ws.app)
    if not await admit_socket(ws, who):  # over the token's socket or new-call limit: 4429
        return
    await ws.accept()
    sub = feed.watch(call_id)

    def build(s: _Sub) -> dict[str, Any] | None:
        card = feed.board.calls.get(call_id)
        if s.overflow:
            s.overflow = False
            s.items.clear()
            return {"type": "resync"}
        items = list(s.items)
        s.items.clear()
        if not items:
            return None
        return {"type": "items", "items": items, "card": card.view() if card else None}

    card = feed.board.calls.get(call_id)
    await _serve(ws, feed, sub, {"type": "hello", "card": card.view() if card else None}, build, call_id)


@router.get("/v1/board", summary="The live board: active calls ranked by risk (lead)")
async def board_json(request: Request, who: Principal = require("lead")) -> dict[str, Any]:
    feed = board_feed(request.app)
    await feed.hydrate(request.app.state.store)
    snap = feed.board.snapshot()
    snap["stats"] = dict(feed.stats)
    return snap


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["joining", "acknowledged", "dismissed", "handoff"]
    reason: str | None = Field(None, max_length=500, description="Why (required to dismiss)")
    desk: str | None = Field(None, max_length=64, description="For a hand-off: which desk (default: the suggested one)")

    @field_validator("reason", "desk")
    @classmethod
    def _strip(cls, v: str | None) -> str | None:
        return v.strip() or None if v is not None else None


@router.post("/v1/signals/{signal_id}/feedback", status_code=201, dependencies=[Depends(same_origin)],
             summary="A lead's action on a signal (joining, acknowledged, dismissed with a reason, handoff)")
async def signal_feedback(signal_id: str, body: FeedbackIn, request: Request,
                          who: Principal = require("lead")) -> dict[str, Any]:
    store = request.app.state.store
    sig = await asyncio.to_thread(_data.get_signal, store, signal_id)
    if sig is None:
        raise HTTPException(404, f"no signal {signal_id!r}")
    reason = body.reason
    if body.action == "dismissed" and not reason:
        raise HTTPException(422, "say why the signal is dismissed (reason)")
    row = await _store_action(request, who, signal_id, sig, body)
    shown = reason
    if body.action == "handoff":
        shown = row.get("desk_name") or row.get("desk")
    try:
        board_feed(request.app).lead_action(signal_id, sig["call_id"], body.action, who.name, shown)
    except HTTPException:
        pass   # stored; the board is simply not running in this process
    return row


async def _store_action(request: Request, who: Principal, signal_id: str, sig: dict[str, Any],
                        body: FeedbackIn) -> dict[str, Any]:
    """Store a lead's action once, in one place: the signals package's response and hand-off
    endpoints when it has them (acknowledged, dismissed, handoff), else the feedback table directly."""
    routes = _signal_routes()
    if routes is not None and body.action == "handoff" and hasattr(routes, "handoff"):
        out = await routes.handoff(signal_id, request, routes.HandoffIn(desk=body.desk, reason=body.reason), who)
        return {**out, "action": "handoff"}
    if (routes is not None and body.action in getattr(routes, "LEAD_ACTIONS", ())
            and hasattr(routes, "record_response")):
        return await routes.record_response(request.app, who, signal_id, body.action, body.reason)
    reason = body.reason
    desk = None
    if body.action == "handoff":
        route = (sig.get("details") or {}).get("route") or {}
        desk = body.desk or route.get("desk")
        if not desk:
            raise HTTPException(422, "this signal suggests no hand-off; name the desk")
        reason = json.dumps({"desk": desk, "note": body.reason})
    row = await _data.save_feedback(request.app.state.store, signal_id=signal_id, call_id=sig["call_id"],
                                    actor=who.name, role=who.role, action=body.action, reason=reason)
    if desk:
        row["desk"] = desk
    return {**row, "outcome": "stored"}


def _signal_routes():
    try:
        from livecoach.signals import routes
    except ImportError:
        return None
    return routes


@router.get("/v1/signals/{signal_id}/feedback", summary="What leads and agents did with a signal")
async def signal_feedback_list(signal_id: str, request: Request,
                               who: Principal = require("lead")) -> dict[str, Any]:
    rows = await asyncio.to_thread(_data.feedback_for, request.app.state.store, signal_ids=[signal_id])
    return {"signal_id": signal_id, "feedback": rows}
