"""Reads and writes around QA notes: review decisions, re-queueing, the review queue, follow-up,
self-assessments, coaching sessions, tickets and measurement.

Reads are sync (``engine``; call them through ``asyncio.to_thread``). Writes are ``fn(conn)`` for
``Store.run_write`` so they commit with the store's writer.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update

from livecoach import tables as T
from livecoach.postcall import tables as Q  # noqa: F401  (registers the postcall tables)
from livecoach.postcall._scoring import _KEEP, sanitise
from livecoach.postcall.redact import Redactor

DECISIONS = {"approve": "approved", "edit": "edited", "reject": "rejected"}
EDITABLE = {"criteria", "coaching", "process_issues", "flags", "exception", "summary", "lead_comment"}


class ReviewError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def now() -> datetime:
    return datetime.now(timezone.utc)


def _aware(dt):
    if isinstance(dt, datetime) and dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt


def _body(raw) -> dict[str, Any]:
    return json.loads(raw) if isinstance(raw, str) else dict(raw or {})


def event(conn: Connection, call_id: str, actor: str, role: str, action: str, reason: str | None = None,
          details: dict[str, Any] | None = None) -> None:
    conn.execute(insert(Q.qa_events).values(call_id=call_id, actor=actor, role=role, action=action, reason=reason,
                                            details=details or {}, created_at=now()))


# ------------------------------------------------------------------ drafting

def drafting_context(engine: Engine, call: dict[str, Any]) -> dict[str, Any]:
    """Late CSAT, ticket fields and the agent's previous focus, for :func:`draft_note`."""
    cid = call["call_id"]
    with engine.connect() as conn:
        late = conn.execute(select(Q.qa_csat.c.csat).where(Q.qa_csat.c.call_id == cid)
                            .order_by(Q.qa_csat.c.id.desc()).limit(1)).scalar()
        trow = conn.execute(select(Q.qa_tickets).where(Q.qa_tickets.c.call_id == cid)).mappings().first()
        ticket = dict(trow) if trow else None
        prev = previous_focus(conn, call["agent_id"], cid, call.get("started_at"))
    return {"late_csat": late, "ticket": ticket, "previous_focus": prev}


def previous_focus(conn: Connection, agent_id: str, call_id: str, started_at) -> dict[str, Any] | None:
    """The behaviour this agent was last asked to work on: the latest coaching session, else the
    focus of their latest earlier note."""
    started_at = _aware(started_at)
    q = select(Q.qa_coaching_sessions).where(Q.qa_coaching_sessions.c.agent_id == agent_id,
                                             Q.qa_coaching_sessions.c.call_id != call_id)
    sess = [dict(r) for r in conn.execute(q.order_by(Q.qa_coaching_sessions.c.id.desc()).limit(20)).mappings()]
    sess = [s for s in sess if started_at is None or _aware(s["created_at"]) <= started_at]
    if sess:
        return {"criterion": sess[0]["criterion"], "call_id": sess[0]["call_id"], "source": "coaching_session"}
    q = (select(T.notes.c.call_id, T.notes.c.body, T.calls.c.started_at).join(T.calls, T.calls.c.call_id == T.notes.c.call_id)
         .where(T.calls.c.agent_id == agent_id, T.notes.c.call_id != call_id)
         .order_by(T.calls.c.started_at.desc()).limit(20))
    for row in conn.execute(q).mappings():
        if started_at is not None and _aware(row["started_at"]) >= started_at:
            continue
        body = _body(row["body"])
        focus = ((body.get("coaching") or {}).get("focus") or {}).get("criterion")
        if focus:
            return {"criterion": focus, "call_id": row["call_id"], "source": "note"}
    return None


def after_draft(conn: Connection, body: dict[str, Any]) -> None:
    """Record the draft and its process issues (one record per issue, however often re-drafted)."""
    cid = body["call_id"]
    for p in body.get("process_issues") or []:
        seqs = [e.get("seq") for e in p.get("evidence") or []]
        fp = hashlib.sha1(json.dumps([cid, p["category"], p.get("criterion"), seqs]).encode()).hexdigest()
        if conn.execute(select(Q.qa_process_issues.c.id).where(Q.qa_process_issues.c.fingerprint == fp)).first():
            continue
        conn.execute(insert(Q.qa_process_issues).values(
            call_id=cid, fingerprint=fp, category=p["category"], description=p["description"],
            criterion=p.get("criterion"), article=p.get("article"), evidence=p.get("evidence") or [],
            status="open", created_at=now()))
    event(conn, cid, "postcall", "system", "drafted", None,
          {"rubric": body.get("rubric"), "confidence": body.get("confidence"),
           "exception": (body.get("exception") or {}).get("rule")})


# ------------------------------------------------------------------ reading a note

def read_note(engine: Engine, call_id: str, follow_up_calls: int = 5) -> dict[str, Any] | None:
    """The note as the API returns it: body + status + review history + follow-up observations."""
    with engine.connect() as conn:
        row = conn.execute(select(T.notes, T.calls.c.agent_id, T.calls.c.started_at)
                           .join(T.calls, T.calls.c.call_id == T.notes.c.call_id)
                           .where(T.notes.c.call_id == call_id)).mappings().first()
        if row is None:
            return None
        body = _body(row["body"])
        body["status"] = row["status"]
        body["rubric"] = {**(body.get("rubric") or {}), "id": row["rubric_id"], "version": row["rubric_version"]}
        body["updated_at"] = _aware(row["updated_at"]).isoformat()
        hist = conn.execute(select(Q.qa_events).where(Q.qa_events.c.call_id == call_id)
                            .order_by(Q.qa_events.c.id)).mappings()
        body["review"] = [{"action": h["action"], "actor": h["actor"], "role": h["role"], "reason": h["reason"],
                           "details": h["details"], "at": _aware(h["created_at"]).isoformat()}
                          for h in hist if h["action"] != "drafted"]
        body["self_assessments"] = [
            {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in dict(s).items() if k not in ("call_id",)}
            for s in conn.execute(select(Q.qa_self_assessments).where(Q.qa_self_assessments.c.call_id == call_id))
            .mappings()]
        for s in body["self_assessments"]:
            s.pop("agent_id", None)
        body["coaching_sessions"] = [session_view(conn, dict(s), follow_up_calls) for s in conn.execute(
            select(Q.qa_coaching_sessions).where(Q.qa_coaching_sessions.c.call_id == call_id)).mappings()]
        for s in body["coaching_sessions"]:
            s.pop("agent_id", None)  # an agent id can be a name; the note JSON carries none
        fu = (body.get("coaching") or {}).get("follow_up")
        if fu and fu.get("criterion"):
            obs = observations(conn, row["agent_id"], fu["criterion"], row["started_at"], call_id, follow_up_calls)
            fu["observed"] = obs
            fu["improved"] = _improved(obs)
            fu["status"] = "closed" if len(obs) >= follow_up_calls else "open"
        body["agent_id"] = row["agent_id"]
        return body


def observations(conn: Connection, agent_id: str, criterion: str, after, exclude: str, n: int) -> list[dict[str, Any]]:
    """The criterion's result on the agent's next ``n`` scored calls after ``after``."""
    after = _aware(after)
    q = (select(T.notes.c.call_id, T.notes.c.body, T.calls.c.started_at)
         .join(T.calls, T.calls.c.call_id == T.notes.c.call_id)
         .where(T.calls.c.agent_id == agent_id, T.notes.c.call_id != exclude)
         .order_by(T.calls.c.started_at))
    out = []
    for row in conn.execute(q).mappings():
        if after is not None and _aware(row["started_at"]) <= after:
            continue
        crit = next((k for k in _body(row["body"]).get("criteria") or [] if k.get("id") == criterion), None)
        if crit is None or crit.get("result") not in ("met", "missed"):
            continue
        out.append({"call_id": row["call_id"], "result": crit["result"],
                    "started_at": _aware(row["started_at"]).isoformat()})
        if len(out) >= n:
            break
    return out


def _improved(obs: list[dict[str, Any]]) -> bool | None:
    if not obs:
        return None
    return sum(o["result"] == "met" for o in obs) / len(obs) >= 0.5


def session_view(conn: Connection, s: dict[str, Any], n: int = 5) -> dict[str, Any]:
    obs = observations(conn, s["agent_id"], s["criterion"], s["created_at"], s["call_id"], n)
    return {"id": s["id"], "call_id": s["call_id"], "agent_id": s["agent_id"], "lead": s["lead"],
            "criterion": s["criterion"], "next_action": s["next_action"], "follow_up_date": s["follow_up_date"],
            "notes": s["notes"], "created_at": _aware(s["created_at"]).isoformat(),
            "observed": obs, "improved": _improved(obs)}


# ------------------------------------------------------------------ review decisions

def _redactor_for(conn: Connection, call_id: str) -> Redactor:
    call = conn.execute(select(T.calls.c.customer).where(T.calls.c.call_id == call_id)).scalar()
    texts = conn.execute(select(T.utterances.c.text).where(T.utterances.c.call_id == call_id)).scalars().all()
    return Redactor.for_call(call or {}, texts)


def diff(old: Any, new: Any, path: str = "") -> list[dict[str, Any]]:
    """What an edit changed, as [{path, from, to}] (JSON-pointer-like paths)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            if old.get(k) != new.get(k):
                out += diff(old.get(k), new.get(k), f"{path}/{k}")
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new)):
            out += diff(a, b, f"{path}/{i}")
        return out
    return [] if old == new else [{"path": path or "/", "from": old, "to": new}]


def decide(conn: Connection, call_id: str, actor: str, role: str, action: str, reason: str | None,
           changes: dict[str, Any] | None) -> dict[str, Any]:
    """A lead approves, edits (changes kept as a diff) or rejects (with a reason) a draft."""
    if action not in DECISIONS:
        raise ReviewError(422, f"action must be one of {', '.join(DECISIONS)}")
    row = conn.execute(select(T.notes).where(T.notes.c.call_id == call_id)).mappings().first()
    if row is None:
        raise ReviewError(404, f"no note for call {call_id!r}")
    if row["status"] != "draft":
        raise ReviewError(409, f"the note is already {row['status']}; only a draft (or a re-queued note) can be decided")
    body = _body(row["body"])
    details: dict[str, Any] = {"from_status": row["status"]}
    if action == "reject" and not (reason or "").strip():
        raise ReviewError(422, "a rejection needs a reason")
    if action == "edit":
        if not changes:
            raise ReviewError(422, "an edit needs 'changes': the note fields to replace")
        bad = sorted(set(changes) - EDITABLE)
        if bad:
            raise ReviewError(422, f"fields {', '.join(bad)} cannot be edited (editable: {', '.join(sorted(EDITABLE))})")
        new = {**body, **sanitise(changes, _redactor_for(conn, call_id), _KEEP - {"excerpt"})}
        details["diff"] = diff({k: body.get(k) for k in changes}, {k: new.get(k) for k in changes})
        body = new
    status = DECISIONS[action]
    body["status"] = status
    body["decision"] = {"status": status, "by": actor, "at": now().isoformat(), "reason": reason}
    conn.execute(update(T.notes).where(T.notes.c.call_id == call_id)
                 .values(status=status, body=body, updated_at=now()))
    event(conn, call_id, actor, role, status, reason, details)
    return {"call_id": call_id, "status": status, "diff": details.get("diff")}


def mark_reviewed(conn: Connection, call_id: str, actor: str, role: str) -> None:
    """A lead opened the note (counted once per lead and note)."""
    seen = conn.execute(select(Q.qa_events.c.id).where(Q.qa_events.c.call_id == call_id, Q.qa_events.c.actor == actor,
                                                       Q.qa_events.c.action == "reviewed")).first()
    if not seen:
        event(conn, call_id, actor, role, "reviewed")


def late_csat(conn: Connection, call_id: str, csat: float, source: str, actor: str, role: str,
              low: float) -> dict[str, Any]:
    """Record a CSAT that came after the call; a low one re-queues the note for a lead."""
    if conn.execute(select(T.calls.c.call_id).where(T.calls.c.call_id == call_id)).first() is None:
        raise ReviewError(404, f"no call {call_id!r}")
    conn.execute(insert(Q.qa_csat).values(call_id=call_id, csat=csat, source=source, created_at=now()))
    event(conn, call_id, actor, role, "csat", None, {"csat": csat, "source": source})
    row = conn.execute(select(T.notes).where(T.notes.c.call_id == call_id)).mappings().first()
    if row is None:
        return {"call_id": call_id, "csat": csat, "requeued": False, "note": "no note yet: the draft will use it"}
    body = _body(row["body"])
    body["csat"] = csat
    requeued = csat <= low
    if requeued:
        flags = body.setdefault("flags", {})
        flags["late_low_csat"] = True
        flags["customer_risk"] = True
        reasons = flags.setdefault("risk_reasons", [])
        msg = f"late low CSAT {csat:g}"
        if msg not in reasons:
            reasons.append(msg)
        body["status"] = "draft"
    conn.execute(update(T.notes).where(T.notes.c.call_id == call_id).values(
        body=body, status="draft" if requeued else row["status"], updated_at=now()))
    if requeued:
        event(conn, call_id, actor, role, "requeued", f"late low CSAT {csat:g}",
              {"from_status": row["status"], "csat": csat})
    return {"call_id": call_id, "csat": csat, "requeued": requeued, "status": "draft" if requeued else row["status"]}


# ------------------------------------------------------------------ the review queue

PRIORITY = (("customer_risk", 40, "customer risk"), ("late_low_csat", 25, "late low CSAT"),
            ("low_confidence", 30, "low confidence"), ("compliance_gap", 10, "compliance gap"))


def priority(body: dict[str, Any]) -> tuple[int, list[str]]:
    flags = body.get("flags") or {}
    score, why = 0, []
    for key, weight, label in PRIORITY:
        if flags.get(key):
            score += weight
            why.append(label)
    if body.get("exception"):
        score += 15
        why.append(f"exception: {body['exception'].get('rule')}")
    why += [r for r in flags.get("risk_reasons") or [] if r not in why]
    return score, why


def review_queue(engine: Engine, *, limit: int = 100, agent_id: str | None = None,
                 queue: str | None = None) -> dict[str, Any]:
    """Draft notes awaiting a lead: customer risk and low confidence first, then oldest first."""
    q = (select(T.notes.c.call_id, T.notes.c.status, T.notes.c.body, T.notes.c.created_at, T.notes.c.updated_at,
                T.calls.c.agent_id, T.calls.c.queue, T.calls.c.channel, T.calls.c.ended_at)
         .join(T.calls, T.calls.c.call_id == T.notes.c.call_id).where(T.notes.c.status == "draft"))
    if agent_id:
        q = q.where(T.calls.c.agent_id == agent_id)
    if queue:
        q = q.where(T.calls.c.queue == queue)
    items = []
    with engine.connect() as conn:
        requeued = set(conn.execute(select(Q.qa_events.c.call_id).where(Q.qa_events.c.action == "requeued")).scalars())
        for r in conn.execute(q).mappings():
            body = _body(r["body"])
            score, why = priority(body)
            exc = body.get("exception")
            items.append({
                "call_id": r["call_id"], "agent_id": r["agent_id"], "queue": r["queue"], "channel": r["channel"],
                "status": r["status"], "priority": score, "reasons": why, "flags": body.get("flags") or {},
                "confidence": body.get("confidence"), "csat": body.get("csat"),
                "focus": ((body.get("coaching") or {}).get("focus") or {}).get("criterion"),
                "exception": {"rule": exc.get("rule"), "reason": exc.get("reason")} if exc else None,
                "missed": [k["id"] for k in body.get("criteria") or [] if k.get("result") == "missed"],
                "process_issues": len(body.get("process_issues") or []),
                "requeued": r["call_id"] in requeued,
                "drafted_at": _aware(r["created_at"]).isoformat(),
                "ended_at": _aware(r["ended_at"]).isoformat() if r["ended_at"] else None,
            })
    items.sort(key=lambda i: (-i["priority"], i["drafted_at"]))
    return {"total": len(items), "items": items[:limit]}


# ------------------------------------------------------------------ coaching loop

def add_self_assessment(conn: Connection, call_id: str, agent_id: str, went_well: str, struggled: str,
                        context: str) -> dict[str, Any]:
    row = conn.execute(select(T.notes.c.status, T.calls.c.agent_id).join(T.calls, T.calls.c.call_id == T.notes.c.call_id)
                       .where(T.notes.c.call_id == call_id)).first()
    if row is None or row.agent_id != agent_id:
        raise ReviewError(404, f"no note for call {call_id!r}")
    if row.status not in ("approved", "edited"):
        raise ReviewError(409, "a self-assessment can be added once a lead has approved the note")
    conn.execute(insert(Q.qa_self_assessments).values(call_id=call_id, agent_id=agent_id, went_well=went_well,
                                                      struggled=struggled, context=context, created_at=now()))
    event(conn, call_id, agent_id, "agent", "self_assessment")
    return {"call_id": call_id, "saved": True}


def add_session(conn: Connection, call_id: str, lead: str, criterion: str, next_action: str, follow_up_date: str,
                notes: str) -> dict[str, Any]:
    agent = conn.execute(select(T.calls.c.agent_id).where(T.calls.c.call_id == call_id)).scalar()
    if agent is None:
        raise ReviewError(404, f"no call {call_id!r}")
    res = conn.execute(insert(Q.qa_coaching_sessions).values(
        call_id=call_id, agent_id=agent, lead=lead, criterion=criterion, next_action=next_action,
        follow_up_date=follow_up_date, notes=notes, created_at=now()))
    event(conn, call_id, lead, "lead", "coaching_session", None, {"criterion": criterion})
    sid = res.inserted_primary_key[0]
    return session_view(conn, dict(conn.execute(select(Q.qa_coaching_sessions)
                                                .where(Q.qa_coaching_sessions.c.id == sid)).mappings().first()))


def list_sessions(engine: Engine, agent_id: str | None, n: int = 5) -> list[dict[str, Any]]:
    q = select(Q.qa_coaching_sessions).order_by(Q.qa_coaching_sessions.c.id.desc())
    if agent_id:
        q = q.where(Q.qa_coaching_sessions.c.agent_id == agent_id)
    with engine.connect() as conn:
        return [session_view(conn, dict(s), n) for s in conn.execute(q).mappings()]


# ------------------------------------------------------------------ samples

def sample(conn: Connection, queue: str | None, n: int, by: str, seed: int | None = None) -> dict[str, Any]:
    """Pick ``n`` ended conversations of ``queue`` at random for lead review (the pilot population)."""
    import random

    q = select(T.calls.c.call_id, T.calls.c.queue).where(T.calls.c.status == "ended")
    if queue:
        q = q.where(T.calls.c.queue == queue)
    rows = list(conn.execute(q).all())
    rng = random.Random(seed)
    picked = rng.sample(rows, min(n, len(rows)))
    sid = f"s-{now().strftime('%Y%m%d%H%M%S')}-{rng.randrange(16 ** 4):04x}"
    for r in picked:
        conn.execute(insert(Q.qa_samples).values(sample_id=sid, call_id=r.call_id, queue=r.queue, created_by=by,
                                                 created_at=now()))
    return {"sample_id": sid, "queue": queue, "requested": n, "picked": [r.call_id for r in picked],
            "available": len(rows)}


# ------------------------------------------------------------------ measurement

def covered(body: dict[str, Any]) -> bool:
    """The pilot metric's test: an evidence-backed note, or a non-agent root cause / exception."""
    ev = any(k.get("evidence") for k in body.get("criteria") or [])
    return bool(ev or body.get("exception") or body.get("process_issues"))


def metrics(engine: Engine, low_csat: float = 4.0, encoder=None) -> dict[str, Any]:
    """QA measurement. ``encoder`` (``livecoach.models.load_encoder``) clusters repeat themes by
    meaning; without one they cluster by words (``theme_clusters.method`` says which)."""
    from livecoach.postcall import _themes

    with engine.connect() as conn:
        notes = [dict(r) for r in conn.execute(
            select(T.notes.c.call_id, T.notes.c.status, T.notes.c.body, T.calls.c.agent_id, T.calls.c.queue,
                   T.calls.c.customer, T.calls.c.started_at, T.calls.c.csat)
            .join(T.calls, T.calls.c.call_id == T.notes.c.call_id)).mappings()]
        ev_counts = dict(conn.execute(select(Q.qa_events.c.action, func.count()).group_by(Q.qa_events.c.action)).all())
        sampled = set(conn.execute(select(Q.qa_samples.c.call_id)).scalars())
        ended = set(conn.execute(select(T.calls.c.call_id).where(T.calls.c.status == "ended")).scalars())
        issues = [dict(r) for r in conn.execute(select(Q.qa_process_issues)).mappings()]
        tickets = {r.call_id: r for r in conn.execute(select(Q.qa_tickets)).all()}
        late = {}
        for r in conn.execute(select(Q.qa_csat.c.call_id, Q.qa_csat.c.csat).order_by(Q.qa_csat.c.id)).all():
            late[r.call_id] = r.csat
    for n in notes:
        n["body"] = _body(n["body"])
        n["csat_final"] = late.get(n["call_id"], n["csat"])
    by_status: dict[str, int] = {}
    for n in notes:
        by_status[n["status"]] = by_status.get(n["status"], 0) + 1
    decided = sum(by_status.get(s, 0) for s in ("approved", "edited", "rejected"))
    overrides = by_status.get("edited", 0) + by_status.get("rejected", 0)
    population = sampled or ended
    noted = {n["call_id"]: n for n in notes}
    cov = sum(1 for c in population if c in noted and covered(noted[c]["body"]))

    themes: dict[tuple[str, str], list[str]] = {}
    for n in notes:
        for k in n["body"].get("criteria") or []:
            if k.get("result") == "missed" and k.get("root_cause") == "agent":
                themes.setdefault(("agent", k["id"]), []).append(n["call_id"])
    for i in issues:
        themes.setdefault((i["category"], _theme_key(i["description"])), []).append(i["call_id"])
    theme_list = sorted(({"kind": k[0], "theme": k[1], "count": len(v), "share": round(len(v) / max(1, len(notes)), 3),
                          "calls": sorted(set(v))[:5]} for k, v in themes.items()), key=lambda t: -t["count"])

    doc_gaps: dict[str, list[str]] = {}
    for i in issues:
        if i["category"] == "documentation":
            doc_gaps.setdefault(i.get("article") or _theme_key(i["description"]), []).append(i["call_id"])

    escal = 0
    for n in notes:
        kinds = set(n["body"].get("signals_used") or [])
        t = tickets.get(n["call_id"])
        escalated = "escalation_request" in kinds or (t is not None and (t.escalations or 0) > 0)
        unclear = any(p.get("category") in ("policy", "documentation") for p in n["body"].get("process_issues") or [])
        escal += int(escalated and unclear)

    # CSAT recovery: after a low-CSAT call, did the same agent's next rated call score above the bar?
    by_agent: dict[str, list[dict[str, Any]]] = {}
    for n in sorted(notes, key=lambda x: str(x["started_at"])):
        by_agent.setdefault(n["agent_id"], []).append(n)
    low_calls = recovered = 0
    for calls in by_agent.values():
        for i, n in enumerate(calls):
            if n["csat_final"] is not None and n["csat_final"] <= low_csat:
                low_calls += 1
                nxt = next((m for m in calls[i + 1:] if m["csat_final"] is not None), None)
                recovered += int(nxt is not None and nxt["csat_final"] > low_csat)

    def trend(key) -> dict[str, Any]:
        out: dict[str, dict[str, Any]] = {}
        for n in notes:
            for g in key(n):
                d = out.setdefault(g, {"notes": 0, "missed": {}, "process_issues": 0, "csat": []})
                d["notes"] += 1
                d["process_issues"] += len(n["body"].get("process_issues") or [])
                for k in n["body"].get("criteria") or []:
                    if k.get("result") == "missed":
                        d["missed"][k["id"]] = d["missed"].get(k["id"], 0) + 1
                if n["csat_final"] is not None:
                    d["csat"].append(n["csat_final"])
        for d in out.values():
            cs = d.pop("csat")
            d["csat_avg"] = round(sum(cs) / len(cs), 2) if cs else None
        return out

    def segment(n):
        return [str((n["customer"] or {}).get("segment") or "unknown")]

    def product_area(n):
        t = tickets.get(n["call_id"])
        return [str((t.product_area if t is not None and t.product_area else None) or n["queue"])]

    return {
        "notes": {"total": len(notes), **{s: by_status.get(s, 0) for s in ("draft", "approved", "edited", "rejected")}},
        "events": {a: ev_counts.get(a, 0) for a in ("drafted", "reviewed", "approved", "edited", "rejected",
                                                    "requeued", "csat", "self_assessment", "coaching_session")},
        "override_rate": round(overrides / decided, 3) if decided else None,
        "pilot": {"population": "sampled" if sampled else "ended_calls", "conversations": len(population),
                  "covered": cov, "rate": round(cov / len(population), 3) if population else None},
        "themes": theme_list[:20],
        "theme_clusters": _themes.cluster(_themes.items_from(notes, issues), encoder),
        "documentation_gaps": sorted(({"article": k, "count": len(v), "calls": sorted(set(v))[:5]}
                                      for k, v in doc_gaps.items()), key=lambda d: -d["count"]),
        "csat_recovery": {"low_csat_calls": low_calls, "recovered_next_call": recovered,
                          "rate": round(recovered / low_calls, 3) if low_calls else None},
        "escalations_unclear_policy": escal,
        "process_issues": {c: sum(1 for i in issues if i["category"] == c)
                           for c in ("policy", "product", "documentation", "staffing")},
        "trends": {
            "by_agent": trend(lambda n: [n["agent_id"]]),
            "by_product_area": trend(product_area),
            "by_customer_segment": trend(segment),
            "by_policy_gap": {c: sum(1 for i in issues if i["category"] == c) for c in ("policy", "documentation")},
            "by_kb_article": {k: len(v) for k, v in doc_gaps.items()},
        },
    }


def _theme_key(description: str) -> str:
    return description.split(":")[0].strip().lower()[:80]

