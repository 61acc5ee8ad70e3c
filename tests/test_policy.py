"""The signal policy stage: audiences by phase, the agent cue budget, hot reload, routing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from livecoach.events import CallEnded, CallStarted, EvidenceRef, Signal, Utterance
from livecoach.settings import Settings
from livecoach.signals._policy_config import PolicyError, load_policy, parse_policy
from livecoach.signals.policy import SignalPolicy


def _settings(tmp_path: Path, **over) -> Settings:
    base = dict(data_dir=tmp_path, cache_dir=tmp_path / "cache", tier1_backend="off")
    base.update(over)
    return Settings(**base)


def _det(call_id: str, kind: str, conf: float, seq: int, t: float, text: str = "i want to close my account") -> Signal:
    return Signal(call_id=call_id, kind=kind, confidence=conf, detector="test",
                  evidence=[EvidenceRef(seq=seq, excerpt=text, t=t)])


async def _start(pol: SignalPolicy, call_id: str = "c1", agent: str = "alice") -> dict:
    st: dict = {}
    await pol.handle(CallStarted(call_id=call_id, seq=1, agent_id=agent), st)
    return st


def _agents(out) -> list[Signal]:
    return [s for s in out if s.audience == "agent"]


async def test_burst_of_50_high_confidence_detections_yields_at_most_the_cap(tmp_path):
    pol = SignalPolicy(_settings(tmp_path, phase=3))
    st = await _start(pol)
    kinds = ["frustration_spike", "churn_intent", "escalation_request", "complaint", "upgrade_interest",
             "identity_not_verified", "disclosure_missing", "consent_missing", "secret_read_out"]
    cues, leads = [], []
    for i in range(50):
        out = await pol.handle(_det("c1", kinds[i % len(kinds)], 0.99, 2 + i, t=10.0 + i * 90.0), st)
        cues += _agents(out)
        leads += [s for s in out if s.audience == "lead"]
    assert len(cues) == 3  # the default cap, although every one of them was far enough apart
    assert len({c.kind for c in cues}) == 3
    assert len(leads) > 3  # the lead feed is not capped
    assert all("risk" in s.details for s in leads)


async def test_prompt_cap_holds_at_four_per_call_whatever_the_file_says(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("version: 1\nagent: {cap_per_call: 9}\n")
    with pytest.raises(PolicyError, match="cap_per_call"):
        SignalPolicy(_settings(tmp_path, phase=3, policy_file=f))
    f.write_text("version: 1\nagent: {cap_per_call: 4, cooldown_s: 0}\nkinds:\n" + "".join(
        f"  k{i}: {{lead: 0.5, agent: {{2: 0.5}}, cue: 'Something happened — do the thing'}}\n" for i in range(10)))
    pol = SignalPolicy(_settings(tmp_path, phase=2, policy_file=f))
    st = await _start(pol)
    cues = []
    for i in range(50):
        cues += _agents(await pol.handle(_det("c1", f"k{i % 10}", 0.99, 2 + i, t=float(i)), st))
    assert len(cues) == 4


async def test_cooldown_is_measured_on_the_call_clock_not_the_wall_clock(tmp_path):
    pol = SignalPolicy(_settings(tmp_path, phase=3))
    st = await _start(pol)
    first = _agents(await pol.handle(_det("c1", "frustration_spike", 0.95, 2, t=10.0), st))
    soon = _agents(await pol.handle(_det("c1", "churn_intent", 0.99, 3, t=40.0), st))  # 30 s of call time later
    later = _agents(await pol.handle(_det("c1", "escalation_request", 0.99, 4, t=71.0), st))
    assert len(first) == 1 and soon == [] and len(later) == 1
    assert pol.stats["cue_suppressed_cooldown"] == 1


async def test_same_kind_is_cued_once_per_call(tmp_path):
    pol = SignalPolicy(_settings(tmp_path, phase=3))
    st = await _start(pol)
    a = _agents(await pol.handle(_det("c1", "frustration_spike", 0.95, 2, t=10.0), st))
    b = _agents(await pol.handle(_det("c1", "frustration_spike", 0.97, 9, t=300.0), st))
    assert len(a) == 1 and b == []


async def test_phase_one_reaches_leads_only_and_phase_two_only_compliance_and_sure_churn(tmp_path):
    for phase, expect in ((1, set()), (2, {"identity_not_verified", "churn_intent"}),
                          (3, {"identity_not_verified", "churn_intent", "frustration_spike"})):
        pol = SignalPolicy(_settings(tmp_path, phase=phase))
        st = await _start(pol)
        got = set()
        for i, (kind, conf) in enumerate((("frustration_spike", 0.95), ("identity_not_verified", 0.9),
                                          ("churn_intent", 0.95))):
            got |= {s.kind for s in _agents(await pol.handle(_det("c1", kind, conf, 2 + i, t=100.0 * i), st))}
        assert got == expect, phase
    pol = SignalPolicy(_settings(tmp_path, phase=2))
    st = await _start(pol)
    assert _agents(await pol.handle(_det("c1", "churn_intent", 0.88, 2, t=1.0), st)) == []  # not sure enough in phase 2


async def test_changing_the_phase_in_the_policy_file_changes_audiences_without_restart(tmp_path):
    f = tmp_path / "policy.yaml"
    base = (Path(__file__).resolve().parents[1] / "signals" / "policy.yaml").read_text()
    f.write_text(base.replace("# phase: 3", "phase: 1"))
    pol = SignalPolicy(_settings(tmp_path, phase=3, policy_file=f))
    pol.holder.check_every = 0.0
    assert pol.phase == 1
    st = await _start(pol)
    assert _agents(await pol.handle(_det("c1", "frustration_spike", 0.95, 2, t=1.0), st)) == []
    f.write_text(base.replace("# phase: 3", "phase: 3 ") + "\n")
    os.utime(f, (time.time() + 5, time.time() + 5))
    cues = _agents(await pol.handle(_det("c1", "churn_intent", 0.95, 3, t=100.0), st))
    assert pol.phase == 3 and pol.phase_source == "policy file"
    assert [c.kind for c in cues] == ["churn_intent"]


async def test_a_broken_policy_edit_keeps_the_previous_policy_and_says_why(tmp_path):
    f = tmp_path / "policy.yaml"
    f.write_text("version: 1\nkinds:\n  churn_intent: {lead: 0.5, agent: {2: 0.5}, cue: 'Leaving — ask why'}\n")
    pol = SignalPolicy(_settings(tmp_path, phase=2, policy_file=f))
    pol.holder.check_every = 0.0
    f.write_text("version: 1\nkinds:\n  churn_intent: {lead: 1.5}\n")
    os.utime(f, (time.time() + 5, time.time() + 5))
    st = await _start(pol)
    out = await pol.handle(_det("c1", "churn_intent", 0.9, 2, t=1.0), st)
    assert len(_agents(out)) == 1
    assert "kinds.churn_intent.lead" in pol.holder.error and "0-1" in pol.holder.error


def test_policy_validation_errors_name_the_field():
    with pytest.raises(PolicyError, match="'version' is missing"):
        parse_policy("kinds: {}", "x.yaml")
    with pytest.raises(PolicyError, match="reads policy version 1"):
        parse_policy("version: 2", "x.yaml")
    with pytest.raises(PolicyError, match="needs a 'cue'"):
        parse_policy("version: 1\nkinds: {churn_intent: {agent: 0.9}}", "x.yaml")
    with pytest.raises(PolicyError, match="not valid YAML"):
        parse_policy("version: [1", "x.yaml")
    with pytest.raises(PolicyError, match="uncertainty_band"):
        parse_policy("version: 1\ntier1: {uncertainty_band: [0.9, 0.2]}", "x.yaml")


def test_the_packaged_policy_is_valid_and_cues_are_observations_not_scripts():
    from livecoach.signals._policy_config import default_policy_path

    cfg = load_policy(default_policy_path())
    for kind, kp in cfg.kinds.items():
        if kp.agent is not None:
            assert " — " in kp.cue, kind  # observation — nudge
            assert '"' not in kp.cue and "say:" not in kp.cue.lower(), kind  # never a line to read out
            assert len(kp.cue) <= 100, kind


async def test_routing_suggests_desks_and_alerts_the_lead(tmp_path):
    pol = SignalPolicy(_settings(tmp_path, phase=1))
    st = await _start(pol)
    churn = (await pol.handle(_det("c1", "churn_intent", 0.9, 2, t=1.0), st))[0]
    esc = (await pol.handle(_det("c1", "escalation_request", 0.9, 3, t=2.0), st))[0]
    up = (await pol.handle(_det("c1", "upgrade_interest", 0.9, 4, t=3.0, text="do you have a premium card"), st))[0]
    assert churn.details["route"]["desk"] == "save_desk" and churn.details["route"]["action"] == "suggest_handoff"
    assert esc.details["route"]["action"] == "alert_lead" and esc.details["alert"] is True
    assert up.details["route"]["desk"] == "sales_desk"
    assert churn.details["risk"] > up.details["risk"]


async def test_lead_feed_repeats_a_kind_only_after_the_repeat_interval(tmp_path):
    pol = SignalPolicy(_settings(tmp_path, phase=1))
    st = await _start(pol)
    a = await pol.handle(_det("c1", "complaint", 0.9, 2, t=10.0), st)
    b = await pol.handle(_det("c1", "complaint", 0.9, 3, t=20.0), st)
    c = await pol.handle(_det("c1", "complaint", 0.9, 4, t=45.0), st)
    assert len(a) == 1 and b == [] and len(c) == 1


async def test_a_detection_after_the_call_ended_reaches_the_lead_but_never_resets_the_cue_budget(tmp_path):
    pol = SignalPolicy(_settings(tmp_path, phase=3))
    st = await _start(pol)
    for i, k in enumerate(("identity_not_verified", "churn_intent", "frustration_spike")):
        await pol.handle(_det("c1", k, 0.99, 2 + i, t=100.0 * i), st)
    await pol.handle(CallEnded(call_id="c1", seq=9), st)
    fresh: dict = {}  # the runtime drops a call's state after CallEnded
    out = await pol.handle(_det("c1", "escalation_request", 0.99, 8, t=900.0), fresh)
    assert [s.audience for s in out] == ["lead"]
    assert fresh["cue"]["sent"] == 3


async def test_agent_cue_names_the_agent_and_is_a_separate_signal(tmp_path):
    pol = SignalPolicy(_settings(tmp_path, phase=3))
    st = await _start(pol, agent="bob")
    await pol.handle(Utterance(call_id="c1", seq=2, speaker="customer", text="this is ridiculous", t_start=5.0), st)
    out = await pol.handle(_det("c1", "frustration_spike", 0.95, 2, t=5.0, text="this is ridiculous"), st)
    lead, cue = out
    assert lead.audience == "lead" and cue.audience == "agent" and lead.id != cue.id
    assert cue.details["agent_id"] == "bob" and cue.message.startswith("Customer frustration rising")
    assert cue.tier == 0 and cue.details["decided_by"] == "tier0"


async def test_a_detection_that_overtook_call_end_in_a_fast_replay_still_cues_as_live_would(tmp_path):
    pol = SignalPolicy(_settings(tmp_path, phase=3))
    st = await _start(pol)
    for i, t in enumerate((5.0, 20.0, 48.0)):
        await pol.handle(Utterance(call_id="c1", seq=2 + i, speaker="customer", text="hello", t_start=t, t_end=t + 2), st)
    await pol.handle(CallEnded(call_id="c1", seq=9), st)
    fresh: dict = {}
    out = await pol.handle(_det("c1", "frustration_spike", 0.95, 3, t=20.0), fresh)  # said at 0:20, call ran to 0:50
    assert [s.audience for s in out] == ["lead", "agent"]
