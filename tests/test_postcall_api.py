"""The QA note over HTTP: drafted on call end, reviewed by a lead (approve / edit with diff /
reject with reason), re-queued by a late low CSAT, queue order, tickets, coaching loop, metrics."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from livecoach.stream.replay import replay_conversations

from conftest import HARPER_DEV

HV = HARPER_DEV


def convs(n: int, agent_id: str | None = None):
    out = [json.loads(line) for line in open(HV) if line.strip()][:n]
    if agent_id:
        out = [{**c, "agent_id": agent_id} for c in out]
    return out


def replay(srv, conversations):
    s = asyncio.run(replay_conversations(conversations, url=srv.url, token=srv.tokens["ingest"], speed=500,
                                         concurrency=8))
    assert s.errors == 0


def wait_note(srv, call_id, role="lead", timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = srv.get(f"/v1/calls/{call_id}/note", role=role)
        if r.status_code == 200:
            return r.json()
        time.sleep(0.1)
    raise AssertionError(f"no note for {call_id}")


@pytest.fixture
def srv(server_factory):
    # rules-only scoring: these tests pin the API and the queue order, not the detectors' judgement
    return server_factory(postcall=True, postcall_detectors=False, agent_ids=("alice", "bob"))


def test_a_replayed_call_gets_a_draft_note_with_the_documented_fields(srv):
    c = convs(1)[0]
    replay(srv, [c])
    note = wait_note(srv, c["id"])
    assert note["status"] == "draft"
    assert set(note) >= {"rubric", "criteria", "coaching", "process_issues", "exception", "flags"}
    assert note["rubric"]["id"] == "support-default"
    assert any(k["evidence"] for k in note["criteria"])
    assert c["caller_name"].split()[0].lower() not in json.dumps(note).lower()
    assert srv.get(f"/v1/calls/{c['id']}/note", role=None).status_code == 401
    schema = srv.get("/openapi.json", role=None).json()
    get_note = schema["paths"]["/v1/calls/{call_id}/note"]["get"]
    assert "Note" in json.dumps(get_note["responses"]["200"])
    assert {"criteria", "coaching", "process_issues", "exception", "flags", "rubric", "status"} <= \
        set(schema["components"]["schemas"]["Note"]["properties"])


def test_review_approve_edit_reject_are_recorded_and_measured(srv):
    cs = convs(3)
    replay(srv, cs)
    a, b, c = (x["id"] for x in cs)
    for cid in (a, b, c):
        wait_note(srv, cid)
    assert srv.post(f"/v1/calls/{a}/note/review", json={"action": "approve"}).json()["status"] == "approved"
    assert srv.post(f"/v1/calls/{a}/note/review", json={"action": "approve"}).status_code == 409
    edit = srv.post(f"/v1/calls/{b}/note/review",
                    json={"action": "edit", "changes": {"coaching": {"focus": None, "next_action": "greet by name"}}})
    assert edit.status_code == 200 and edit.json()["diff"]
    assert srv.post(f"/v1/calls/{c}/note/review", json={"action": "reject"}).status_code == 422
    assert srv.post(f"/v1/calls/{c}/note/review", json={"action": "reject", "reason": "wrong call"}).status_code == 200
    assert srv.post(f"/v1/calls/{c}/note/review", json={"action": "approve"}, role="agent").status_code == 403
    edited = wait_note(srv, b)
    assert edited["status"] == "edited" and edited["coaching"]["next_action"] == "greet by name"
    assert any(e["action"] == "edited" and e["details"]["diff"] for e in edited["review"])
    m = srv.get("/v1/qa/metrics").json()
    assert m["notes"]["approved"] == 1 and m["notes"]["edited"] == 1 and m["notes"]["rejected"] == 1
    assert m["override_rate"] == pytest.approx(2 / 3, abs=0.01)
    assert m["events"]["reviewed"] >= 3 and m["pilot"]["rate"] == 1.0
    tc = m["theme_clusters"]
    assert tc["method"] in ("minilm", "lexical") and tc["items"] == sum(c["count"] for c in tc["clusters"])
    assert all({"label", "criterion", "count", "calls"} <= set(c) for c in tc["clusters"])
    text = json.dumps(tc).lower()
    assert not any(x["caller_name"].split()[-1].lower() in text for x in cs)  # labels are redacted
    assert srv.get("/v1/qa/metrics", role="agent").status_code == 403


def test_a_late_low_csat_requeues_an_approved_note_to_the_top(srv):
    cs = convs(3)
    replay(srv, cs)
    for x in cs:
        wait_note(srv, x["id"])
    target = cs[1]["id"]
    srv.post(f"/v1/calls/{target}/note/review", json={"action": "approve"})
    assert target not in [i["call_id"] for i in srv.get("/v1/review/queue").json()["items"]]
    r = srv.post(f"/v1/calls/{target}/csat", json={"csat": 1}, role="ingest")
    assert r.status_code == 200 and r.json()["requeued"] is True
    q = srv.get("/v1/review/queue").json()
    assert q["items"][0]["call_id"] == target and q["items"][0]["requeued"]
    assert "late low CSAT" in q["items"][0]["reasons"]
    note = wait_note(srv, target)
    assert note["status"] == "draft" and note["flags"]["late_low_csat"]
    ok = srv.post(f"/v1/calls/{cs[2]['id']}/csat", json={"csat": 9}, role="ingest").json()
    assert ok["requeued"] is False
    assert srv.post(f"/v1/calls/nope/csat", json={"csat": 1}, role="ingest").status_code == 404
    assert srv.post(f"/v1/calls/{target}/csat", json={"csat": 11}, role="ingest").status_code == 422


def test_agents_see_only_their_own_notes_once_approved(srv):
    c = {**convs(1)[0], "id": "alice-call", "agent_id": "alice"}
    replay(srv, [c])
    wait_note(srv, "alice-call")
    assert srv.get("/v1/calls/alice-call/note", role="agent").status_code == 404  # still a draft
    srv.post("/v1/calls/alice-call/note/review", json={"action": "approve"})
    assert srv.get("/v1/calls/alice-call/note", role="agent").status_code == 200
    assert srv.get("/v1/calls/alice-call/note", role="agent:bob").status_code == 404
    assert srv.get("/v1/review/queue", role="agent").status_code == 403
    sa = srv.post("/v1/calls/alice-call/note/self-assessment", role="agent",
                  json={"went_well": "calm", "struggled": "the address", "context": "line was noisy"})
    assert sa.status_code == 200
    assert srv.post("/v1/calls/alice-call/note/self-assessment", role="agent:bob",
                    json={"went_well": "x"}).status_code == 404


def test_coaching_session_tracks_the_behaviour_on_the_agents_next_calls(srv):
    first = {**convs(1)[0], "id": "bob-1", "agent_id": "bob"}
    replay(srv, [first])
    wait_note(srv, "bob-1")
    s = srv.post("/v1/coaching/sessions", json={"call_id": "bob-1", "criterion": "verify_resolution",
                                                "next_action": "ask if the issue is solved",
                                                "follow_up_date": "2026-12-01"})
    assert s.status_code == 200 and s.json()["improved"] is None
    later = [{**c, "id": f"bob-{i + 2}", "agent_id": "bob"} for i, c in enumerate(convs(3)[1:])]
    replay(srv, later)
    for c in later:
        wait_note(srv, c["id"])
    sessions = srv.get("/v1/coaching/sessions", role="agent:bob").json()["sessions"]
    assert len(sessions) == 1 and len(sessions[0]["observed"]) == 2
    assert sessions[0]["improved"] is True
    assert srv.get("/v1/coaching/sessions", role="agent").json()["sessions"] == []  # alice sees none of bob's
    note = wait_note(srv, "bob-2")
    assert note["previous_focus"]["criterion"] == "verify_resolution"
    assert note["previous_focus"]["source"] == "coaching_session"


def test_a_closed_ticket_is_imported_and_drafted_once(srv):
    ticket = {"ticket_id": "T-1", "agent_id": "alice", "queue": "billing", "product_area": "cards",
              "customer": {"name": "Dana Reyes", "email": "dana@example.com", "segment": "smb"},
              "thread": [{"speaker": "customer", "text": "hi this is dana reyes my card was charged twice"},
                         {"speaker": "agent", "text": "i'm sorry about that which card was it"},
                         {"speaker": "customer", "text": "my debit card dana@example.com"},
                         {"speaker": "agent", "text": "i have processed a refund is there anything else"},
                         {"speaker": "customer", "text": "no thanks"}],
              "csat": 3, "escalations": 1, "kb_articles": ["KB-112"]}
    r = srv.post("/v1/tickets", json=ticket, role="ingest")
    assert r.status_code == 200 and r.json()["status"] == "imported"
    note = wait_note(srv, "ticket-T-1")
    blob = json.dumps(note).lower()
    assert "dana" not in blob and "reyes" not in blob and "example.com" not in blob
    assert note["flags"]["customer_risk"]
    assert srv.post("/v1/tickets", json=ticket, role="ingest").json()["status"] == "duplicate"
    bad = srv.post("/v1/tickets", json={**ticket, "ticket_id": "T-2", "thread": []}, role="ingest")
    assert bad.status_code == 422


def test_queue_puts_customer_risk_and_low_confidence_first(srv):
    cs = convs(4)
    cs[2] = {**cs[2], "partner_rating": 0}  # a low CSAT at call end: customer risk
    replay(srv, cs)
    for c in cs:
        wait_note(srv, c["id"])
    items = srv.get("/v1/review/queue").json()["items"]
    assert items[0]["call_id"] == cs[2]["id"] and "customer risk" in items[0]["reasons"]
    assert [i["priority"] for i in items] == sorted((i["priority"] for i in items), reverse=True)
