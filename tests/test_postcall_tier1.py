"""Tier-1 in the QA note: the judgements that need context (was the complaint resolved by the close,
was a live risk signal borne out, churn/escalation risk at the end) are read by the tier-1 window
classifier and recorded with their provenance; with tier-1 off the same note is drafted by rules
and says so."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from livecoach.events import CallEnded, CallStarted, Utterance
from livecoach.postcall import _tier1
from livecoach.postcall._scoring import draft_note
from livecoach.postcall.drafter import NoteDrafter
from livecoach.settings import Settings

from test_postcall import CALM, RUBRIC, call

UNRESOLVED = [
    ("agent", "hello this is harper valley bank how can i help you today", 0, 4),
    ("customer", "i want to make a complaint you charged me twice and nobody fixed it", 5, 9),
    ("agent", "let me look at your account", 10, 12),
    ("customer", "this is the third time i'm calling i'm really frustrated", 13, 16),
    ("agent", "i have sent the refund request", 17, 20),
    ("customer", "that's not good enough i want to speak to your manager", 21, 24),
    ("agent", "thank you for calling have a great day", 25, 27),
    ("customer", "i'm going to close my account and move to another bank", 28, 31),
]

# the same opening complaint, but the agent fixes it and the customer leaves satisfied
RESOLVED = UNRESOLVED[:5] + [
    ("customer", "okay thank you", 21, 22),
    ("agent", "is there anything else i can help you with", 23, 25),
    ("customer", "no that's all thank you so much that fixed it", 26, 29),
    ("agent", "thank you for calling have a great day", 30, 32),
]


@pytest.fixture(scope="module")
def tier1():
    r = _tier1.reader_for(Settings(tier1_backend="model"))
    assert r.warm_up(), f"the committed tier-1 model did not load ({r.status})"
    return r


def test_a_call_ending_unresolved_after_a_complaint_gets_the_tier1_judgement(tier1):
    note = draft_note(call(UNRESOLVED), RUBRIC, use_detectors=False, tier1=tier1)
    assert note["scorer"] == "rules+tier1"
    assert note["tier1"]["status"] == "used" and note["tier1"]["backend"].startswith("model")
    assert "complaint_resolved" in note["tier1"]["judgements"]
    cr = note["judgements"]["complaint_resolved"]
    assert cr["value"] is False and cr["source"] == "tier1"
    assert cr["reading"]["tier1"]["p_unresolved"] >= _tier1.UNRESOLVED_AT
    assert [e["seq"] for e in cr["evidence"]][-1] == 9  # the customer's last words are cited
    assert "the customer's complaint was still unresolved at the close (tier-1)" in note["flags"]["risk_reasons"]
    assert note["flags"]["customer_risk"] and "tier1" in note["flags"]["provenance"]["customer_risk"]
    vr = next(k for k in note["criteria"] if k["id"] == "verify_resolution")
    assert "tier1" in vr["sources"] and vr["context"]["complaint_resolved"] is False
    assert all("sources" in k for k in note["criteria"])


def test_a_complaint_resolved_by_the_close_is_read_as_resolved(tier1):
    note = draft_note(call(RESOLVED), RUBRIC, use_detectors=False, tier1=tier1)
    cr = note["judgements"]["complaint_resolved"]
    assert cr["source"] == "tier1" and cr["value"] is True
    assert cr["reading"]["tier1"]["p_unresolved"] < _tier1.UNRESOLVED_AT
    assert not any("unresolved" in r for r in note["flags"]["risk_reasons"])


def test_a_calm_call_has_no_complaint_to_resolve(tier1):
    note = draft_note(call(CALM), RUBRIC, use_detectors=False, tier1=tier1)
    assert note["judgements"]["complaint_resolved"]["value"] is None
    assert note["judgements"]["customer_risk"]["value"] is False
    assert note["flags"]["customer_risk"] is False


def test_a_live_churn_signal_the_context_contradicts_is_not_a_risk(tier1):
    benign = {"id": "s1", "kind": "churn_intent", "evidence": [{"seq": 3, "excerpt": "x"}]}  # "i lost my debit card"
    real = {"id": "s2", "kind": "churn_intent", "evidence": [{"seq": 9, "excerpt": "x"}]}
    calm = draft_note(call(CALM, signals=[benign]), RUBRIC, use_detectors=False, tier1=tier1)
    v = calm["judgements"]["live_signals"][0]
    assert v["source"] == "tier1" and v["verdict"] == "contradicted" and v["p"] < _tier1.CONTRADICTED_BELOW
    assert not any("churn_intent" in r for r in calm["flags"]["risk_reasons"])
    angry = draft_note(call(UNRESOLVED, signals=[real]), RUBRIC, use_detectors=False, tier1=tier1)
    v = angry["judgements"]["live_signals"][0]
    assert v["verdict"] == "supported"
    assert "live signal churn_intent (confirmed by tier-1)" in angry["flags"]["risk_reasons"]


def _stored_call(tmp_path: Path, turns):
    from livecoach.store import Store

    st = Store(f"sqlite:///{tmp_path / 'n.db'}")

    async def load():
        await st.append(CallStarted(call_id="c-off", seq=1, agent_id="alice", customer={"name": "Dana Reyes"}))
        for i, (s, x, a, b) in enumerate(turns):
            await st.append(Utterance(call_id="c-off", seq=i + 2, speaker=s, text=x, t_start=a, t_end=b))
        await st.append(CallEnded(call_id="c-off", seq=len(turns) + 2))

    asyncio.run(load())
    return st


def test_with_tier1_off_the_drafter_still_writes_the_note_by_rules_and_says_so(tmp_path: Path):
    st = _stored_call(tmp_path, UNRESOLVED)
    try:
        drafter = NoteDrafter(Settings(data_dir=tmp_path, tier1_backend="off", postcall_detectors=False), st)
        note = drafter.draft("c-off")
    finally:
        st.close()
    assert note is not None and note["criteria"]
    assert note["scorer"] == "rules"
    assert note["tier1"]["status"] == "off" and note["tier1"]["judgements"] == []
    assert "tier1_backend=off" in note["tier1"]["fallback"]
    cr = note["judgements"]["complaint_resolved"]
    assert cr["source"] == "rules" and cr["value"] is not None
    assert note["judgements"]["customer_risk"]["source"] == "rules"
    assert "tier1" not in note["flags"]["provenance"]["customer_risk"]
    assert all("tier1" not in k["sources"] for k in note["criteria"])


def test_a_tier1_backend_that_fails_falls_back_to_rules(tmp_path: Path):
    class Broken:
        name = "broken"

        def warm_up(self):
            raise RuntimeError("no model here")

        def score(self, case):
            raise AssertionError("never called")

    note = draft_note(call(UNRESOLVED), RUBRIC, use_detectors=False,
                      tier1=_tier1.Tier1Reader(Broken()), wait_for_tier1=True)
    assert note["scorer"] == "rules" and note["tier1"]["status"] == "failed"
    assert note["judgements"]["complaint_resolved"]["source"] == "rules"
