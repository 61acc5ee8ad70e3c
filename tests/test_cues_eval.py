"""`livecoach bench cues` judges the lead feed against hand labels of the customer side: a lead signal
is right only when a turn it cites carries the matching label; tier-1 withdrawals leave the feed."""

from __future__ import annotations

import json

from conftest import HARPER_DEV

from livecoach.events import EvidenceRef, Signal
from livecoach.signals._cues_eval import (CUSTOMER_LABELS, customer_labels, judge_customer_side, seq_turns,
                                          summarise)
from livecoach.stream.replay import load_conversations


def _lead(call_id: str, kind: str, seq: int, tier: int = 0, **details) -> Signal:
    return Signal(call_id=call_id, kind=kind, confidence=0.7, tier=tier, audience="lead",
                  evidence=[EvidenceRef(seq=seq, excerpt="x")], detector="t", details=details)


def test_the_customer_label_fixture_covers_every_customer_turn_of_the_dev_calls():
    calls = load_conversations(HARPER_DEV)
    labels = customer_labels(CUSTOMER_LABELS)
    assert len(labels) >= 40
    for c in calls:
        cust = {i for i, t in enumerate(c["turns"]) if t["speaker"] == "customer"}
        assert set(labels[c["id"]]) == cust, c["id"]
    rows = [json.loads(x) for x in CUSTOMER_LABELS.read_text().splitlines()]
    assert {lab for r in rows for lab in r["labels"]} <= {"frustration", "churn", "escalation_request", "complaint",
                                                          "upgrade_interest", "abuse"}


def test_a_churn_signal_on_a_calm_turn_is_a_false_alarm_until_tier1_withdraws_it():
    call = load_conversations(HARPER_DEV)[0]  # 0002f70f7386445b: "i lost my debit card" at turn 5
    seq = next(s for s, i in seq_turns(call).items() if i == 5)
    labels = customer_labels()
    raised = _lead(call["id"], "churn_intent", seq, verdict="pending")
    r = judge_customer_side([call], {call["id"]: [raised]}, labels)
    assert (r["raised"], r["right"], r["precision"], r["recall"]) == (1, 0, 0.0, None)
    withdrawn = _lead(call["id"], "churn_intent", seq, tier=1, verdict="rejected", supersedes=raised.id)
    got = {call["id"]: [raised, withdrawn]}
    assert judge_customer_side([call], got, labels)["raised"] == 0
    s = summarise([call], got)
    assert s["customer_side_tier0"]["raised"] == 1 and s["customer_side"]["raised"] == 0


def test_a_signal_citing_a_labelled_turn_counts_as_right_and_found():
    call = load_conversations(HARPER_DEV)[0]
    turns = [dict(t) for t in call["turns"]]
    turns.insert(6, {"speaker": "customer", "text": "i want to close my account", "start_ms": 19100, "end_ms": 20000})
    built = {**call, "id": "built-1", "turns": turns}
    labels = {"built-1": {6: {"churn"}, 5: set()}}
    seq = next(s for s, i in seq_turns(built).items() if i == 6)
    good = _lead("built-1", "churn_intent", seq)
    wrong_kind = _lead("built-1", "complaint", seq)
    r = judge_customer_side([built], {"built-1": [good, wrong_kind]}, labels)
    assert r["per_kind"]["churn_intent"] == {"raised": 1, "right": 1, "precision": 1.0, "labelled": 1, "found": 1,
                                             "recall": 1.0}
    assert r["per_kind"]["complaint"]["precision"] == 0.0 and r["recall"] == 1.0
