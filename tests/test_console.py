"""Lead console without a browser: board model, board feed, sign-in, lead actions, review, metrics."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import httpx
import pytest
import websockets

from livecoach.bus import SIGNALS
from livecoach.events import (CallEnded, CallStarted, EvidenceRef, PartialUtterance, Signal,
                              Utterance)
from livecoach.lead_console._board import Board
from livecoach.lead_console.live import WATCH_QUEUE_MAX, BoardFeed

CONSOLE = Path(__file__).resolve().parents[1] / "lead_console"


def sig(call_id: str, kind: str, conf: float = 0.9, seq: int = 2, **details) -> Signal:
    return Signal(call_id=call_id, kind=kind, confidence=conf, details=details,
                  evidence=[EvidenceRef(seq=seq, excerpt=f"{kind} words", t=65.0)])


def started(call_id: str, agent: str = "alice") -> CallStarted:
    return CallStarted(call_id=call_id, seq=1, agent_id=agent, queue="billing", customer={"name": "Pat Doe"})


# ---------------------------------------------------------------- board model
def test_board_ranks_riskier_calls_first_and_alerts_above_all():
    b = Board()
    for c in ("a", "b", "c"):
        b.apply(started(c))
    b.apply(sig("a", "complaint", risk=0.56))
    b.apply(sig("b", "churn_intent", risk=0.93))
    assert b.order() == ["b", "a", "c"]
    b.apply(sig("c", "escalation_request", 0.6, risk=0.54, alert=True))
    assert b.order()[0] == "c"


def test_lead_actions_lower_a_signal_and_dismissed_ones_stop_counting():
    b = Board()
    b.apply(started("a"))
    s = sig("a", "churn_intent", risk=0.9)
    b.apply(s)
    assert b.calls["a"].risk == 0.9
    b.apply_action(s.id, "a", "acknowledged", "dana", None)
    assert b.calls["a"].risk == 0.45
    b.apply_action(s.id, "a", "dismissed", "dana", "False alarm")
    assert b.calls["a"].risk == 0.0
    assert b.calls["a"].view()["dismissed"] == 1


def test_joining_marks_the_call_and_leaves_the_signal_state_alone():
    b = Board()
    b.apply(started("a"))
    s = sig("a", "churn_intent", risk=0.9)
    b.apply(s)
    b.apply_action(s.id, "a", "handoff", "dana", "Save desk")
    b.apply_action(s.id, "a", "joining", "dana", None)
    card = b.calls["a"].view()
    assert card["joining"] == "dana"
    assert card["signals"][0]["state"] == "handoff"


def test_board_masks_customer_names_in_evidence_and_forgets_ended_calls():
    b = Board()
    b.apply(started("a"))
    b.apply(Signal(call_id="a", kind="complaint", confidence=0.8,
                   evidence=[EvidenceRef(seq=2, excerpt="this is pat doe and i am not happy", t=3)]))
    assert b.calls["a"].view()["signals"][0]["excerpt"] == "this is ••• and i am not happy"
    b.apply(CallEnded(call_id="a", seq=3))
    assert b.order() == []
    changed, _ = b.apply(Utterance(call_id="a", seq=4, speaker="agent", text="late"))
    assert changed is None and "a" not in b.calls


def test_customer_mood_follows_what_the_customer_says():
    b = Board()
    b.apply(started("a"))
    b.apply(Utterance(call_id="a", seq=2, speaker="customer", text="this is terrible, I am furious and fed up"))
    assert b.calls["a"].view()["sentiment"][-1] < -0.3
    b.apply(Utterance(call_id="a", seq=3, speaker="agent", text="thank you so much, wonderful"))
    assert len(b.calls["a"].view()["sentiment"]) == 1   # only the customer's turns


# ---------------------------------------------------------------- board feed
async def test_a_console_that_never_reads_does_not_slow_the_board_stage():
    feed = BoardFeed(push_ms=250)
    await feed.start()
    stuck = feed.subscribe_board()          # nobody ever drains it
    watcher = feed.watch("c0")
    t0 = time.perf_counter()
    for i in range(200):
        await feed.handle(started(f"c{i}"), {})
    for n in range(2, 40):
        for i in range(200):
            await feed.handle(Utterance(call_id=f"c{i}", seq=n, speaker="customer", text="still waiting here"), {})
    per_event = (time.perf_counter() - t0) / (200 * 39)
    assert per_event < 0.002, f"{per_event * 1e6:.0f} µs per event"
    assert len(stuck.dirty) == 200          # coalesced: one entry per call, not per event
    assert len(watcher.items) <= WATCH_QUEUE_MAX


async def test_call_watchers_keep_only_the_latest_partial_and_resync_when_overwhelmed():
    feed = BoardFeed(push_ms=250)
    w = feed.watch("a")
    await feed.handle(started("a"), {})
    for text in ("i", "i want", "i want to"):
        await feed.handle(PartialUtterance(call_id="a", speaker="customer", text=text, t_start=1.0), {})
    assert [i["text"] for i in w.items if i["type"] == "partial"] == ["i want to"]
    for n in range(WATCH_QUEUE_MAX + 5):
        await feed.handle(Utterance(call_id="a", seq=n + 2, speaker="agent", text="x"), {})
    assert w.overflow


# ---------------------------------------------------------------- sign-in and pages
def test_console_needs_a_lead_token_and_keeps_it_in_an_httponly_cookie(server):
    r = httpx.get(server.url + "/console", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login")
    for role in ("agent", "ingest"):
        r = httpx.post(server.url + "/console/login", data={"token": server.tokens[role]})
        assert r.status_code == 403 and "cannot open the console" in r.text
    r = httpx.post(server.url + "/console/login", data={"token": "lc_nope"})
    assert r.status_code == 401
    r = httpx.post(server.url + "/console/login", data={"token": server.tokens["lead"]}, follow_redirects=False)
    assert r.status_code == 303
    cookie = r.headers["set-cookie"].lower()
    assert "livecoach_token=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    with httpx.Client(base_url=server.url, cookies={"livecoach_token": server.tokens["lead"]}) as c:
        for path in ("/console", "/console/review", "/console/metrics"):
            page = c.get(path)
            assert page.status_code == 200, path
            assert "default-src 'self'" in page.headers["content-security-policy"]
    agent = httpx.get(server.url + "/console", cookies={"livecoach_token": server.tokens["agent"]})
    assert agent.status_code == 403


def test_pages_and_scripts_name_no_other_host():
    """Everything the console loads comes from this server (no CDN, no web fonts)."""
    allowed = {"http://www.w3.org/2000/svg"}
    for f in list((CONSOLE / "templates").iterdir()) + list((CONSOLE / "static").iterdir()):
        urls = set(re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s'\"<>)]*", f.read_text()))
        assert urls <= allowed, f"{f.name} names {urls - allowed}"


# ---------------------------------------------------------------- lead actions
def publish(server, event) -> None:
    feed = server.app.state.stages["board"]
    asyncio.run_coroutine_threadsafe(server.app.state.bus.publish(SIGNALS, event.call_id, event), feed.loop).result(10)
    deadline = time.monotonic() + 10
    while server.get(f"/v1/calls/{event.call_id}").json()["signals"] == []:
        assert time.monotonic() < deadline
        time.sleep(0.05)


async def start_call(server, call_id: str) -> None:
    async with websockets.connect(f"{server.ws}/v1/calls/{call_id}/events",
                                  additional_headers={"Authorization": f"Bearer {server.tokens['ingest']}"}) as ws:
        await ws.recv()
        for ev in (started(call_id), Utterance(call_id=call_id, seq=2, speaker="customer", text="i will cancel")):
            await ws.send(ev.model_dump_json())
            assert json.loads(await ws.recv())["type"] == "ack"


def test_lead_actions_on_a_signal_are_stored_as_feedback(server):
    asyncio.run(start_call(server, "fb-1"))
    s = sig("fb-1", "churn_intent", risk=0.9,
            route={"action": "suggest_handoff", "desk": "save_desk", "label": "Hand off to the save desk"})
    publish(server, s)
    url = f"/v1/signals/{s.id}/feedback"
    assert server.post(url, role="agent", json={"action": "acknowledged"}).status_code == 403
    assert server.post(url, role=None, json={"action": "acknowledged"}).status_code == 401
    assert server.post("/v1/signals/nope/feedback", json={"action": "acknowledged"}).status_code == 404
    r = server.post(url, json={"action": "dismissed"})
    assert r.status_code == 422 and "reason" in r.text
    assert server.post(url, json={"action": "shrug"}).status_code == 422
    for body in ({"action": "joining"}, {"action": "acknowledged"}, {"action": "handoff"},
                 {"action": "dismissed", "reason": "False alarm"}):
        assert server.post(url, json=body).status_code == 201, body
    fb = server.get(url).json()["feedback"]
    assert [f["action"] for f in fb] == ["joining", "acknowledged", "handoff", "dismissed"]
    assert {f["actor"] for f in fb} == {"test-lead"} and "save desk" in fb[2]["reason"]
    assert fb[3]["reason"] == "False alarm"
    board = server.get("/v1/board").json()
    card = next(c for c in board["cards"] if c["call_id"] == "fb-1")
    assert card["joining"] == "test-lead" and card["dismissed"] == 1
    # a cookie-authenticated change from another site is refused
    r = httpx.post(server.url + url, json={"action": "acknowledged"}, cookies={"livecoach_token": server.tokens["lead"]},
                   headers={"Origin": "http://evil.example"})
    assert r.status_code == 403


def test_board_socket_sends_a_snapshot_then_new_signals_within_a_second(server):
    asyncio.run(start_call(server, "ws-1"))

    async def go():
        async with websockets.connect(f"{server.ws}/v1/board/live?token={server.tokens['agent']}") as ws:
            with pytest.raises(websockets.ConnectionClosed) as err:
                await ws.recv()
            assert err.value.rcvd.code == 4403
        async with websockets.connect(f"{server.ws}/v1/board/live?token={server.tokens['lead']}") as ws:
            snap = json.loads(await ws.recv())
            assert snap["type"] == "snapshot" and [c["call_id"] for c in snap["cards"]] == ["ws-1"]
            s = sig("ws-1", "complaint", risk=0.6)
            feed = server.app.state.stages["board"]
            t0 = time.monotonic()
            asyncio.run_coroutine_threadsafe(server.app.state.bus.publish(SIGNALS, s.call_id, s), feed.loop)
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if any(x["id"] == s.id for c in msg["cards"] for x in c["signals"]):
                    break
            assert time.monotonic() - t0 < 1.0

    asyncio.run(go())


def test_board_picks_up_calls_that_were_active_before_it_started(server):
    asyncio.run(start_call(server, "old-1"))
    s = sig("old-1", "complaint", risk=0.6)
    publish(server, s)
    assert server.post(f"/v1/signals/{s.id}/feedback", json={"action": "acknowledged"}).status_code == 201
    fresh = BoardFeed(push_ms=250)

    async def go():
        await fresh.hydrate(server.app.state.store)

    asyncio.run(go())
    card = fresh.board.calls["old-1"].view()
    assert card["agent_id"] == "alice" and card["utterances"] == 1
    assert card["signals"][0]["state"] == "acknowledged"


# ---------------------------------------------------------------- review queue and metrics
DEMO = Path(__file__).resolve().parents[1] / "livecoach" / "demo_calls.jsonl"


def wait_notes(server, call_ids, timeout: float = 30) -> None:
    """Read from the store: a lead's GET of a note counts as the lead reviewing it."""
    deadline = time.monotonic() + timeout
    for cid in call_ids:
        while server.store.get_note(cid) is None:
            assert time.monotonic() < deadline, f"postcall drafted no note for {cid}"
            time.sleep(0.1)


@pytest.fixture
def drafted(server_factory):
    """A server with post-call on and the 8 demo calls replayed: real drafted notes."""
    from livecoach.stream.replay import load_conversations, replay_conversations

    # rules-only notes: deterministic, and no detector load shared with other tests in this process
    srv = server_factory(postcall=True, postcall_detectors=False, agent_ids=("alice",))
    convs = load_conversations(DEMO)
    out = asyncio.run(replay_conversations(convs, url=srv.url, token=srv.tokens["ingest"], speed=500, concurrency=8))
    assert out.errors == 0
    wait_notes(srv, [c["id"] for c in convs])
    return srv


def page_queue(html: str) -> list[str]:
    return re.findall(r'<li class="qitem[^"]*" data-call-id="([^"]+)"', html)


def test_review_page_lists_postcalls_queue_in_its_order_and_has_no_decision_of_its_own(drafted):
    lead = httpx.Client(base_url=drafted.url, cookies={"livecoach_token": drafted.tokens["lead"]})
    queue = drafted.get("/v1/review/queue").json()
    assert queue["total"] == 8
    page = lead.get("/console/review")
    assert page.status_code == 200
    assert page_queue(page.text) == [i["call_id"] for i in queue["items"]]      # one ordering: postcall's
    top = queue["items"][0]
    assert top["flags"]["customer_risk"] and "customer risk" in page.text
    # the stand-in is gone: decisions go to postcall only
    assert drafted.post(f"/v1/console/notes/{top['call_id']}/decision", json={"decision": "approve"}).status_code == 404
    assert drafted.get("/v1/console/review").status_code == 404
    js = (CONSOLE / "static" / "review.js").read_text()
    assert '"/note"' in js and '+ "/review"' in js and "/v1/console/notes" not in js
    assert drafted.get(f"/v1/calls/{top['call_id']}/note").json()["status"] == "draft"
    lead.close()


def test_decisions_made_through_postcall_show_in_the_console_and_its_metrics(drafted):
    items = drafted.get("/v1/review/queue").json()["items"]
    a, b, c = (i["call_id"] for i in items[:3])
    assert drafted.post(f"/v1/calls/{a}/note/review", json={"action": "approve"}).json()["status"] == "approved"
    note = drafted.get(f"/v1/calls/{b}/note").json()
    coaching = {**note["coaching"], "next_action": "Ask which card before ordering a new one."}
    edited = drafted.post(f"/v1/calls/{b}/note/review", json={"action": "edit", "changes": {"coaching": coaching}})
    assert edited.status_code == 200
    assert {"path": "/coaching/next_action", "from": note["coaching"]["next_action"],
            "to": "Ask which card before ordering a new one."} in edited.json()["diff"]
    assert drafted.post(f"/v1/calls/{c}/note/review", json={"action": "reject", "reason": "wrong queue"}).status_code == 200

    lead = httpx.Client(base_url=drafted.url, cookies={"livecoach_token": drafted.tokens["lead"]})
    waiting = page_queue(lead.get("/console/review").text)
    assert len(waiting) == 5 and not {a, b, c} & set(waiting)
    decided = lead.get("/console/review?status=decided").text
    assert set(page_queue(decided)) == {a, b, c} and "wrong queue" in decided
    call = lead.get(f"/console/calls/{b}").text
    assert "Ask which card before ordering a new one." in call and "edited" in call

    qa = drafted.get("/v1/qa/metrics").json()
    page = lead.get("/console/metrics").text
    kpi = lambda name: re.search(rf'id="kpi-{name}">([^<]*)<', page).group(1)
    assert kpi("reviewed") == str(qa["events"]["reviewed"]) and qa["events"]["reviewed"] >= 1
    assert kpi("approved") == str(qa["notes"]["approved"]) == "1"
    assert kpi("override") == f"{qa['override_rate'] * 100:.0f}%" == "67%"
    assert "Repeat issue themes" in page and qa["themes"]
    console_only = drafted.get("/v1/console/metrics").json()
    assert "override_rate" not in console_only and console_only["calls"] == 8   # note figures are postcall's
    lead.close()
