"""Tier-0 detectors on real examples from ../shared/data (committed artefacts; nothing trains here)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from livecoach.events import AgentAction, CallEnded, CallStarted, Signal, Utterance
from livecoach.models.batcher import MicroBatcher
from livecoach.models.data import harper_valley_calls
from livecoach.settings import Settings
from livecoach.signals import Scorer, Tier0Detectors, UtteranceScores, score_utterances

FIXTURE = Path(__file__).parent / "fixtures" / "agent_behaviours.jsonl"


@pytest.fixture(scope="session")
def settings(tmp_path_factory) -> Settings:
    return Settings(cache_dir=tmp_path_factory.mktemp("lc-cache"), data_dir=tmp_path_factory.mktemp("lc-data"))


@pytest.fixture(scope="session")
def scorer(settings) -> Scorer:
    return Scorer.from_settings(settings, progress=lambda m: None)


def _one(scorer, text, speaker="customer") -> UtteranceScores:
    return scorer.score([(text, speaker)])[0]


async def _replay(stage, call: dict, call_id: str, tags=(), extra: dict[int, tuple[str, str]] | None = None):
    """Replay a Harper Valley call through the stage; ``extra`` inserts (speaker, text) after turn k."""
    st: dict = {}
    out: list[Signal] = []
    seq = 1
    out += await stage.handle(CallStarted(call_id=call_id, seq=seq, agent_id="a", tags=list(tags), channel="voice"), st)
    for k, t in enumerate(call["turns"]):
        seq += 1
        out += await stage.handle(Utterance(call_id=call_id, seq=seq, speaker=t["speaker"], text=t["text"],
                                            t_start=t["start_ms"] / 1000, t_end=t["end_ms"] / 1000), st)
        json.dumps(st)  # the per-call state must stay JSON-able (a Faust table later)
        if extra and k in extra:
            sp, text = extra[k]
            seq += 1
            t0 = t["end_ms"] / 1000 + 1
            out += await stage.handle(Utterance(call_id=call_id, seq=seq, speaker=sp, text=text, t_start=t0,
                                                t_end=t0 + 3), st)
    seq += 1
    out += await stage.handle(CallEnded(call_id=call_id, seq=seq), st)
    return out, st


# ---- sentiment ----------------------------------------------------------------------------------

def test_sentiment_on_real_dev_tweets(scorer):
    # TweetEval sentiment val (never trained on)
    assert _one(scorer, '"What a round by Paul Dunne, good luck tomorrow and I hope you win the Open."').sentiment == "positive"
    assert _one(scorer, "Can't wait for tomorrow at 9 pm! Chelsea v crystal palace! Hope the blues will win!"
                ).sentiment == "positive"
    assert _one(scorer, "@user I haven't been able to watch TVD live these days due to Football. Every Thurs there "
                        "is high school FB going on at 8pm. Like WTF!").sentiment == "negative"


def test_calm_support_turns_are_not_negative(scorer):
    # Harper Valley customer turns
    for text in ("no that'll be it thank you", "hi my name is robert johnson i would like to transfer money between "
                 "my accounts", "my savings account"):
        assert _one(scorer, text).sentiment != "negative", text


def test_angry_customer_reads_negative(scorer):
    s = _one(scorer, "this is the third time i'm calling and nobody has fixed it, i'm really fed up")
    assert s.sentiment == "negative" and s.negativity > 0.6


def test_transcription_markers_alone_score_as_empty(scorer):
    s = _one(scorer, "[noise] <unk>")
    assert s.empty and s.sentiment == "neutral" and s.intent == "none"


# ---- intents ------------------------------------------------------------------------------------

def test_churn_on_banking77_terminate_account_not_on_cancel_transfer(scorer):
    # Banking77 dev carve: terminate_account vs cancel_transfer
    assert _one(scorer, "How do I deactivate my account?").intent == "churn"
    assert _one(scorer, "make my account go away").intent == "churn"
    assert _one(scorer, "I need to cancel a transaction please!").intent == "none"
    assert _one(scorer, "cancel my transfer").intent == "none"


def test_escalation_is_asking_for_a_human_not_for_customer_service(scorer):
    # Bitext dev: contact_human_agent vs contact_customer_service
    assert _one(scorer, "i want assistance to talk to somebody").intent == "escalation_request"
    assert _one(scorer, "i want to speak to a manager").intent == "escalation_request"
    assert _one(scorer, "how can i get in touch with customer assistance").intent == "none"
    assert _one(scorer, "ask an agent where i can register").intent == "none"


def test_complaint_and_upgrade_interest(scorer):
    assert _one(scorer, "could you help me to file a complaint against your business?").intent == "complaint"
    assert _one(scorer, "I would like to give another card to my daughter, how can I proceed?"
                ).intent == "upgrade_interest"
    # a Harper Valley customer replacing a lost card is not expansion
    assert _one(scorer, "hi my name is mary smith i lost my credit card can you send me a new one").intent == "none"


def test_intent_probabilities_are_a_distribution(scorer):
    s = _one(scorer, "I want to cancel my account.")
    assert abs(sum(s.intent_probs.values()) - 1) < 1e-3 and abs(sum(s.sentiment_probs.values()) - 1) < 1e-3


def test_each_speaker_runs_only_the_branch_its_detectors_read(scorer, monkeypatch):
    """Customer turns: the tuned branch (sentiment, intent, abuse); agent turns: the sentence
    embedding (behaviours). One 6-layer pass per utterance, never both branches."""
    asked: list[dict[str, int]] = []
    real = scorer.encoder.encode_groups

    def recording(groups):
        asked.append({o: len(t) for o, t in groups.items()})
        return real(groups)

    monkeypatch.setattr(scorer.encoder, "encode_groups", recording)
    cust = _one(scorer, "i want to speak to a manager")
    agent = _one(scorer, "is there anything else i can help you with", "agent")
    mixed = scorer.score([("get me a supervisor", "customer"), ("thanks for calling", "agent"),
                          ("close my account", "customer")])
    assert asked == [{"tuned": 1}, {"emb": 1}, {"tuned": 2, "emb": 1}]
    assert cust.intent == "escalation_request" and cust.behaviours == {}
    assert agent.sentiment_probs == {} and agent.intent_probs == {} and "resolution_checked" in agent.behaviour_flags
    assert [m.intent for m in mixed] == ["escalation_request", "none", "churn"] and mixed[1].intent_probs == {}


# ---- agent behaviours ---------------------------------------------------------------------------

def test_agent_behaviours_on_hand_labelled_harper_valley_calls(scorer):
    rows = [json.loads(x) for x in FIXTURE.read_text().splitlines() if x.strip()]
    hv = [r for r in rows if r["source"] == "harper_valley" and r["split"] == "eval"]
    assert len({r["call_id"] for r in hv}) >= 40 or len({r["call_id"] for r in rows
                                                         if r["source"] == "harper_valley"}) >= 40
    scores = scorer.score([(r["text"], "agent") for r in hv])
    for b, min_p, min_r in (("resolution_checked", 0.9, 0.9), ("identity_verification_asked", 0.8, 0.75)):
        gold = [b in r["labels"] for r in hv]
        pred = [b in s.behaviour_flags for s in scores]
        tp = sum(g and p for g, p in zip(gold, pred))
        assert tp / max(1, sum(pred)) >= min_p, b
        assert tp / max(1, sum(gold)) >= min_r, b
    # Harper Valley agents never acknowledge emotion: almost no false alarms
    assert sum("emotion_acknowledged" in s.behaviour_flags for s in scores) <= 2


def test_sorry_could_you_repeat_is_not_emotion_acknowledgement(scorer):
    s = scorer.score([("i'm sorry could you repeat that", "agent"),
                      ("i'm so sorry to hear that, that must be really frustrating", "agent")])
    assert "emotion_acknowledged" not in s[0].behaviour_flags
    assert "emotion_acknowledged" in s[1].behaviour_flags


def test_behaviours_are_scored_for_agent_turns_only(scorer):
    s = scorer.score([("is there anything else i can help you with", "customer")])[0]
    assert s.behaviours == {} and s.behaviour_flags == []


# ---- score_utterances (post-call) ---------------------------------------------------------------

def test_score_utterances_takes_events_and_dicts(scorer):
    call = harper_valley_calls()[0]
    utts = [Utterance(call_id="x", seq=i + 1, speaker=t["speaker"], text=t["text"], t_start=t["start_ms"] / 1000)
            for i, t in enumerate(call["turns"])]
    out = score_utterances(utts, scorer=scorer)
    assert len(out) == len(utts) and out[0].seq == 1 and out[0].t == utts[0].t_start
    closing = next(o for o in out if o.text.startswith("is there anything else"))
    assert "resolution_checked" in closing.behaviour_flags
    d = score_utterances([{"text": "I want to cancel my account."}], scorer=scorer)[0]
    assert d.speaker == "customer" and d.intent == "churn"
    json.dumps(d.to_dict())


# ---- the stage ----------------------------------------------------------------------------------

@pytest.fixture
async def stage(settings, scorer):
    s = Tier0Detectors(settings, scorer=scorer)
    await s.start()
    yield s
    await s.stop()


async def test_calm_harper_valley_calls_produce_few_confident_candidates(stage):
    calls = harper_valley_calls()[:20]
    high = 0
    for c in calls:
        out, _ = await _replay(stage, c, "hv-" + c["id"])
        assert all(s.tier == 0 and s.audience == "lead" and s.detector.startswith("tier0") for s in out)
        high += sum(s.confidence >= 0.8 for s in out)
    assert high / len(calls) <= 0.25


async def test_inserted_escalation_request_becomes_a_candidate_with_evidence(stage):
    """A Bitext contact_human_agent message inserted into a real call (Harper Valley has none)."""
    call = harper_valley_calls()[2]
    out, _ = await _replay(stage, call, "ins-1", extra={3: ("customer", "i want assistance to talk to somebody")})
    esc = [s for s in out if s.kind == "escalation_request"]
    assert esc and esc[0].confidence >= 0.5
    assert esc[0].evidence[0].excerpt == "i want assistance to talk to somebody"
    assert esc[0].evidence[0].t is not None and "intent_probs" in esc[0].details


async def test_frustration_spike_then_recovery_with_minute_marks(stage):
    """Negative then positive customer turns inserted into a real call; spike and recovery carry m:ss."""
    call = next(c for c in harper_valley_calls() if c["id"] == "0395f6997a8e4836")
    extra = {
        4: ("customer", "this is ridiculous, i've been waiting forever and nobody helps me"),
        6: ("customer", "i'm really angry, this bank is terrible and i'm fed up"),
        8: ("customer", "seriously this is the worst service i have ever had"),
        16: ("customer", "oh great, thank you so much, that's perfect"),
        21: ("customer", "wonderful, you've been really helpful, i appreciate it"),
        25: ("customer", "thanks a lot, have a lovely day"),
    }
    out, st = await _replay(stage, call, "frus-1", extra=extra)
    kinds = [s.kind for s in out]
    assert "frustration_spike" in kinds and "frustration_recovered" in kinds
    assert kinds.index("frustration_spike") < kinds.index("frustration_recovered")
    spike = next(s for s in out if s.kind == "frustration_spike")
    rec = next(s for s in out if s.kind == "frustration_recovered")
    assert spike.message.startswith("Frustration spike at 0:")
    assert "recovered by" in rec.message and rec.evidence[0].seq == spike.evidence[0].seq
    assert len(st["frustration"]["series"]) > 5


async def test_compliance_runs_inside_the_stage(stage):
    st: dict = {}
    await stage.handle(CallStarted(call_id="cmp", seq=1, agent_id="a", tags=["abcd:manage_change_name"]), st)
    out = await stage.handle(AgentAction(call_id="cmp", seq=2, name="update-account", t=30), st)
    assert [s.kind for s in out] == ["identity_not_verified"]
    out = await stage.handle(Utterance(call_id="cmp", seq=3, speaker="agent", t_start=40,
                                       text="okay your card number is four one one one one one one one one one "
                                            "one one one one one one"), st)
    assert "secret_read_out" in [s.kind for s in out]


async def test_concurrent_calls_share_micro_batches(stage):
    calls = harper_valley_calls()[:12]
    before = stage.batcher.batches
    items_before = stage.batcher.items
    await asyncio.gather(*(_replay(stage, c, f"conc-{i}") for i, c in enumerate(calls)))
    batches = stage.batcher.batches - before
    items = stage.batcher.items - items_before
    assert items > 0 and items / batches > 2  # many calls' utterances went through one encoder call


async def test_detectors_off_loads_no_model_and_still_checks_compliance(tmp_path):
    s = Settings(cache_dir=tmp_path / "cache", detectors=False)
    stage = Tier0Detectors(s)
    await stage.start()
    assert stage.batcher is None and stage.scorer is None
    st: dict = {}
    await stage.handle(CallStarted(call_id="off", seq=1, agent_id="a"), st)
    out = await stage.handle(Utterance(call_id="off", seq=2, speaker="customer", text="I want to cancel my account."), st)
    assert out == [] and not (tmp_path / "cache").exists()


# ---- the micro-batcher --------------------------------------------------------------------------

async def test_micro_batcher_closes_batches_at_n_items_or_after_the_wait():
    seen: list[int] = []

    def fn(items):
        seen.append(len(items))
        time.sleep(0.002)
        return [i * 2 for i in items]

    b = MicroBatcher(fn, max_batch=8, max_wait_ms=5)
    out = await asyncio.gather(*(b.submit(i) for i in range(40)))
    assert out == [i * 2 for i in range(40)]
    assert max(seen) <= 8 and len(seen) < 40
    t0 = time.perf_counter()
    assert await b.submit(21) == 42  # alone: waits at most ~max_wait
    assert time.perf_counter() - t0 < 0.5
    await b.aclose()


async def test_micro_batcher_passes_errors_to_every_waiter():
    def fn(items):
        raise RuntimeError("encoder down")

    b = MicroBatcher(fn, max_batch=4, max_wait_ms=1)
    res = await asyncio.gather(*(b.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in res)
    await b.aclose()


# ---- CLI ----------------------------------------------------------------------------------------

def test_models_predict_writes_one_label_per_line(tmp_path, settings, scorer, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from livecoach.models import cli as mcli
    from livecoach.signals import _scoring

    monkeypatch.setattr(_scoring, "_DEFAULT", scorer)
    app = typer.Typer()
    mcli.register(app)
    f = tmp_path / "in.jsonl"
    f.write_text('{"text": "How do I deactivate my account?"}\n{"text": "cancel my transfer", "speaker": "customer"}\n')
    r = CliRunner().invoke(app, ["predict", "intent", str(f)])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.strip().splitlines()]
    assert [x["label"] for x in lines] == ["churn", "none"] and all(0 <= x["confidence"] <= 1 for x in lines)
    r = CliRunner().invoke(app, ["predict", "nonsense", str(f)])
    assert r.exit_code == 2
