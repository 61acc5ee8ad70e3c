"""QA notes in the console: read-only views over postcall's notes.

Post-call (``livecoach.postcall``) is the one place for notes: it drafts them, orders the review
queue (``records.review_queue``), takes the lead's decisions (``POST /v1/calls/{id}/note/review``)
and computes the review figures (``records.metrics``). The console only shows them; nothing here
writes a note.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import select

from livecoach import tables as T

RESULT_LABELS = {"met": "met", "missed": "missed", "not_applicable": "not applicable",
                 "insufficient_evidence": "insufficient evidence"}
TIER_LABELS = {"1": "In the moment", "2": "Resolution", "3": "Efficiency", "compliance": "Compliance"}
DECIDED = ("approved", "edited", "rejected")


@lru_cache(maxsize=4)
def _rubric_labels(path: str | None) -> dict[str, str]:
    try:
        from livecoach.postcall import load_rubric

        return {c.id: c.label for c in load_rubric(path).criteria}
    except Exception:  # a broken rubric file must not take the console down; ids are shown instead
        return {}


def criterion_labels(app) -> dict[str, str]:
    """Criterion id -> the rubric's label (the drafter's rubric when it runs)."""
    stage = (getattr(app.state, "stages", None) or {}).get("postcall")
    rubric = getattr(stage, "rubric", None)
    if rubric is not None:
        return {c.id: c.label for c in rubric.criteria}
    return _rubric_labels(getattr(app.state.settings, "rubric_file", None))


def humanise(cid: str | None, labels: dict[str, str]) -> str:
    if not cid:
        return ""
    return labels.get(cid) or cid.replace("_", " ").capitalize()


def decided(engine, limit: int = 100) -> list[dict[str, Any]]:
    """Notes a lead already decided, most recent first (the queue itself is postcall's)."""
    q = (select(T.notes.c.call_id, T.notes.c.status, T.notes.c.updated_at, T.notes.c.body,
                T.calls.c.agent_id, T.calls.c.queue, T.calls.c.channel)
         .join(T.calls, T.calls.c.call_id == T.notes.c.call_id)
         .where(T.notes.c.status.in_(DECIDED)).order_by(T.notes.c.updated_at.desc()).limit(limit))
    out = []
    with engine.connect() as conn:
        for r in conn.execute(q).mappings():
            body = r["body"] or {}
            decision = body.get("decision") or {}
            out.append({"call_id": r["call_id"], "agent_id": r["agent_id"], "queue": r["queue"],
                        "channel": r["channel"], "status": r["status"], "reasons": [],
                        "focus": ((body.get("coaching") or {}).get("focus") or {}).get("criterion"),
                        "missed": [k.get("id") for k in body.get("criteria") or [] if k.get("result") == "missed"],
                        "exception": body.get("exception"), "flags": body.get("flags") or {},
                        "confidence": body.get("confidence"), "csat": body.get("csat"),
                        "process_issues": len(body.get("process_issues") or []),
                        "decided_by": decision.get("by"), "reason": decision.get("reason")})
    return out


def call_summary(note: dict[str, Any] | None, labels: dict[str, str]) -> dict[str, Any] | None:
    """What the call view shows of the call's note (a stored notes row)."""
    if not note:
        return None
    body = note.get("body") or {}
    coaching = body.get("coaching") or {}
    focus = coaching.get("focus") or {}
    exc = body.get("exception") or {}
    return {"status": note["status"], "rubric": f"{note.get('rubric_id')} v{note.get('rubric_version')}",
            "focus": focus.get("label") or humanise(focus.get("criterion"), labels),
            "next_action": coaching.get("next_action"),
            "missed": [k.get("label") or humanise(k.get("id"), labels)
                       for k in body.get("criteria") or [] if k.get("result") == "missed"],
            "process_issues": len(body.get("process_issues") or []),
            "exception": exc.get("reason")}
