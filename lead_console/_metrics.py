"""Console-only figures for the metrics page: cues and lead signals per call, trends by week,
agent and product area, lead actions. Computed from the stored calls, signals and feedback.

Note and review figures (reviewed, approved, override rate, themes, documentation gaps) are not
computed here: they are postcall's (``livecoach.postcall.records.metrics``, ``GET /v1/qa/metrics``).
Weeks are ISO weeks of the call's start.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select

from livecoach import tables as T


def _week(dt: datetime | None) -> str:
    if dt is None:
        return "?"
    y, w, _ = dt.isocalendar()
    return f"{y}-W{w:02d}"


def compute(store, *, weeks: int = 12, top: int = 6) -> dict[str, Any]:
    with store.engine.connect() as conn:
        calls = {r["call_id"]: dict(r) for r in conn.execute(
            select(T.calls.c.call_id, T.calls.c.agent_id, T.calls.c.queue, T.calls.c.started_at,
                   T.calls.c.status)).mappings()}
        sig_counts = conn.execute(select(T.signals.c.call_id, T.signals.c.audience, func.count())
                                  .group_by(T.signals.c.call_id, T.signals.c.audience)).all()
        kinds = conn.execute(select(T.signals.c.kind, func.count()).where(T.signals.c.audience == "lead")
                             .group_by(T.signals.c.kind)).all()
        actions = conn.execute(select(T.feedback.c.action, T.feedback.c.role, func.count())
                               .group_by(T.feedback.c.action, T.feedback.c.role)).all()

    for c in calls.values():
        c["week"] = _week(c["started_at"])
    all_weeks = sorted({c["week"] for c in calls.values()})[-weeks:]
    cues = Counter()
    lead_sigs = Counter()
    for cid, aud, n in sig_counts:
        (cues if aud == "agent" else lead_sigs)[cid] += n

    # cues and signals per call, by week, agent and product area (queue)
    def per_call(group_key: str, counter: Counter) -> dict[str, list[float | None]]:
        calls_by: dict[tuple[str, str], int] = Counter()
        sigs_by: dict[tuple[str, str], int] = Counter()
        totals: Counter[str] = Counter()
        for cid, c in calls.items():
            g = c[group_key]
            calls_by[(g, c["week"])] += 1
            sigs_by[(g, c["week"])] += counter[cid]
            totals[g] += 1
        groups = [g for g, _ in totals.most_common(top)]
        return {g: [round(sigs_by[(g, w)] / calls_by[(g, w)], 2) if calls_by[(g, w)] else None for w in all_weeks]
                for g in groups}

    calls_per_week = Counter(c["week"] for c in calls.values())
    cues_per_week = [round(sum(cues[cid] for cid, c in calls.items() if c["week"] == w) / calls_per_week[w], 2)
                     for w in all_weeks]
    lead_actions = Counter()
    for action, role, n in actions:
        if role in ("lead", "admin"):
            lead_actions[action] += n
    return {
        "generated_at": datetime.now(timezone.utc).isoformat(),
        "calls": len(calls),
        "cues_per_call": round(sum(cues.values()) / len(calls), 2) if calls else None,
        "lead_signals_per_call": round(sum(lead_sigs.values()) / len(calls), 2) if calls else None,
        "weeks": all_weeks,
        "cues_per_call_by_week": cues_per_week,
        "signals_per_call_by_agent": per_call("agent_id", lead_sigs),
        "signals_per_call_by_area": per_call("queue", lead_sigs),
        "cues_per_call_by_agent": per_call("agent_id", cues),
        "signal_kinds": sorted(((k, n) for k, n in kinds), key=lambda x: -x[1]),
        "lead_actions": dict(lead_actions),
    }
