"""The console's reads and writes on the shared tables (sync reads: call through asyncio.to_thread)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import insert, select

from livecoach import tables as T
from livecoach.lead_console._board import Board, CallCard, SignalView
from livecoach.lead_console._sentiment import customer_sentiment


def _aware(dt: datetime | None) -> datetime | None:
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt


def get_signal(store, signal_id: str) -> dict[str, Any] | None:
    with store.engine.connect() as conn:
        row = conn.execute(select(T.signals).where(T.signals.c.id == signal_id)).mappings().first()
        return dict(row) if row else None


async def save_feedback(store, *, signal_id: str, call_id: str, actor: str, role: str, action: str,
                        reason: str | None) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    values = dict(signal_id=signal_id, call_id=call_id, actor=actor, role=role, action=action, reason=reason,
                  created_at=now)

    def write(conn):
        return conn.execute(insert(T.feedback).values(**values)).inserted_primary_key[0]

    fid = await store.run_write(write)
    return {"id": fid, **values, "created_at": now.isoformat()}


def feedback_for(store, *, signal_ids: list[str] | None = None, call_ids: list[str] | None = None
                 ) -> list[dict[str, Any]]:
    q = select(T.feedback).order_by(T.feedback.c.created_at, T.feedback.c.id)
    if signal_ids is not None:
        q = q.where(T.feedback.c.signal_id.in_(signal_ids))
    if call_ids is not None:
        q = q.where(T.feedback.c.call_id.in_(call_ids))
    with store.engine.connect() as conn:
        out = []
        for r in conn.execute(q).mappings():
            d = dict(r)
            d["created_at"] = _aware(d["created_at"]).isoformat()
            d["reason"] = reason_text(d["action"], d["reason"])
            out.append(d)
        return out


def reason_text(action: str, reason: str | None) -> str | None:
    """A hand-off's stored reason is JSON ({"desk", "note"}); show it in words."""
    if action == "handoff" and reason and reason.startswith("{"):
        try:
            r = json.loads(reason)
        except ValueError:
            return reason
        desk = str(r.get("desk") or "").replace("_", " ")
        return f"to the {desk}" + (f" — {r['note']}" if r.get("note") else "")
    return reason


def active_board_rows(store, limit: int = 5000) -> list[dict[str, Any]]:
    """Everything the board needs about the calls now active, in a few queries."""
    with store.engine.connect() as conn:
        calls = [dict(r) for r in conn.execute(
            select(T.calls).where(T.calls.c.status == "active").order_by(T.calls.c.started_at).limit(limit)).mappings()]
        if not calls:
            return []
        ids = [c["call_id"] for c in calls]
        by: dict[str, dict[str, Any]] = {c["call_id"]: {"call": c, "utts": [], "signals": [], "feedback": [],
                                                         "count": 0, "last_t": 0.0} for c in calls}
        for chunk in _chunks(ids, 500):
            for r in conn.execute(select(T.utterances.c.call_id, T.utterances.c.seq, T.utterances.c.speaker,
                                         T.utterances.c.text, T.utterances.c.t_start, T.utterances.c.t_end)
                                  .where(T.utterances.c.call_id.in_(chunk)).order_by(T.utterances.c.seq)).mappings():
                b = by[r["call_id"]]
                b["count"] += 1
                b["last_t"] = max(b["last_t"], r["t_end"] or r["t_start"] or 0.0)
                if r["speaker"] == "customer":
                    b["utts"].append(r["text"])
            for r in conn.execute(select(T.signals).where(T.signals.c.call_id.in_(chunk))
                                  .order_by(T.signals.c.created_at)).mappings():
                by[r["call_id"]]["signals"].append(dict(r))
            for r in conn.execute(select(T.feedback).where(T.feedback.c.call_id.in_(chunk),
                                                           T.feedback.c.role.in_(("lead", "admin")))
                                  .order_by(T.feedback.c.created_at, T.feedback.c.id)).mappings():
                by[r["call_id"]]["feedback"].append(dict(r))
        return list(by.values())


def _chunks(xs: list[str], n: int):
    for i in range(0, len(xs), n):
        yield xs[i:i + n]


def merge_into_board(board: Board, row: dict[str, Any]) -> None:
    """Add a stored active call to the board unless live events already put it there."""
    c = row["call"]
    cid = c["call_id"]
    if cid in board.ended_recent:
        return
    card = board.calls.get(cid)
    if card is None:
        started = _aware(c["started_at"])
        card = board.calls[cid] = CallCard(cid, agent_id=c["agent_id"], queue=c["queue"], channel=c["channel"],
                                           started_ms=int(started.timestamp() * 1000) if started else 0,
                                           customer=dict(c.get("customer") or {}), utterances=row["count"],
                                           last_t=row["last_t"] or 0.0, last_seq=c["last_seq"])
        for text in row["utts"][-40:]:
            score = customer_sentiment(text)
            card.mood = score if not card.sentiment else 0.6 * card.mood + 0.4 * score
            card.sentiment.append(card.mood)
    for s in row["signals"]:
        if s["id"] not in card.signals:
            s = {**s, "created_at": _aware(s["created_at"])}
            card.signals[s["id"]] = SignalView.from_signal(s)
            board.signal_call[s["id"]] = cid
    for f in row["feedback"]:
        sv = card.signals.get(f["signal_id"])
        if f["action"] == "joining":
            card.joining = f["actor"]
        elif sv is not None:
            sv.state, sv.by, sv.reason = f["action"], f["actor"], reason_text(f["action"], f["reason"])

