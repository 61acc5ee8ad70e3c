"""The live board model: active calls ranked by risk, with what a floor lead scans in a glance.

Pure in-memory bookkeeping (no I/O): :class:`Board` takes pipeline events and lead actions and
answers with cards. :mod:`livecoach.lead_console.live` feeds it and pushes cards to browsers.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from livecoach.events import (AgentAction, CallEnded, CallStarted, PartialUtterance, Signal, Utterance,
                              minute_mark)
from livecoach.lead_console._sentiment import customer_sentiment

# What each kind means to a lead, and how much it weighs when nothing else says (the signal policy
# puts its own weight in ``details.risk``; that wins).
KIND_LABELS: dict[str, str] = {
    "churn_intent": "Talking about leaving",
    "escalation_request": "Asked for a supervisor",
    "complaint": "Complaint",
    "frustration_spike": "Frustration rising",
    "frustration_recovered": "Calmer again",
    "upgrade_interest": "Interested in an upgrade",
    "identity_not_verified": "Identity not verified",
    "disclosure_missing": "Disclosure missing",
    "consent_missing": "Consent missing",
    "secret_read_out": "Secret read out",
}
KIND_RISK: dict[str, float] = {
    "churn_intent": 1.0, "escalation_request": 0.9, "secret_read_out": 0.8, "complaint": 0.7,
    "frustration_spike": 0.6, "consent_missing": 0.6, "identity_not_verified": 0.5,
    "disclosure_missing": 0.5, "upgrade_interest": 0.3, "frustration_recovered": 0.1,
}
# How much an open signal still counts once a lead has done something with it.
ACTION_WEIGHT: dict[str, float] = {"open": 1.0, "acknowledged": 0.5, "joining": 0.5, "handoff": 0.3,
                                   "dismissed": 0.0}
LEAD_ACTIONS = ("joining", "acknowledged", "dismissed", "handoff")
SPARK_POINTS = 40
SIGNALS_ON_CARD = 3


def kind_label(kind: str) -> str:
    return KIND_LABELS.get(kind, kind.replace("_", " ").capitalize())


def level(risk: float) -> str:
    if risk >= 0.7:
        return "high"
    if risk >= 0.4:
        return "medium"
    if risk > 0.05:
        return "low"
    return "calm"


def _ms(dt: datetime | None) -> int | None:
    return int(dt.timestamp() * 1000) if dt is not None else None


@dataclass
class SignalView:
    id: str
    kind: str
    confidence: float
    audience: str
    tier: int
    message: str
    evidence: list[dict[str, Any]]
    details: dict[str, Any]
    created_ms: int
    state: str = "open"          # open | acknowledged | joining | handoff | dismissed
    by: str | None = None
    reason: str | None = None

    @classmethod
    def from_signal(cls, s: Signal | dict[str, Any]) -> "SignalView":
        if isinstance(s, Signal):
            ev = [e.model_dump() for e in s.evidence]
            return cls(s.id, s.kind, s.confidence, s.audience, s.tier, s.message, ev, dict(s.details),
                       _ms(s.created_at) or 0)
        return cls(s["id"], s["kind"], float(s["confidence"]), s["audience"], int(s["tier"]), s.get("message") or "",
                   list(s.get("evidence") or []), dict(s.get("details") or {}), _ms(s.get("created_at")) or 0)

    @property
    def risk(self) -> float:
        r = self.details.get("risk")
        if isinstance(r, (int, float)):
            return float(r)
        return KIND_RISK.get(self.kind, 0.5) * self.confidence

    @property
    def route(self) -> dict[str, Any] | None:
        r = self.details.get("route")
        return r if isinstance(r, dict) and r.get("action") == "suggest_handoff" else None

    def view(self, customer: dict[str, str] | None = None) -> dict[str, Any]:
        ev = self.evidence[-1] if self.evidence else {}
        excerpt = ev.get("excerpt") or ""
        return {
            "id": self.id, "kind": self.kind, "label": kind_label(self.kind), "confidence": round(self.confidence, 2),
            "tier": self.tier, "audience": self.audience, "message": self.message,
            "minute": minute_mark(ev.get("t")), "excerpt": mask_text(excerpt, customer),
            "risk": round(self.risk, 3), "state": self.state, "by": self.by, "reason": self.reason,
            "route": self.route, "alert": bool(self.details.get("alert")), "created_ms": self.created_ms,
        }


def mask_text(text: str, customer: dict[str, str] | None) -> str:
    """Known customer values (name, account …) replaced by ``•••`` (None: shown as is)."""
    if not customer or not text:
        return text
    import re

    for v in sorted({v for v in customer.values() if v and len(v) >= 3}, key=len, reverse=True):
        text = re.sub(re.escape(v), "•••", text, flags=re.IGNORECASE)
        for part in v.split():  # "Patricia Brown" also hides a lone "patricia"
            if len(part) >= 3:
                text = re.sub(rf"\b{re.escape(part)}\b", "•••", text, flags=re.IGNORECASE)
    return text


@dataclass
class CallCard:
    call_id: str
    agent_id: str = "?"
    queue: str = "default"
    channel: str = "chat"
    started_ms: int = 0
    customer: dict[str, str] = field(default_factory=dict)
    utterances: int = 0
    last_t: float = 0.0
    last_seq: int = 0
    sentiment: deque = field(default_factory=lambda: deque(maxlen=SPARK_POINTS))
    mood: float = 0.0            # smoothed customer sentiment, -1 … 1
    signals: dict[str, SignalView] = field(default_factory=dict)
    joining: str | None = None
    speaking: dict[str, str] = field(default_factory=dict)   # live partial per speaker (voice)
    changed_ms: int = 0
    ended: bool = False

    # ranking ------------------------------------------------------------
    def lead_signals(self) -> list[SignalView]:
        superseded = {s.details.get("supersedes") for s in self.signals.values()}
        return [s for s in self.signals.values() if s.audience == "lead" and s.id not in superseded]

    @property
    def risk(self) -> float:
        best = 0.0
        for s in self.lead_signals():
            w = ACTION_WEIGHT.get(s.state, 1.0)
            if s.kind == "frustration_spike" and any(
                    o.kind == "frustration_recovered" and o.created_ms > s.created_ms for o in self.lead_signals()):
                w *= 0.5
            best = max(best, w * s.risk)
        best += 0.2 * max(0.0, -self.mood)      # an unhappy customer with no signal yet still shows
        if self.joining:
            best *= 0.7                          # someone is on it: others can look elsewhere
        return round(min(best, 1.0), 3)

    def sort_key(self) -> tuple:
        alert = any(s.details.get("alert") and s.state == "open" for s in self.lead_signals())
        latest = max((s.created_ms for s in self.lead_signals()), default=0)
        return (-int(alert), -self.risk, -latest, self.started_ms, self.call_id)

    @property
    def elapsed(self) -> float:
        """Seconds into the call: wall clock since it started, or the call's own clock if ahead
        (a replay at speed)."""
        wall = time.time() - self.started_ms / 1000 if self.started_ms else 0.0
        return max(wall, self.last_t)

    def view(self) -> dict[str, Any]:
        lead = sorted(self.lead_signals(), key=lambda s: s.created_ms, reverse=True)
        shown = [s for s in lead if s.state != "dismissed"][:SIGNALS_ON_CARD]
        cues = [s for s in self.signals.values() if s.audience == "agent"]
        risk = self.risk
        return {
            "call_id": self.call_id, "agent_id": self.agent_id, "queue": self.queue, "channel": self.channel,
            "started_ms": self.started_ms, "utterances": self.utterances, "last_t": round(self.last_t, 1),
            "last_seq": self.last_seq, "duration": minute_mark(self.elapsed),
            "sentiment": [round(x, 3) for x in self.sentiment], "mood": round(self.mood, 3),
            "risk": risk, "level": level(risk), "signals": [s.view(self.customer) for s in shown],
            "open_signals": sum(1 for s in lead if s.state == "open"), "cues": len(cues),
            "dismissed": sum(1 for s in lead if s.state == "dismissed"),
            "joining": self.joining, "speaking": bool(self.speaking), "changed_ms": self.changed_ms,
            "ended": self.ended,
        }


class Board:
    """Active calls and their cards. ``apply`` answers which call changed and what a call view
    watching it should be told (transcript lines, partials, signals)."""

    def __init__(self) -> None:
        self.calls: dict[str, CallCard] = {}
        self.signal_call: dict[str, str] = {}
        self.ended_recent: deque[str] = deque(maxlen=1000)

    def _card(self, call_id: str) -> CallCard:
        card = self.calls.get(call_id)
        if card is None:
            card = self.calls[call_id] = CallCard(call_id, started_ms=int(time.time() * 1000))
        return card

    def apply(self, event: Any) -> tuple[str | None, dict[str, Any] | None]:
        """Take one pipeline event; return (changed call_id or None, item for call watchers)."""
        now = int(time.time() * 1000)
        cid = event.call_id
        if isinstance(event, CallStarted):
            card = self._card(cid)
            card.agent_id, card.queue, card.channel = event.agent_id, event.queue, event.channel
            card.started_ms = _ms(event.started_at) or now
            card.customer = dict(event.customer)
            card.last_seq = max(card.last_seq, event.seq)
            card.changed_ms = now
            return cid, None
        if cid in self.ended_recent and cid not in self.calls:
            return None, None   # a late event for a call already off the board
        if isinstance(event, Utterance):
            card = self._card(cid)
            card.utterances += 1
            card.last_seq = max(card.last_seq, event.seq)
            if event.t_end is not None or event.t_start is not None:
                card.last_t = max(card.last_t, event.t_end or event.t_start or 0.0)
            card.speaking.pop(event.speaker, None)
            if event.speaker == "customer":
                score = customer_sentiment(event.text)
                card.mood = score if not card.sentiment else 0.6 * card.mood + 0.4 * score
                card.sentiment.append(card.mood)
            card.changed_ms = now
            return cid, {"type": "utterance", "seq": event.seq, "speaker": event.speaker, "text": event.text,
                         "t": event.t_start, "minute": minute_mark(event.t_start), "source": event.source}
        if isinstance(event, PartialUtterance):
            card = self._card(cid)
            card.speaking[event.speaker] = event.text
            return None, {"type": "partial", "speaker": event.speaker, "text": event.text,
                          "minute": minute_mark(event.t_start)}
        if isinstance(event, AgentAction):
            card = self._card(cid)
            card.last_seq = max(card.last_seq, event.seq)
            return None, {"type": "action", "seq": event.seq, "name": event.name, "minute": minute_mark(event.t)}
        if isinstance(event, CallEnded):
            card = self.calls.pop(cid, None)
            self.ended_recent.append(cid)
            for sid in [k for k, v in self.signal_call.items() if v == cid]:
                self.signal_call.pop(sid, None)
            return (cid if card else None), {"type": "ended"}
        if isinstance(event, Signal):
            return self.add_signal(event)
        return None, None

    def add_signal(self, sig: Signal | dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
        view = SignalView.from_signal(sig)
        cid = sig.call_id if isinstance(sig, Signal) else sig["call_id"]
        card = self._card(cid)
        old = card.signals.get(view.id)
        if old is not None:   # redelivered: keep what the leads did with it
            view.state, view.by, view.reason = old.state, old.by, old.reason
        card.signals[view.id] = view
        self.signal_call[view.id] = cid
        card.changed_ms = int(time.time() * 1000)
        return cid, {"type": "signal", "signal": view.view()}

    def apply_action(self, signal_id: str, call_id: str, action: str, actor: str,
                     reason: str | None = None) -> tuple[str | None, dict[str, Any] | None]:
        """A lead's action on a signal (already stored as feedback)."""
        card = self.calls.get(call_id)
        if card is None:
            return None, None
        s = card.signals.get(signal_id)
        if action == "joining":       # joining is about the call, not the signal's state
            card.joining = actor
        elif s is not None:
            s.state, s.by, s.reason = action, actor, reason
        card.changed_ms = int(time.time() * 1000)
        return call_id, {"type": "feedback", "signal_id": signal_id, "action": action, "actor": actor,
                         "reason": reason}

    def order(self) -> list[str]:
        return [c.call_id for c in sorted(self.calls.values(), key=CallCard.sort_key)]

    def snapshot(self) -> dict[str, Any]:
        order = self.order()
        return {"type": "snapshot", "cards": [self.calls[c].view() for c in order], "order": order}

    def delta(self, changed: set[str]) -> dict[str, Any]:
        cards, removed = [], []
        for cid in changed:
            card = self.calls.get(cid)
            if card is None:
                removed.append(cid)
            else:
                cards.append(card.view())
        return {"type": "delta", "cards": cards, "removed": removed}
