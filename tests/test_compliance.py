"""Compliance over the event stream (rules and policy only: no model needed here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from livecoach.events import AgentAction, CallEnded, CallStarted, Utterance
from livecoach.models.data import shared_data_dir
from livecoach.signals import ComplianceMonitor, CompliancePolicy, ComplianceStage
from livecoach.signals._behaviours import BehaviourConfig
from livecoach.signals.compliance import find_card_number, find_ssn, luhn_ok, spoken_digits

DATA = shared_data_dir()


@pytest.fixture(scope="module")
def monitor() -> ComplianceMonitor:
    return ComplianceMonitor(CompliancePolicy.load(), BehaviourConfig.load().consent)


def _start(monitor, tags=(), channel="voice", call_id="c1"):
    st: dict = {}
    monitor.start(CallStarted(call_id=call_id, seq=1, agent_id="a", tags=list(tags), channel=channel), st)
    return st


def _say(monitor, st, seq, speaker, text, t, cfg=BehaviourConfig.load()):
    r = cfg.rule_scores(text) if speaker == "agent" else {}
    return monitor.utterance(Utterance(call_id="c1", seq=seq, speaker=speaker, text=text, t_start=t, t_end=t + 2), st,
                             disclosure=r.get("disclosures", {}), consent_asked=r.get("consent", 0.0))


def _hv_calls():
    return [json.loads(line) for line in open(DATA / "harper_valley" / "calls_dev.jsonl")]


# ---- identity before account actions (ABCD kb.json order) ------------------------------------------

def test_default_policy_is_the_abcd_kb_order():
    kb = json.loads((DATA / "abcd" / "kb.json").read_text())
    policy = CompliancePolicy.load()
    assert policy.raw["identity"]["subflows"] == kb
    gated, sub = policy.gated_actions(["abcd:manage_change_address"])
    assert sub == "manage_change_address" and gated == {"update-account"}


def test_changing_an_address_before_verifying_identity_is_flagged(monitor):
    st = _start(monitor, ["abcd:manage_change_address"])
    assert monitor.action(AgentAction(call_id="c1", seq=2, name="pull-up-account", t=10), st) == []
    assert monitor.action(AgentAction(call_id="c1", seq=3, name="record-reason", t=20), st) == []
    found = monitor.action(AgentAction(call_id="c1", seq=4, name="update-account", t=75), st)
    assert [f.kind for f in found] == ["identity_not_verified"]
    assert "1:15" in found[0].message and found[0].evidence[0].seq == 4
    assert found[0].details["subflow"] == "manage_change_address"


def test_the_same_action_after_verification_is_fine(monitor):
    st = _start(monitor, ["abcd:manage_change_address"])
    for seq, name in enumerate(["pull-up-account", "record-reason", "verify-identity", "update-account"], 2):
        assert monitor.action(AgentAction(call_id="c1", seq=seq, name=name), st) == []


def test_a_subflow_without_verification_in_kb_gates_nothing(monitor):
    # kb: status_service_added = pull-up-account, record-reason, ask-the-oracle, update-account, offer-refund
    st = _start(monitor, ["abcd:status_service_added"])
    for seq, name in enumerate(["pull-up-account", "update-account", "offer-refund"], 2):
        assert monitor.action(AgentAction(call_id="c1", seq=seq, name=name), st) == []


def test_abcd_sample_conversations_follow_their_kb_order(monitor):
    """The three real ABCD conversations (validate-purchase verifies in the refund/return flows)."""
    for line in open(DATA / "abcd" / "abcd_sample_train.jsonl"):
        conv = json.loads(line)
        st = _start(monitor, [f"abcd:{conv['subflow']}"], call_id=f"abcd-{conv['id']}")
        found = []
        for k, a in enumerate(conv["actions"], 2):
            found += monitor.action(AgentAction(call_id=f"abcd-{conv['id']}", seq=k, name=a["action"]), st)
        assert [f.kind for f in found if f.kind == "identity_not_verified"] == []


def test_refund_without_validating_the_purchase_is_flagged(monitor):
    st = _start(monitor, ["abcd:refund_initiate"])
    monitor.action(AgentAction(call_id="c1", seq=2, name="pull-up-account"), st)
    found = monitor.action(AgentAction(call_id="c1", seq=3, name="offer-refund"), st)
    assert [f.kind for f in found] == ["identity_not_verified"]


def test_calls_without_a_subflow_use_the_default_gate(monitor):
    st = _start(monitor)
    assert monitor.action(AgentAction(call_id="c1", seq=2, name="pull-up-account"), st) == []
    assert [f.kind for f in monitor.action(AgentAction(call_id="c1", seq=3, name="make-password"), st)] == [
        "identity_not_verified"]


# ---- disclosures ------------------------------------------------------------------------------------

def test_recording_disclosure_missing_after_its_window_on_a_real_call(monitor):
    """Harper Valley agents never say the call is recorded: tagged 'recorded', the check fires once
    the call passes 60 s, and only once."""
    call = next(c for c in _hv_calls() if c["duration_ms"] > 80_000)
    st = _start(monitor, ["recorded"])
    found = []
    for seq, t in enumerate(call["turns"], 2):
        found += _say(monitor, st, seq, t["speaker"], t["text"], t["start_ms"] / 1000)
    found += monitor.end(CallEnded(call_id="c1", seq=999), st)
    kinds = [f.kind for f in found]
    assert kinds.count("disclosure_missing") == 1
    f = next(f for f in found if f.kind == "disclosure_missing")
    assert f.details["disclosure"] == "recording" and not f.details["at_call_end"]
    assert f.evidence[0].t > 60


def test_recording_disclosure_given_in_time_is_not_flagged(monitor):
    st = _start(monitor, ["recorded"])
    _say(monitor, st, 2, "agent", "hello this is harper valley national bank this call may be recorded for quality", 1)
    _say(monitor, st, 3, "customer", "hi i need to check my balance", 70)
    assert monitor.end(CallEnded(call_id="c1", seq=4), st) == []


def test_untagged_calls_need_no_disclosure(monitor):
    st = _start(monitor)
    _say(monitor, st, 2, "customer", "hi", 200)
    assert monitor.end(CallEnded(call_id="c1", seq=3), st) == []


def test_fee_disclosure_must_come_before_the_end_of_a_fees_call(monitor):
    st = _start(monitor, ["fees"])
    _say(monitor, st, 2, "agent", "there is no fee to check your balance", 5)
    assert [f.kind for f in monitor.end(CallEnded(call_id="c1", seq=3), st)] == ["disclosure_missing"]
    st = _start(monitor, ["fees"])
    # Harper Valley call 0395f6997a8e4836, agent turn 24 (expedite "for a cost")
    _say(monitor, st, 2, "agent", "if you want to expedite it you can um give us another call back and we can "
                                  "expedite that for you for a cost", 5)
    assert monitor.end(CallEnded(call_id="c1", seq=3), st) == []


# ---- consent ----------------------------------------------------------------------------------------

def test_consent_captured_when_the_customer_agrees(monitor):
    st = _start(monitor, ["tcpa"])
    _say(monitor, st, 2, "agent", "do i have your permission to text you updates about this transfer", 10)
    _say(monitor, st, 3, "customer", "yes that's fine", 14)
    assert monitor.end(CallEnded(call_id="c1", seq=4), st) == []


def test_consent_missing_when_never_asked_on_a_tagged_call(monitor):
    st = _start(monitor, ["tcpa"])
    _say(monitor, st, 2, "agent", "hello this is harper valley national bank how can i help you today", 1)
    found = _say(monitor, st, 3, "customer", "i would like to transfer money between my accounts", 130)
    assert [f.kind for f in found] == ["consent_missing"]
    assert found[0].details["asked"] is False


def test_consent_refused_is_not_consent(monitor):
    st = _start(monitor, ["tcpa"])
    _say(monitor, st, 2, "agent", "may we have your consent to call you back on this number", 10)
    _say(monitor, st, 3, "customer", "no i'd rather not", 12)
    found = monitor.end(CallEnded(call_id="c1", seq=4), st)
    assert [f.kind for f in found] == ["consent_missing"] and found[0].details["asked"] is True


def test_a_consent_action_captures_consent(monitor):
    st = _start(monitor, ["tcpa"])
    monitor.action(AgentAction(call_id="c1", seq=2, name="capture-consent", t=5), st)
    assert monitor.end(CallEnded(call_id="c1", seq=3), st) == []


# ---- secrets read out -------------------------------------------------------------------------------

def test_luhn():
    assert luhn_ok("4111111111111111") and luhn_ok("5500005555555559")
    assert not luhn_ok("4111111111111112")


def test_spoken_digits_are_read_as_numbers():
    assert spoken_digits("my phone number is five seven zero four four eight")[0][0] == "570448"
    assert spoken_digits("card 4111-1111 1111 1111")[0][0] == "4111111111111111"


def test_agent_reading_a_full_card_number_is_flagged(monitor):
    st = _start(monitor)
    text = "okay so the card on file is four one one one one one one one one one one one one one one one"
    found = _say(monitor, st, 2, "agent", text, 30)
    assert [f.kind for f in found] == ["secret_read_out"]
    assert found[0].details["masked"].endswith("1111") and "4111111111111111" not in json.dumps(found[0].details)
    assert found[0].evidence[0].excerpt == "[card number redacted]"


def test_a_card_number_split_over_two_agent_turns_is_flagged(monitor):
    st = _start(monitor)
    assert _say(monitor, st, 2, "agent", "the number is five five zero zero zero zero five five", 30) == []
    found = _say(monitor, st, 3, "agent", "five five five five five five five nine", 33)
    assert [f.kind for f in found] == ["secret_read_out"]


def test_numbers_that_fail_luhn_are_not_card_numbers():
    assert find_card_number("four one one one one one one one one one one one one one one two") is None


def test_no_harper_valley_agent_turn_reads_out_a_secret(monitor):
    """Real calls are full of phone numbers, zip codes and amounts: none is a card number."""
    for call in _hv_calls():
        st = _start(monitor)
        for seq, t in enumerate(call["turns"], 2):
            found = _say(monitor, st, seq, t["speaker"], t["text"], t["start_ms"] / 1000)
            assert [f for f in found if f.kind == "secret_read_out"] == [], t["text"]


def test_ssn_needs_the_word_social():
    assert find_ssn("your social is one two three four five six seven eight nine") == "123456789"
    assert find_ssn("the amount is one two three four five six seven eight nine") is None


# ---- the rules-only stage ---------------------------------------------------------------------------

async def test_compliance_stage_runs_on_events_and_keeps_state_json():
    stage = ComplianceStage()
    st: dict = {}
    out = await stage.handle(CallStarted(call_id="c9", seq=1, agent_id="a", tags=["abcd:manage_change_phone"]), st)
    out = list(out) + list(await stage.handle(AgentAction(call_id="c9", seq=2, name="update-account", t=42), st))
    assert [s.kind for s in out] == ["identity_not_verified"]
    assert out[0].tier == 0 and out[0].audience == "lead" and out[0].evidence[0].seq == 2
    json.dumps(st)


def test_policy_file_must_be_a_policy(tmp_path: Path):
    p = tmp_path / "bad.yaml"
    p.write_text("hello: world\n")
    with pytest.raises(ValueError, match="not a compliance policy"):
        CompliancePolicy.load(p)
