"""The ingest socket: every accepted event is acked after it is stored; every bad input is answered
with an error that names the problem, stores nothing, and leaves the connection open."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def open_call(server, call_id: str, role: str = "ingest"):
    ws = connect(f"{server.ws}/v1/calls/{call_id}/events",
                 additional_headers={"Authorization": f"Bearer {server.tokens[role]}"}, max_size=2 ** 22)
    ready = json.loads(ws.recv(timeout=10))
    assert ready["type"] == "ready"
    return ws, ready


def send(ws, frame) -> dict:
    ws.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))
    return json.loads(ws.recv(timeout=10))


def start(call_id: str, **kw) -> dict:
    return {"type": "call_started", "seq": 1, "agent_id": "alice", "queue": "billing", **kw}


def utt(seq: int, text: str = "hello, how can I help?", speaker: str = "agent", **kw) -> dict:
    return {"type": "utterance", "seq": seq, "speaker": speaker, "text": text, **kw}


def stored_rows(server, call_id: str) -> tuple[int, int]:
    return server.store.count("events", call_id), server.store.count("utterances", call_id)


@pytest.fixture
def live_call(server):
    ws, _ = open_call(server, "call-1")
    assert send(ws, start("call-1")) == {"type": "ack", "seq": 1}
    assert send(ws, utt(2)) == {"type": "ack", "seq": 2}
    yield ws
    ws.close()


def assert_still_open_and_unchanged(server, ws, before, next_seq=3):
    assert stored_rows(server, "call-1") == before
    # the connection survived: the next valid event is stored and acked
    assert send(ws, utt(next_seq, "anything else?")) == {"type": "ack", "seq": next_seq}


@pytest.mark.parametrize("frame, code, words", [
    ("{not json", "invalid_json", "not valid JSON"),
    ("[1, 2]", "invalid_event", "JSON object"),
    ({"type": "shout", "seq": 3}, "unknown_type", "shout"),
    ({"type": "utterance", "seq": 3, "text": "hi"}, "invalid_event", "speaker"),
    ({"type": "utterance", "seq": 3, "speaker": "robot", "text": "hi"}, "invalid_event", "speaker"),
    ({"type": "utterance", "seq": "three", "speaker": "agent", "text": "hi"}, "invalid_event", "seq"),
    ({"type": "utterance", "seq": 3, "speaker": "agent", "text": "   "}, "invalid_event", "blank"),
    ({"type": "utterance", "seq": 3, "speaker": "agent", "text": "hi", "mood": "x"}, "invalid_event", "mood"),
    ({"type": "utterance", "seq": 3, "speaker": "agent", "text": "hi", "call_id": "other"},
     "call_id_mismatch", "other"),
    ({"type": "utterance", "seq": 3, "speaker": "agent", "text": "hi", "final": False},
     "invalid_event", "partial"),
    ({"type": "utterance", "seq": 7, "speaker": "agent", "text": "hi"}, "seq_gap", "expected seq 3, got 7"),
    ({"type": "call_started", "seq": 3, "agent_id": "alice"}, "call_already_started", "already started"),
    (b"\x00\x01binary", "binary_not_accepted", "JSON text"),
])
def test_bad_input_is_answered_and_nothing_is_stored(server, live_call, frame, code, words):
    before = stored_rows(server, "call-1")
    err = send(live_call, frame)
    assert err["type"] == "error" and err["code"] == code, err
    assert words in err["message"] or any(words in e["field"] for e in err.get("errors", [])), err
    assert_still_open_and_unchanged(server, live_call, before)


def test_text_over_the_limit_is_refused(server, live_call):
    limit = server.settings.max_text_chars
    before = stored_rows(server, "call-1")
    err = send(live_call, utt(3, "x" * (limit + 1)))
    assert err["code"] == "text_too_long" and str(limit) in err["message"] and err["seq"] == 3
    assert_still_open_and_unchanged(server, live_call, before)


def test_frame_over_the_limit_is_refused(server, live_call):
    before = stored_rows(server, "call-1")
    err = send(live_call, json.dumps(utt(3, "y" * 10)) + " " * server.settings.max_frame_bytes)
    assert err["code"] == "frame_too_large"
    assert_still_open_and_unchanged(server, live_call, before)


def test_identical_duplicate_is_reacked_not_stored_twice(server, live_call):
    before = stored_rows(server, "call-1")
    assert send(live_call, utt(2)) == {"type": "ack", "seq": 2, "duplicate": True}
    assert stored_rows(server, "call-1") == before


def test_duplicate_seq_with_other_content_is_refused(server, live_call):
    before = stored_rows(server, "call-1")
    err = send(live_call, utt(2, "something different"))
    assert err["code"] == "seq_conflict" and err["seq"] == 2
    assert_still_open_and_unchanged(server, live_call, before)
    texts = [u["text"] for u in server.get("/v1/calls/call-1").json()["utterances"]]
    assert texts == ["hello, how can I help?", "anything else?"]


def test_event_before_call_started_is_refused(server):
    ws, ready = open_call(server, "no-start")
    assert ready["next_seq"] == 1 and ready["status"] == "new"
    err = send(ws, utt(1))
    assert err["code"] == "call_not_started"
    assert server.store.get_call("no-start") is None
    ws.close()


def test_event_for_an_ended_call_is_refused(server, live_call):
    assert send(live_call, {"type": "call_ended", "seq": 3, "csat": 9}) == {"type": "ack", "seq": 3}
    before = stored_rows(server, "call-1")
    err = send(live_call, utt(4, "one more thing"))
    assert err["code"] == "call_ended"
    assert stored_rows(server, "call-1") == before
    # the call_ended itself is still re-acked as a duplicate
    assert send(live_call, {"type": "call_ended", "seq": 3, "csat": 9})["duplicate"] is True
    call = server.get("/v1/calls/call-1").json()
    assert call["status"] == "ended" and call["csat"] == 9


def test_pipelined_events_are_acked_in_order(server):
    ws, _ = open_call(server, "burst")
    ws.send(json.dumps(start("burst")))
    for seq in range(2, 202):
        ws.send(json.dumps(utt(seq, f"message {seq}", speaker="customer" if seq % 2 else "agent")))
    acks = [json.loads(ws.recv(timeout=10)) for _ in range(201)]
    assert [a["seq"] for a in acks] == list(range(1, 202))
    assert all(a["type"] == "ack" for a in acks)
    assert stored_rows(server, "burst") == (201, 200)
    ws.close()


def test_reconnect_resumes_from_next_seq(server):
    ws, _ = open_call(server, "resume")
    for frame in (start("resume"), utt(2), utt(3, "second")):
        assert send(ws, frame)["type"] == "ack"
    ws.close()
    ws, ready = open_call(server, "resume")
    assert ready == {"type": "ready", "call_id": "resume", "next_seq": 4, "status": "active"}
    # a client unsure what got through resends from its last ack: duplicates are re-acked only
    assert send(ws, utt(3, "second"))["duplicate"] is True
    assert send(ws, utt(4, "third")) == {"type": "ack", "seq": 4}
    assert stored_rows(server, "resume") == (4, 3)
    ws.close()


def test_invalid_call_id_in_the_path_is_refused(server):
    ws = connect(f"{server.ws}/v1/calls/bad%20id!/events",
                 additional_headers={"Authorization": f"Bearer {server.tokens['ingest']}"})
    with pytest.raises(ConnectionClosed) as exc:
        ws.recv(timeout=10)
    assert exc.value.rcvd.code == 4400


def test_get_call_returns_utterances_actions_and_signals(server):
    ws, _ = open_call(server, "full")
    frames = [start("full", customer={"name": "Jane Roe"}, tags=["payments"]),
              utt(2, "hi, how can I help?"),
              utt(3, "I need to reset my password", speaker="customer", t_start=4.2, t_end=6.0),
              {"type": "agent_action", "seq": 4, "name": "verify-identity", "args": {"method": "dob"}, "t": 10.5},
              {"type": "call_ended", "seq": 5}]
    for f in frames:
        assert send(ws, f)["type"] == "ack"
    ws.close()
    call = server.get("/v1/calls/full").json()
    assert [u["seq"] for u in call["utterances"]] == [2, 3]
    assert call["utterances"][1] | {} == call["utterances"][1] and call["utterances"][1]["t_start"] == 4.2
    assert call["actions"] == [{"seq": 4, "name": "verify-identity", "args": {"method": "dob"}, "t": 10.5}]
    assert call["signals"] == [] and call["tags"] == ["payments"] and call["customer"] == {"name": "Jane Roe"}
    listed = server.get("/v1/calls?status=ended").json()["calls"]
    assert [c["call_id"] for c in listed] == ["full"] and listed[0]["utterance_count"] == 2
    assert server.get("/v1/calls?status=active").json()["calls"] == []
