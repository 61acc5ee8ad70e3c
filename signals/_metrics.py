"""Measurement: prompts per call, responses per kind, tier-1 load and agreement.

Figures come from the stored signals and feedback (so they survive restarts) plus the live
counters of the policy stage (tier-1 queue, agreement since start).
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import func, select

from livecoach import tables as T

RESPONSES = ("accepted", "dismissed", "ignored", "acknowledged", "joining", "handoff")
_POSITIVE = ("accepted", "acknowledged", "joining", "handoff")


def signal_metrics(store, policy=None, *, limit_calls: int = 100_000) -> dict[str, Any]:
    """The numbers behind ``GET /v1/signals/metrics`` (sync: call it in a worker thread)."""
    with store.engine.connect() as conn:
        call_ids = [r[0] for r in conn.execute(select(T.calls.c.call_id).order_by(T.calls.c.started_at.desc())
                                               .limit(limit_calls))]
        per_call = dict(conn.execute(
            select(T.signals.c.call_id, func.count()).where(T.signals.c.audience == "agent")
            .group_by(T.signals.c.call_id)).all())
        shown = defaultdict(Counter)
        for kind, aud, n in conn.execute(select(T.signals.c.kind, T.signals.c.audience, func.count())
                                         .group_by(T.signals.c.kind, T.signals.c.audience)).all():
            shown[kind][aud] = int(n)
        resp = defaultdict(lambda: defaultdict(Counter))  # kind -> role -> action -> n
        for kind, role, action, n in conn.execute(
                select(T.signals.c.kind, T.feedback.c.role, T.feedback.c.action, func.count())
                .join(T.signals, T.signals.c.id == T.feedback.c.signal_id)
                .group_by(T.signals.c.kind, T.feedback.c.role, T.feedback.c.action)).all():
            resp[kind][role][action] += int(n)
        answered = select(T.feedback.c.signal_id).where(T.feedback.c.role == "agent")
        unanswered = dict(conn.execute(
            select(T.signals.c.kind, func.count()).where(T.signals.c.audience == "agent",
                                                         T.signals.c.id.not_in(answered))
            .group_by(T.signals.c.kind)).all())
        tiers = Counter({int(t): int(n) for t, n in conn.execute(
            select(T.signals.c.tier, func.count()).group_by(T.signals.c.tier)).all()})
    counts = [int(per_call.get(c, 0)) for c in call_ids]
    dist = Counter(counts)
    prompts = {
        "calls": len(counts),
        "distribution": {str(k): dist[k] for k in sorted(dist)},
        "median": statistics.median(counts) if counts else 0,
        "mean": round(sum(counts) / len(counts), 3) if counts else 0,
        "max": max(counts, default=0),
        "share_with_none": round(dist[0] / len(counts), 4) if counts else None,
    }
    by_kind = {}
    for kind in sorted(set(shown) | set(resp)):
        roles = {}
        for role, acts in resp.get(kind, {}).items():
            aud = "agent" if role == "agent" else "lead"
            n = shown[kind].get(aud, 0)
            roles[role] = {a: acts.get(a, 0) for a in RESPONSES if acts.get(a)}
            if n:
                roles[role]["ack_rate"] = round(sum(acts.get(a, 0) for a in _POSITIVE) / n, 4)
                roles[role]["dismiss_rate"] = round(acts.get("dismissed", 0) / n, 4)
        by_kind[kind] = {"lead_signals": shown[kind].get("lead", 0), "agent_cues": shown[kind].get("agent", 0),
                         "agent_cues_without_response": int(unanswered.get(kind, 0)), "responses": roles}
    out = {"agent_cues_per_call": prompts, "by_kind": by_kind,
           "signals_by_tier": {f"tier{k}": v for k, v in sorted(tiers.items())}}
    if policy is not None:
        out["tier1"] = policy.tier1.snapshot()
        out["policy"] = {"phase": policy.phase, "phase_source": policy.phase_source,
                         "decisions": dict(policy.stats)}
    return out


class PrometheusCollector:
    """Renders the same figures as Prometheus metrics (one registry per app)."""

    def __init__(self, app):
        self.app = app

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        st = self.app.state
        store = getattr(st, "store", None)
        if store is None:
            return
        policy = (getattr(st, "stages", None) or {}).get("policy")
        m = signal_metrics(store, policy if hasattr(policy, "tier1") else None)
        p = m["agent_cues_per_call"]
        buckets, acc = [], 0
        dist = {int(k): v for k, v in p["distribution"].items()}
        for le in (0, 1, 2, 3, 4):
            acc += dist.get(le, 0)
            buckets.append((str(le), acc))
        buckets.append(("+Inf", p["calls"]))
        total = sum(k * v for k, v in dist.items())
        yield HistogramMetricFamily("livecoach_agent_cues_per_call", "Agent cues per call (stored calls)",
                                    buckets=buckets, sum_value=total)
        yield GaugeMetricFamily("livecoach_calls_without_cues_ratio", "Share of calls with no agent cue",
                                value=p["share_with_none"] or 0.0)
        sig = CounterMetricFamily("livecoach_signals", "Signals stored, by kind and audience",
                                  labels=["kind", "audience"])
        resp = CounterMetricFamily("livecoach_signal_responses", "Responses to signals, by kind, role and action",
                                   labels=["kind", "role", "action"])
        for kind, v in m["by_kind"].items():
            sig.add_metric([kind, "lead"], v["lead_signals"])
            sig.add_metric([kind, "agent"], v["agent_cues"])
            for role, acts in v["responses"].items():
                for a in RESPONSES:
                    if a in acts:
                        resp.add_metric([kind, role, a], acts[a])
        yield sig
        yield resp
        t1 = m.get("tier1")
        if t1:
            c = CounterMetricFamily("livecoach_tier1_cases", "Tier-1 cases by outcome", labels=["outcome"])
            for k in ("submitted", "scored", "dropped", "timeout", "error", "abstained"):
                c.add_metric([k], t1[k])
            yield c
            yield GaugeMetricFamily("livecoach_tier1_queue_depth", "Tier-1 cases waiting", value=t1["queue_depth"])
            yield GaugeMetricFamily("livecoach_tier1_agreement_ratio", "Share of tier-1 verdicts agreeing with tier-0",
                                    value=t1["agreement_with_tier0"] if t1["agreement_with_tier0"] is not None else float("nan"))
            if t1["latency_p95_s"] is not None:
                yield GaugeMetricFamily("livecoach_tier1_latency_p95_seconds", "Tier-1 latency p95 (recent)",
                                        value=t1["latency_p95_s"])
            yield GaugeMetricFamily("livecoach_rollout_phase", "Rollout phase in force", value=m["policy"]["phase"])
        spine = getattr(st, "metrics", None)
        if spine:
            g = CounterMetricFamily("livecoach_events", "Server counters", labels=["name"])
            for k, v in spine.items():
                g.add_metric([str(k)], float(v))
            yield g
