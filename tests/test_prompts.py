"""The agent prompt channel, cue responses, the lead's hand-off, phase changes and measurement,
against a real server (uvicorn on a free port). Detections are published to DETECTIONS by hand."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from livecoach.bus import DETECTIONS
from livecoach.events import EvidenceRef, Signal


def _open_call(server, call_id: str, agent: str) -> None:
    with connect(f"{server.ws}/v1/calls/{call_id}/events",
                 additional_headers={"Authorization": f"Bearer {server.tokens['ingest']}"}) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        ws.send(json.dumps({"type": "call_started", "seq": 1, "agent_id": agent}))
        assert json.loads(ws.recv(timeout=10))["type"] == "ack"
        ws.send(json.dumps({"type": "utterance", "seq": 2, "speaker": "customer",
                            "text": "this is the third time i call about this", "t_start": 12.0}))
        assert json.loads(ws.recv(timeout=10))["type"] == "ack"


def _detect(server, call_id: str, kind: str, conf: float = 0.97, seq: int = 2, t: float = 12.0) -> None:
    pol = server.app.state.stages["policy"]
    sig = Signal(call_id=call_id, kind=kind, confidence=conf, detector="test",
                 evidence=[EvidenceRef(seq=seq, excerpt="this is the third time i call about this", t=t)])
    bus = server.app.state.bus
    asyncio.run_coroutine_threadsafe(bus.publish(DETECTIONS, call_id, sig), pol.loop).result(10)


def _signals(server, call_id: str, audience: str, n: int, timeout: float = 10.0) -> list[dict]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        sigs = [s for s in server.get(f"/v1/calls/{call_id}").json().get("signals", []) if s["audience"] == audience] \
            if server.get(f"/v1/calls/{call_id}").status_code == 200 else []
        if len(sigs) >= n:
            return sigs
        time.sleep(0.05)
    raise AssertionError(f"{call_id}: fewer than {n} {audience} signals")


def _prompts(server, agent_id: str, role: str = "agent"):
    return connect(f"{server.ws}/v1/agents/{agent_id}/prompts",
                   additional_headers={"Authorization": f"Bearer {server.tokens[role]}"})


@pytest.fixture
def live(server_factory):
    return server_factory(phase=3, tier1_backend="off")


def test_agent_socket_delivers_only_the_agents_own_cues(live):
    _open_call(live, "call-a", "alice")
    _open_call(live, "call-b", "bob")
    with _prompts(live, "alice") as ws:
        assert json.loads(ws.recv(timeout=10)) == {"type": "ready", "agent_id": "alice"}
        _detect(live, "call-b", "frustration_spike")  # bob's call first: must never reach alice
        _detect(live, "call-a", "frustration_spike")
        cue = json.loads(ws.recv(timeout=10))
        assert cue["type"] == "cue" and cue["call_id"] == "call-a" and cue["kind"] == "frustration_spike"
        assert cue["message"].startswith("Customer frustration rising") and cue["minute"] == "0:12"
        ws.send(json.dumps({"type": "response", "signal_id": cue["signal_id"], "action": "accepted"}))
        ack = json.loads(ws.recv(timeout=10))
        assert ack == {"type": "ack", "signal_id": cue["signal_id"], "call_id": "call-a", "action": "accepted",
                       "outcome": "stored"}
        bob_cue = _signals(live, "call-b", "agent", 1)[0]
        ws.send(json.dumps({"type": "response", "signal_id": bob_cue["id"], "action": "dismissed"}))
        err = json.loads(ws.recv(timeout=10))
        assert err["type"] == "error" and err["code"] == "http_404"  # not hers: not even confirmed to exist
        ws.send("not json")
        assert json.loads(ws.recv(timeout=10))["code"] == "bad_frame"
    # another agent's path, or a lead's token, is refused
    for role, agent in (("agent:bob", "alice"), ("lead", "alice")):
        with _prompts(live, agent, role) as ws:
            with pytest.raises(ConnectionClosed) as exc:
                ws.recv(timeout=10)
            assert exc.value.rcvd.code == 4403


def test_a_reconnecting_agent_gets_its_unanswered_cues_again(live):
    _open_call(live, "call-r", "alice")
    _detect(live, "call-r", "frustration_spike")
    sid = _signals(live, "call-r", "agent", 1)[0]["id"]
    with _prompts(live, "alice") as ws:
        json.loads(ws.recv(timeout=10))
        assert json.loads(ws.recv(timeout=10))["signal_id"] == sid


def test_cue_responses_handoff_and_metrics(live):
    _open_call(live, "call-m", "alice")
    _open_call(live, "call-quiet", "bob")
    _detect(live, "call-m", "churn_intent", 0.97)
    cue = _signals(live, "call-m", "agent", 1)[0]
    lead = _signals(live, "call-m", "lead", 1)[0]
    assert lead["details"]["route"]["desk"] == "save_desk"
    r = live.post(f"/v1/signals/{cue['id']}/response", role="agent", json={"action": "dismissed", "reason": "already on it"})
    assert r.status_code == 200 and r.json()["outcome"] == "stored"
    assert live.post(f"/v1/signals/{cue['id']}/response", role="agent", json={"action": "dismissed"}).json()["outcome"] == "duplicate"
    assert live.post(f"/v1/signals/{cue['id']}/response", role="agent", json={"action": "loved"}).status_code == 422
    assert live.post(f"/v1/signals/{cue['id']}/response", role="agent:bob", json={"action": "accepted"}).status_code == 404
    assert live.post(f"/v1/signals/{lead['id']}/response", role="lead", json={"action": "acknowledged"}).status_code == 200
    # one click for the lead: the desk comes from the route
    h = live.post(f"/v1/signals/{lead['id']}/handoff", role="lead")
    assert h.status_code == 200 and h.json()["desk"] == "save_desk" and h.json()["status"] == "requested"
    assert live.post(f"/v1/signals/{lead['id']}/handoff", role="agent").status_code == 403
    assert live.post(f"/v1/signals/{lead['id']}/handoff", role="lead", json={"desk": "moon"}).status_code == 422
    m = live.get("/v1/signals/metrics").json()
    per_call = m["agent_cues_per_call"]
    assert per_call["calls"] == 2 and per_call["share_with_none"] == 0.5 and per_call["max"] == 1
    churn = m["by_kind"]["churn_intent"]
    assert churn["agent_cues"] == 1 and churn["responses"]["agent"]["dismissed"] == 1
    assert churn["agent_cues_without_response"] == 0
    assert churn["responses"]["agent"]["dismiss_rate"] == 1.0
    assert churn["responses"]["lead"]["handoff"] == 1 and churn["responses"]["lead"]["acknowledged"] == 1
    assert m["tier1"]["backend"] == "off"
    assert live.get("/v1/signals/metrics", role="agent").status_code == 403
    prom = live.get("/metrics")
    assert prom.status_code == 200
    assert 'livecoach_agent_cues_per_call_bucket{le="0"} 1.0' in prom.text
    assert 'livecoach_signal_responses_total{action="dismissed",kind="churn_intent",role="agent"} 1.0' in prom.text
    assert live.get("/metrics", role=None).status_code == 401
    feed = live.get("/v1/signals/feed").json()["signals"]
    assert feed and feed[0]["kind"] == "churn_intent"


def test_admin_changes_the_phase_without_restart(live):
    _open_call(live, "call-p1", "alice")
    assert live.post("/v1/signals/policy/reload", role="lead").status_code == 403
    r = httpx_put(live, "/v1/signals/phase", {"phase": 1}, role="lead")
    assert r.status_code == 403
    r = httpx_put(live, "/v1/signals/phase", {"phase": 1}, role="admin")
    assert r.status_code == 200 and r.json()["phase"] == 1
    assert all(v["agent"] is None for v in r.json()["audiences"].values())
    _detect(live, "call-p1", "frustration_spike")
    _signals(live, "call-p1", "lead", 1)
    time.sleep(0.3)
    assert not [s for s in live.get("/v1/calls/call-p1").json()["signals"] if s["audience"] == "agent"]
    assert httpx_put(live, "/v1/signals/phase", {"phase": 3}, role="admin").json()["phase"] == 3
    _open_call(live, "call-p3", "alice")
    _detect(live, "call-p3", "frustration_spike")
    assert len(_signals(live, "call-p3", "agent", 1)) == 1
    view = live.get("/v1/signals/policy").json()
    assert view["phase"] == 3 and view["phase_source"].startswith("admin") and view["error"] is None
    assert httpx_put(live, "/v1/signals/phase", {"phase": 7}, role="admin").status_code == 422


def httpx_put(server, path, body, role):
    import httpx

    return httpx.put(server.url + path, json=body, headers={"Authorization": f"Bearer {server.tokens[role]}"},
                     timeout=30)


@pytest.mark.postgres
async def test_measurement_queries_run_on_sqlite_and_postgresql(db_url):
    from datetime import datetime, timezone

    from sqlalchemy import insert

    from livecoach import tables as T
    from livecoach.events import CallStarted
    from livecoach.signals._metrics import signal_metrics
    from livecoach.store import Store

    store = Store(db_url)
    try:
        for cid in ("c1", "c2", "c3"):
            await store.append(CallStarted(call_id=cid, seq=1, agent_id="alice"))
        cue = Signal(call_id="c1", kind="churn_intent", confidence=0.9, audience="agent",
                     evidence=[EvidenceRef(seq=1, t=3.0)], details={"agent_id": "alice"})
        await store.save_signal(cue)
        await store.save_signal(Signal(call_id="c1", kind="churn_intent", confidence=0.9, details={"risk": 0.9}))
        await store.save_signal(Signal(call_id="c2", kind="complaint", confidence=0.7, audience="agent",
                                       details={"agent_id": "alice"}))
        await store.run_write(lambda conn: conn.execute(insert(T.feedback).values(
            signal_id=cue.id, call_id="c1", actor="alice", role="agent", action="accepted",
            created_at=datetime.now(timezone.utc))))
        m = await asyncio.to_thread(signal_metrics, store)
        assert m["agent_cues_per_call"] == {"calls": 3, "distribution": {"0": 1, "1": 2}, "median": 1, "mean": 0.667,
                                            "max": 1, "share_with_none": 0.3333}
        assert m["by_kind"]["churn_intent"]["responses"]["agent"] == {"accepted": 1, "ack_rate": 1.0, "dismiss_rate": 0.0}
        assert m["by_kind"]["complaint"]["agent_cues_without_response"] == 1
    finally:
        store.close()
