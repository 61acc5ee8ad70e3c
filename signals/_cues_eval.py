"""Replay calls through tier-0 + the policy (tier-1 included) in-process and measure the outcome:
agent cues per call (against the cap), and lead-feed precision against hand labels.

Two sets, reported apart:

1. **Real calls** — the 60 Harper Valley dev calls, judged by two hand-labelled fixtures:
   - ``tests/fixtures/agent_behaviours.jsonl`` (every agent turn): ``identity_not_verified`` is right
     when no agent turn at or before its evidence asked to verify identity; ``disclosure_missing``
     when no agent turn at or before it gave a disclosure;
   - ``tests/fixtures/customer_lead_labels.jsonl`` (every customer turn): frustration / churn /
     escalation request / complaint / upgrade interest / abuse. A lead signal of one of those kinds
     is right when a turn it cites carries the label. These calls are calm: no turn does, so here
     precision counts false alarms and recall is undefined (no positives).
2. **Constructed calls** — because calm calls give few lead signals: a labelled dev message
   (Banking77 / Bitext dev split of ``livecoach.models.data.intent_splits``, never trained on by
   tier-0 or tier-1; churn, escalation request, complaint, upgrade interest, and look-alikes that
   are none) inserted as a customer turn, normalised to Harper Valley style, at a random point of
   one of the 20 Harper Valley calls tier-1 did not train on; later turns move back by the new
   turn's length. One insertion per call; the 52 hand-written hard cases of
   ``models/data/intent_hard_cases.jsonl`` are inserted too. Precision and recall per intent kind
   against the inserted label (the call's own turns keep their hand labels: none). Frustration and
   abuse are not constructed, so their signals here are listed as unjudged.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

JUDGED = {"identity_not_verified": "identity_verification_asked", "disclosure_missing": "disclosure_given"}
# customer-side lead kinds -> the hand label that makes them right
CUSTOMER_JUDGED = {"frustration_spike": "frustration", "churn_intent": "churn",
                   "escalation_request": "escalation_request", "complaint": "complaint",
                   "upgrade_interest": "upgrade_interest", "abuse": "abuse"}
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
AGENT_LABELS = FIXTURES / "agent_behaviours.jsonl"
CUSTOMER_LABELS = FIXTURES / "customer_lead_labels.jsonl"


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


async def replay_calls(convs: list[dict], settings, *, tier1_wait_s: float = 30.0,
                       settle_each_call: bool = True) -> dict[str, list]:
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
    def outstanding() -> bool:
        c = policy.tier1.stats.counts
        return bool(policy.tier1.depth or c["submitted"] > sum(c[k] for k in ("scored", "timeout", "error", "abstained")))

    async def settle() -> None:
        await bus.drain()
        end = time.monotonic() + tier1_wait_s
        while outstanding() and time.monotonic() < end:
            await asyncio.sleep(0.05)
        await bus.drain()

    try:
        for conv in convs:
            for _t, ev in conversation_events(conv):
                await bus.publish(CALLS, ev["call_id"], parse_event(ev))
            if settle_each_call:
                # a replay sends a call in milliseconds; live, its escalations are spread over a
                # minute. Letting tier-1 finish each call's cases keeps its queue at live load
                # (the queue-full and timeout fallbacks are tested in tests/test_tier1.py).
                await settle()
        await settle()
    finally:
        await bus.stop()
        await pipe.stop()
    got["__tier1__"] = [policy.tier1.snapshot()]
    return got


def customer_labels(fixture: Path = CUSTOMER_LABELS) -> dict[str, dict[int, set[str]]]:
    """{call_id: {turn index: labels}} for every hand-labelled customer turn."""
    out: dict[str, dict[int, set[str]]] = defaultdict(dict)
    if not Path(fixture).exists():
        return out
    for line in Path(fixture).read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out[r["call_id"]][int(r["turn"])] = set(r.get("labels") or [])
    return out


def seq_turns(conv: dict) -> dict[int, int]:
    """{event seq: index in conv["turns"]} for the utterances a replay sends."""
    from livecoach.stream.replay import conversation_events

    utts = [e["seq"] for _t, e in conversation_events(conv) if e.get("type") == "utterance"]
    idx = [i for i, t in enumerate(conv["turns"])
           if str(t.get("text", "")).strip() and t.get("speaker") in ("agent", "customer")]
    return dict(zip(utts, idx))


def lead_feed(sigs: list) -> list:
    """The lead signals a lead's feed keeps: tier-1 withdrawals struck out, a tier-1 confirmation
    not counted twice (a tier-1 ``rescored_up`` is a new signal and counts)."""
    withdrawn = {s.details.get("supersedes") for s in sigs
                 if s.audience == "lead" and s.details.get("verdict") == "rejected"}
    return [s for s in sigs if s.audience == "lead" and s.details.get("verdict") != "rejected"
            and s.id not in withdrawn and not (s.tier == 1 and s.details.get("supersedes"))]


def tier0_raised(sigs: list) -> list:
    """Every lead signal tier-0 raised, before tier-1 had its say."""
    return [s for s in sigs if s.audience == "lead" and s.tier == 0]


def judge_customer_side(convs: list[dict], got: dict[str, list],
                        labels: dict[str, dict[int, set[str]]], feed_of=None,
                        kinds: set[str] | None = None) -> dict[str, Any]:
    """Per customer-side kind: raised (in the feed, on a labelled call), right, precision; labelled
    turns, found (a feed signal of that kind cites the turn), recall (None: no positives).
    ``feed_of`` picks the signals judged (default :func:`lead_feed`; :func:`tier0_raised` for the
    feed as tier-0 alone would have left it)."""
    feed_of = feed_of or lead_feed
    judged = {k: v for k, v in CUSTOMER_JUDGED.items() if kinds is None or k in kinds}
    raised, right, pos, found = Counter(), Counter(), Counter(), Counter()
    unjudged = Counter()
    for conv in convs:
        lab = labels.get(conv["id"])
        feed = [s for s in feed_of(got.get(conv["id"], [])) if s.kind in judged]
        if lab is None:
            unjudged.update(s.kind for s in feed)
            continue
        turn_of = seq_turns(conv)
        cited: dict[str, set[int]] = defaultdict(set)
        for s in feed:
            turns = {turn_of[e.seq] for e in s.evidence if e.seq in turn_of}
            raised[s.kind] += 1
            right[s.kind] += any(judged[s.kind] in lab.get(t, ()) for t in turns)
            cited[s.kind] |= turns
        for kind, want in judged.items():
            ts = [t for t, ls in lab.items() if want in ls]
            pos[kind] += len(ts)
            found[kind] += sum(1 for t in ts if t in cited[kind])
    per_kind = {}
    for kind in judged:
        if raised[kind] or pos[kind]:
            per_kind[kind] = {"raised": raised[kind], "right": right[kind],
                              "precision": round(right[kind] / raised[kind], 3) if raised[kind] else None,
                              "labelled": pos[kind], "found": found[kind],
                              "recall": round(found[kind] / pos[kind], 3) if pos[kind] else None}
    nr, nt, np_, nf = (sum(c.values()) for c in (raised, right, pos, found))
    return {"per_kind": per_kind, "raised": nr, "right": nt,
            "precision": round(nt / nr, 3) if nr else None, "labelled": np_, "found": nf,
            "recall": round(nf / np_, 3) if np_ else None,
            "calls_judged": sum(1 for c in convs if c["id"] in labels), "unjudged": dict(unjudged)}


CONSTRUCTED_KINDS = {"churn_intent", "escalation_request", "complaint", "upgrade_interest"}


def constructed_calls(per_label: int = 30, seed: int = 5, root: Path | None = None, hard_cases: bool = True,
                      fixture: Path = CUSTOMER_LABELS) -> tuple[list[dict], dict[str, dict[int, set[str]]]]:
    """Calls with one labelled message inserted (see the module doc), and their labels."""
    from livecoach.models.data import INTENT_LABELS, INTENT_LOOKALIKES, intent_hard_cases, intent_splits
    from livecoach.signals._tier1_backends import normalise
    from livecoach.signals._tier1_train import _calls

    rng = random.Random(seed)
    _train_calls, calls = _calls(root)
    hand = customer_labels(fixture)
    dev = intent_splits(root)["dev"]
    by_label: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for text, y, src in zip(dev.texts, dev.labels, dev.sources or [""] * len(dev.texts)):
        lab = INTENT_LABELS[y]
        if lab == "none" and src not in INTENT_LOOKALIKES:
            continue  # plain none messages: the calls' own turns already are
        if normalise(text):
            by_label[lab].append((normalise(text), src))
    picks: list[tuple[str, int, str, str]] = []
    for lab in sorted(by_label):
        rows = sorted(by_label[lab])
        rng.shuffle(rows)
        picks += [(lab, n, text, src) for n, (text, src) in enumerate(rows[:per_label])]
    if hard_cases:  # the detectors' hand-written look-alikes and their twins (never trained on)
        hard = intent_hard_cases()
        picks += [(INTENT_LABELS[y], 1000 + n, normalise(t), "hard_case")
                  for n, (t, y) in enumerate(zip(hard.texts, hard.labels)) if normalise(t)]
    convs, labels = [], {}
    for lab, n, text, src in picks:
        call = rng.choice(calls)
        turns = [dict(t) for t in call["turns"]]
        cust = [i for i, t in enumerate(turns) if t["speaker"] == "customer" and i > 0] or [len(turns) - 1]
        at = rng.choice(cust) + 1
        start = int(turns[at - 1].get("end_ms") or turns[at - 1].get("start_ms") or 0) + 800
        dur = 1000 + 60 * len(text)
        for t in turns[at:]:
            for k in ("start_ms", "end_ms"):
                if t.get(k) is not None:
                    t[k] += dur + 800
        turns.insert(at, {"speaker": "customer", "text": text, "start_ms": start, "end_ms": start + dur})
        cid = f"{call['id']}-ins-{lab}-{n}"
        convs.append({**call, "id": cid, "turns": turns,
                      "duration_ms": int(call.get("duration_ms") or 0) + dur + 800,
                      "inserted": {"turn": at, "label": lab, "source": src}})
        own = hand.get(call["id"], {})
        lab_turns = {(j if j < at else j + 1): ls for j, ls in own.items()}
        lab_turns[at] = set() if lab == "none" else {lab}
        labels[cid] = lab_turns
    return convs, labels


def summarise(convs: list[dict], got: dict[str, list], fixture: Path = AGENT_LABELS,
              customer: dict[str, dict[int, set[str]]] | None = None,
              customer_kinds: set[str] | None = None) -> dict[str, Any]:
    """Agent cues per call, and the lead feed judged by the agent-side (compliance kinds) and the
    customer-side (``customer``, default the hand-labelled fixture) labels; ``customer_kinds``
    limits the customer side to the kinds those labels cover (the rest are listed as unjudged)."""
    ck = set(CUSTOMER_JUDGED) if customer_kinds is None else set(customer_kinds)
    labels = _labels(fixture)
    customer = customer_labels() if customer is None else customer
    cust = judge_customer_side(convs, got, customer, kinds=ck)
    cust0 = judge_customer_side(convs, got, customer, feed_of=tier0_raised, kinds=ck)
    per_call = []
    lead_kinds = Counter()
    judged = Counter()
    right = Counter()
    raised_tier0 = Counter()
    for conv in convs:
        sigs = got.get(conv["id"], [])
        per_call.append(sum(1 for s in sigs if s.audience == "agent"))
        raised_tier0.update(s.kind for s in tier0_raised(sigs))
        for s in lead_feed(sigs):
            lead_kinds[s.kind] += 1
            want = JUDGED.get(s.kind)
            if want and conv["id"] in labels:
                t = max((e.t for e in s.evidence if e.t is not None), default=1e9)
                done = any(want in labs and tt <= t + 0.5 for tt, labs in labels[conv["id"]])
                judged[s.kind] += 1
                right[s.kind] += 0 if done else 1
    nj = sum(judged.values())
    n_all, r_all = nj + cust["raised"], sum(right.values()) + cust["right"]
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
        "customer_side": cust,
        "customer_side_tier0": cust0,
        "lead_precision_all_judged": round(r_all / n_all, 3) if n_all else None,
        "lead_judged_all": f"{r_all}/{n_all}",
        "unjudged_lead_signals": {k: v for k, v in lead_kinds.items() if k not in JUDGED and k not in ck},
        "tier1": got.get("__tier1__", [{}])[0],
        "labels_found": bool(labels),
    }
