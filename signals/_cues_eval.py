"""Replay Harper Valley dev calls through tier-0 + the policy in-process and measure the outcome:
agent cues per call, and lead-feed precision against the hand labels of agent behaviours
(``tests/fixtures/agent_behaviours.jsonl``: every agent turn of the 60 dev calls).

Which lead signals the hand labels can judge:
- ``identity_not_verified`` is right when no agent turn at or before its evidence asked to verify
  identity (``identity_verification_asked``);
- ``disclosure_missing`` is right when no agent turn at or before it gave a disclosure.
The other kinds have no hand labels on these calls; the calls are calm (see the data README), so
they are listed as unjudged rather than guessed.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

JUDGED = {"identity_not_verified": "identity_verification_asked", "disclosure_missing": "disclosure_given"}


def _labels(fixture: Path) -> dict[str, list[tuple[float, set[str]]]]:
    out: dict[str, list[tuple[float, set[str]]]] = defaultdict(list)
    if not fixture.exists():
        return out
    for line in fixture.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            if r.get("source") == "harper_valley":
                out[r["call_id"]].append((float(r.get("t") or 0.0), set(r.get("labels") or [])))
    return out


async def replay_calls(convs: list[dict], settings, *, tier1_wait_s: float = 30.0) -> dict[str, list]:
    from livecoach.app import _optional
    from livecoach.bus import CALLS, SIGNALS
    from livecoach.events import parse_event
    from livecoach.pipeline import Pipeline
    from livecoach.signals.policy import SignalPolicy
    from livecoach.stream.local_bus import LocalBus
    from livecoach.stream.replay import conversation_events

    bus = LocalBus()
    tier0 = _optional("livecoach.signals:Tier0Detectors")
    if tier0 is None:
        raise RuntimeError("the tier-0 detectors (livecoach.signals.Tier0Detectors) are not there yet")
    policy = SignalPolicy(settings)
    got: dict[str, list] = defaultdict(list)

    async def collect(e):
        got[e.call_id].append(e)

    bus.subscribe(SIGNALS, collect, group="eval")
    pipe = Pipeline(bus, [tier0(settings), policy])
    await pipe.start()
    await bus.start()
    end = time.monotonic() + tier1_wait_s * 4
    while policy.tier1.enabled and not policy.tier1.ready and time.monotonic() < end:
        await asyncio.sleep(0.2)  # measure the system warm, as it runs after its first minute
    try:
        for conv in convs:
            for _t, ev in conversation_events(conv):
                await bus.publish(CALLS, ev["call_id"], parse_event(ev))
        await bus.drain()
        end = time.monotonic() + tier1_wait_s
        while (policy.tier1.depth or policy.tier1.stats.counts["submitted"] > sum(
                policy.tier1.stats.counts[k] for k in ("scored", "timeout", "error", "abstained"))) \
                and time.monotonic() < end:
            await asyncio.sleep(0.1)
        await bus.drain()
    finally:
        await bus.stop()
        await pipe.stop()
    got["__tier1__"] = [policy.tier1.snapshot()]
    return got


def summarise(convs: list[dict], got: dict[str, list], fixture: Path) -> dict[str, Any]:
    labels = _labels(fixture)
    per_call = []
    lead_kinds = Counter()
    judged = Counter()
    right = Counter()
    raised_tier0 = Counter()
    for conv in convs:
        sigs = got.get(conv["id"], [])
        per_call.append(sum(1 for s in sigs if s.audience == "agent"))
        withdrawn = {s.details.get("supersedes") for s in sigs
                     if s.audience == "lead" and s.details.get("verdict") == "rejected"}
        for s in sigs:
            if s.audience != "lead":
                continue
            if s.tier == 0:
                raised_tier0[s.kind] += 1
            if s.details.get("verdict") == "rejected" or s.id in withdrawn:
                continue  # tier-1 withdrew it: the lead's feed strikes it out
            if s.tier == 1 and s.details.get("supersedes"):
                continue  # a confirmation of a signal already counted
            lead_kinds[s.kind] += 1
            want = JUDGED.get(s.kind)
            if want and conv["id"] in labels:
                t = max((e.t for e in s.evidence if e.t is not None), default=1e9)
                done = any(want in labs and tt <= t + 0.5 for tt, labs in labels[conv["id"]])
                judged[s.kind] += 1
                right[s.kind] += 0 if done else 1
    nj = sum(judged.values())
    return {
        "calls": len(per_call),
        "agent_cues": {"median": statistics.median(per_call) if per_call else 0, "max": max(per_call, default=0),
                       "mean": round(sum(per_call) / max(1, len(per_call)), 3),
                       "distribution": dict(sorted(Counter(per_call).items())),
                       "share_with_none": round(per_call.count(0) / max(1, len(per_call)), 3)},
        "lead_signals_by_kind": dict(lead_kinds),
        "lead_signals_raised_by_tier0": dict(raised_tier0),
        "lead_precision_judged": {k: f"{right[k]}/{judged[k]}" for k in judged},
        "lead_precision_overall": round(sum(right.values()) / nj, 3) if nj else None,
        "unjudged_lead_signals": sum(v for k, v in lead_kinds.items() if k not in JUDGED),
        "tier1": got.get("__tier1__", [{}])[0],
        "labels_found": bool(labels),
    }
