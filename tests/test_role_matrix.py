"""Who may use what: every route and socket of the real app × every role (none, ingest, agent, lead,
admin), against a real server. A route without an entry in ``ACCESS`` fails the test, so the table
cannot go stale. Also: an agent's scope (own calls, notes and cues only), customer-field masking
by role, and revocation / expiry of tokens over HTTP and on sockets that are already open.

Run with ``-s`` to see the matrix the test prints."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from livecoach.bus import DETECTIONS
from livecoach.events import EvidenceRef, Signal
from livecoach.stream.replay import replay_conversations

from conftest import HARPER_DEV, make_settings, start_server

ROLES = (None, "ingest", "agent", "lead", "admin")
CUSTOMER = {"name": "Ann Lee", "phone": "+1 555 0100", "account": "AC-88231"}


# ------------------------------------------------------------------ the access table
@dataclass(frozen=True)
class Access:
    kind: str                       # api | page | login | socket | open
    roles: tuple[str | None, ...] = ()   # roles that get in (admin is listed where it gets in)


def api(*roles: str) -> Access:      # refused: 401 without a valid token, 403 for another role
    return Access("api", roles)


def socket(*roles: str) -> Access:   # refused: close 4401 without a valid token, 4403 for another role
    return Access("socket", roles)


PAGE = Access("page", ("lead", "admin"))     # cookie sign-in; refused: 303 to sign-in, 403 for another role
LOGIN = Access("login", ("lead", "admin"))   # the token in the form: 401 unknown/none, 403 other roles
OPEN = Access("open", ROLES)                 # no token needed

ACCESS: dict[str, Access] = {
    "GET /healthz": OPEN,
    "GET /openapi.json": OPEN,                 # the API's shape is not a secret; its data is
    "GET /docs": OPEN,
    "GET /docs/oauth2-redirect": OPEN,
    "GET /redoc": OPEN,
    # ingest
    "WS /v1/calls/{call_id}/events": socket("ingest", "admin"),
    "WS /v1/calls/{call_id}/audio": socket("ingest", "admin"),
    "POST /v1/tickets": api("ingest", "lead", "admin"),
    "POST /v1/calls/{call_id}/csat": api("ingest", "lead", "admin"),
    # calls (agents: their own, customer fields masked)
    "GET /v1/calls": api("agent", "lead", "admin"),
    "GET /v1/calls/{call_id}": api("agent", "lead", "admin"),
    "GET /v1/voice/stats": api("lead", "admin"),
    # agent cues
    "WS /v1/agents/{agent_id}/prompts": socket("agent", "admin"),
    "POST /v1/signals/{signal_id}/response": api("agent", "lead", "admin"),
    # lead signals, board and console
    "POST /v1/signals/{signal_id}/feedback": api("lead", "admin"),
    "GET /v1/signals/{signal_id}/feedback": api("lead", "admin"),
    "POST /v1/signals/{signal_id}/handoff": api("lead", "admin"),
    "GET /v1/signals/feed": api("lead", "admin"),
    "GET /v1/signals/metrics": api("lead", "admin"),
    "GET /v1/signals/policy": api("lead", "admin"),
    "GET /metrics": api("lead", "admin"),
    "GET /v1/board": api("lead", "admin"),
    "GET /v1/console/metrics": api("lead", "admin"),
    "WS /v1/board/live": socket("lead", "admin"),
    "WS /v1/console/calls/{call_id}/live": socket("lead", "admin"),
    "GET /console/login": OPEN,
    "POST /console/login": LOGIN,
    "POST /console/logout": OPEN,
    "GET /console/static/{name}": OPEN,
    "GET /console": PAGE,
    "GET /console/calls/{call_id}": PAGE,
    "GET /console/review": PAGE,
    "GET /console/metrics": PAGE,
    # QA notes (agents: their own, once a lead approved them)
    "GET /v1/calls/{call_id}/note": api("agent", "lead", "admin"),
    "POST /v1/calls/{call_id}/note/review": api("lead", "admin"),
    "POST /v1/calls/{call_id}/note/self-assessment": api("agent", "admin"),
    "GET /v1/review/queue": api("lead", "admin"),
    "POST /v1/coaching/sessions": api("lead", "admin"),
    "GET /v1/coaching/sessions": api("agent", "lead", "admin"),
    "GET /v1/qa/metrics": api("lead", "admin"),
    # admin only
    "PUT /v1/signals/phase": api("admin"),
    "POST /v1/signals/policy/reload": api("admin"),
    "GET /v1/audit": api("admin"),
}

# An allowed caller normally gets a 2xx/3xx. These cells are allowed but answer otherwise, and why:
ALLOWED_NOT_2XX = {
    ("POST /v1/calls/{call_id}/note/review", "admin"): 409,          # the lead decided the note just before
    ("POST /v1/calls/{call_id}/note/self-assessment", "admin"): 404,  # an admin has no calls of its own
}


def app_routes(app) -> list[str]:
    """Every HTTP route ("METHOD /path") and websocket ("WS /path") the app serves."""
    from fastapi.routing import APIWebSocketRoute
    from starlette.routing import WebSocketRoute

    try:
        from fastapi.routing import iter_route_contexts   # FastAPI ≥ 0.16x keeps included routers lazily

        routes = [(r.original_route, r.path, r.methods) for r in iter_route_contexts(app.routes)]
    except ImportError:  # pragma: no cover - older FastAPI flattens on include
        routes = [(r, r.path, getattr(r, "methods", None)) for r in app.routes]
    keys = []
    for route, path, methods in routes:
        if isinstance(route, (APIWebSocketRoute, WebSocketRoute)):
            keys.append(f"WS {path}")
        else:
            keys += [f"{m} {path}" for m in sorted(methods or ()) if m != "HEAD"]
    return keys


# ------------------------------------------------------------------ a server with calls, notes, cues
@dataclass
class World:
    srv: Any
    alice_live: str = "m-alice-live"
    bob_live: str = "m-bob-live"
    alice_done: str = "m-alice-done"
    bob_done: str = "m-bob-done"
    cues: dict[str, str] = field(default_factory=dict)   # call_id -> an agent cue's signal id
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))

    def headers(self, role: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.srv.tokens[role]}"} if role else {}


def send_events(srv, call_id: str, events: list[dict[str, Any]], token: str | None = None) -> None:
    with connect(f"{srv.ws}/v1/calls/{call_id}/events",
                 additional_headers={"Authorization": f"Bearer {token or srv.tokens['ingest']}"}) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        for ev in events:
            ws.send(json.dumps(ev))
            assert json.loads(ws.recv(timeout=10))["type"] == "ack"


def open_call(srv, call_id: str, agent: str) -> None:
    send_events(srv, call_id, [
        {"type": "call_started", "seq": 1, "agent_id": agent, "customer": CUSTOMER},
        {"type": "utterance", "seq": 2, "speaker": "customer", "text": "this is the third time i call about this",
         "t_start": 12.0}])


def detect(srv, call_id: str, kind: str = "frustration_spike") -> None:
    """A tier-0 detection, published where the detectors publish theirs (the policy decides the rest)."""
    pol = srv.app.state.stages["policy"]
    sig = Signal(call_id=call_id, kind=kind, confidence=0.97, detector="test",
                 evidence=[EvidenceRef(seq=2, excerpt="this is the third time i call about this", t=12.0)])
    asyncio.run_coroutine_threadsafe(srv.app.state.bus.publish(DETECTIONS, call_id, sig), pol.loop).result(10)


def wait_for(fn: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        out = fn()
        if out:
            return out
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def agent_cue(srv, call_id: str) -> str:
    def find():
        r = srv.get(f"/v1/calls/{call_id}", role="lead")
        return next((s["id"] for s in r.json()["signals"] if s["audience"] == "agent"), None)
    return wait_for(find, f"an agent cue on {call_id}")


def finished_call(srv, call_id: str, agent: str, line: int) -> None:
    conv = [json.loads(x) for x in open(HARPER_DEV) if x.strip()][line]
    conv = {**conv, "id": call_id, "agent_id": agent}
    s = asyncio.run(replay_conversations([conv], url=srv.url, token=srv.tokens["ingest"], speed=500))
    assert s.errors == 0
    wait_for(lambda: srv.get(f"/v1/calls/{call_id}/note", role="lead").status_code == 200, f"{call_id}'s note")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("matrix"), phase=3, tier1_backend="off", postcall=True,
                             postcall_detectors=False)
    srv, uv, th = start_server(settings, agent_ids=("alice", "bob"))
    w = World(srv)
    try:
        open_call(srv, w.alice_live, "alice")
        open_call(srv, w.bob_live, "bob")
        finished_call(srv, w.alice_done, "alice", 0)
        finished_call(srv, w.bob_done, "bob", 1)
        # alice may read her note once a lead approved it
        assert srv.post(f"/v1/calls/{w.alice_done}/note/review", json={"action": "approve"}).status_code == 200
        detect(srv, w.alice_live)
        detect(srv, w.bob_live)
        w.cues = {c: agent_cue(srv, c) for c in (w.alice_live, w.bob_live)}
        yield w
    finally:
        w.http.close()
        uv.should_exit = True
        th.join(timeout=30)


# ------------------------------------------------------------------ how each route is called
def probe(key: str, w: World, role: str | None) -> dict[str, Any]:
    """Path (real ids) and body for one route; the default fills path params with alice's ids."""
    method, template = key.split(" ", 1)
    ids = {"call_id": w.alice_live, "signal_id": w.cues[w.alice_live], "agent_id": "alice", "name": "common.js"}
    out: dict[str, Any] = {}
    tag = role or "none"
    if key == "GET /v1/calls/{call_id}/note" or key.endswith("/self-assessment"):
        ids["call_id"] = w.alice_done
    if key == "POST /v1/calls/{call_id}/note/review":
        ids["call_id"] = w.bob_done
        out["json"] = {"action": "approve"}
    elif key.endswith("/self-assessment"):
        out["json"] = {"went_well": "kept it calm", "struggled": "the refund rules"}
    elif key == "POST /v1/calls/{call_id}/csat":
        out["json"] = {"csat": 9, "source": "survey"}
    elif key == "POST /v1/tickets":
        out["json"] = {"ticket_id": f"T-{tag}", "agent_id": "tess", "customer": {"name": "Ben Ode"},
                       "thread": [{"speaker": "customer", "text": "my card was charged twice"},
                                  {"speaker": "agent", "text": "i have refunded the second charge"}]}
    elif key == "POST /v1/coaching/sessions":
        out["json"] = {"call_id": w.alice_done, "criterion": "empathy", "next_action": "name the feeling",
                       "follow_up_date": "2030-01-31"}
    elif key == "POST /v1/signals/{signal_id}/response":
        out["json"] = {"action": "accepted" if role == "agent" else "acknowledged"}
    elif key == "POST /v1/signals/{signal_id}/feedback":
        out["json"] = {"action": "joining"}
    elif key == "POST /v1/signals/{signal_id}/handoff":
        out["json"] = {"desk": "supervisor"}
    elif key == "PUT /v1/signals/phase":
        out["json"] = {"phase": 3}
    elif key == "POST /console/login":
        out["data"] = {"token": w.srv.tokens[role] if role else "", "next": "/console"}
    elif key == "WS /v1/calls/{call_id}/events":
        ids["call_id"] = f"m-probe-{tag}"
    elif key == "WS /v1/calls/{call_id}/audio":
        ids["call_id"] = f"m-probe-{tag}"
        out["query"] = "?channel=agent"
        out["send"] = {"type": "end"}   # the audio socket says nothing until spoken to
    out["path"] = template.format(**ids) + out.pop("query", "")
    return out


def console_cookie(w: World, role: str) -> dict[str, str]:
    """Lead and admin sign in for real; other roles cannot, so their token is planted in the cookie."""
    if role in ("lead", "admin"):
        r = w.http.post(w.srv.url + "/console/login", data={"token": w.srv.tokens[role]})
        assert r.status_code == 303
        return {"livecoach_token": r.cookies["livecoach_token"]}
    return {"livecoach_token": w.srv.tokens[role]}


def call_route(key: str, w: World, role: str | None) -> int:
    """The status code (HTTP) or close code (socket; 0 = served) the role gets."""
    spec = probe(key, w, role)
    method, _ = key.split(" ", 1)
    if method == "WS":
        return socket_outcome(w.srv.ws + spec["path"], w.headers(role), spec.get("send"))
    kw: dict[str, Any] = {k: spec[k] for k in ("json", "data") if k in spec}
    if ACCESS.get(key) == PAGE:
        if role:
            w.http.cookies.clear()
            kw["cookies"] = console_cookie(w, role)
    elif key != "POST /console/login":
        kw["headers"] = w.headers(role)
    w.http.cookies.clear()
    return w.http.request(method, w.srv.url + spec["path"], follow_redirects=False, **kw).status_code


def socket_outcome(url: str, headers: dict[str, str], send: dict[str, Any] | None) -> int:
    try:
        with connect(url, additional_headers=headers, open_timeout=10) as ws:
            if send is not None:
                ws.send(json.dumps(send))
            json.loads(ws.recv(timeout=10))   # any frame: the socket serves this caller
            return 0
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else -1


def expected(key: str, role: str | None) -> str:
    a = ACCESS[key]
    if role in a.roles:
        return "ok"
    if a.kind == "socket":
        return "4401" if role is None else "4403"
    if a.kind == "page":
        return "303" if role is None else "403"
    return "401" if role is None else "403"


def verdict(key: str, role: str | None, got: int) -> str:
    """"ok" when an allowed caller was served, else the code it got."""
    if key.startswith("WS "):
        return "ok" if got == 0 else str(got)
    if got == ALLOWED_NOT_2XX.get((key, role)):
        return "ok"
    if key == "POST /console/login":
        return "ok" if got == 303 else str(got)
    if ACCESS[key].kind == "page" and got == 303:
        return "303"
    return "ok" if 200 <= got < 400 else str(got)


# ------------------------------------------------------------------ the tests
def test_every_route_has_an_entry_in_the_access_table(world):
    served = app_routes(world.srv.app)
    assert len(served) == len(set(served))
    missing = sorted(set(served) - set(ACCESS))
    stale = sorted(set(ACCESS) - set(served))
    assert not missing, f"routes without an access entry (add them to ACCESS): {missing}"
    assert not stale, f"ACCESS names routes the app does not serve: {stale}"


def test_every_route_and_socket_gives_each_role_exactly_its_access(world):
    t0 = time.monotonic()
    keys = app_routes(world.srv.app)
    wrong, rows = [], []
    for key in keys:
        if key not in ACCESS:
            wrong.append(f"{key}: no entry in ACCESS")
            continue
        cells = []
        for role in ROLES:
            got = call_route(key, world, role)
            v, want = verdict(key, role, got), expected(key, role)
            cells.append(f"{got or 'open':>4}{'' if v == want else '!'}")
            if v != want:
                wrong.append(f"{key} as {role or 'none'}: expected {want}, got {got}")
        rows.append(f"{key:<48} " + " ".join(f"{c:>6}" for c in cells))
    header = f"{'route':<48} " + " ".join(f"{r or 'none':>6}" for r in ROLES)
    print("\n" + header + "\n" + "\n".join(rows))
    print(f"role matrix: {len(keys)} routes × {len(ROLES)} roles = {len(keys) * len(ROLES)} checks, "
          f"{len(wrong)} wrong, {time.monotonic() - t0:.1f} s")
    assert not wrong, "\n".join(wrong)


def test_an_agent_sees_only_her_own_calls_notes_and_cues(world):
    srv, w = world.srv, world
    mine = srv.get("/v1/calls", role="agent").json()["calls"]
    assert {w.alice_live, w.alice_done} <= {c["call_id"] for c in mine}
    assert {c["agent_id"] for c in mine} == {"alice"}
    assert srv.get(f"/v1/calls/{w.bob_live}", role="agent:bob").status_code == 200
    assert srv.get(f"/v1/calls/{w.bob_live}", role="agent").status_code == 404   # not even told it exists
    assert srv.get(f"/v1/calls/{w.bob_done}/note", role="lead").status_code == 200
    assert srv.get(f"/v1/calls/{w.bob_done}/note", role="agent").status_code == 404
    own = srv.get(f"/v1/calls/{w.alice_live}", role="agent").json()
    assert own["signals"] and {s["audience"] for s in own["signals"]} == {"agent"}   # lead signals stay with leads
    assert srv.post(f"/v1/signals/{w.cues[w.bob_live]}/response", role="agent",
                    json={"action": "dismissed"}).status_code == 404
    assert srv.post(f"/v1/calls/{w.bob_done}/note/self-assessment", role="agent",
                    json={"went_well": "x"}).status_code == 404
    for call_id in (w.alice_done, w.bob_done):
        session = {"call_id": call_id, "criterion": "empathy", "next_action": "pause", "follow_up_date": "2030-02-01"}
        assert srv.post("/v1/coaching/sessions", json=session).status_code == 200
    for query in ("", "?agent_id=bob"):
        sessions = srv.get("/v1/coaching/sessions" + query, role="agent").json()["sessions"]
        assert sessions and {s["agent_id"] for s in sessions} == {"alice"}
    # her cue socket refuses another agent's id
    assert socket_outcome(f"{srv.ws}/v1/agents/bob/prompts", world.headers("agent"), None) == 4403
    # cues of bob's calls never reach her screen, live or from the backlog
    open_call(srv, "m-alice-2", "alice")
    open_call(srv, "m-bob-2", "bob")
    with connect(f"{srv.ws}/v1/agents/alice/prompts", additional_headers=world.headers("agent")) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        detect(srv, "m-bob-2")
        bob_cue = agent_cue(srv, "m-bob-2")
        detect(srv, "m-alice-2")
        seen = []
        while "m-alice-2" not in seen:
            frame = json.loads(ws.recv(timeout=10))
            seen.append(frame.get("call_id"))
        with pytest.raises(TimeoutError):
            seen.append(json.loads(ws.recv(timeout=1)).get("call_id"))
    assert bob_cue and not {"m-bob-2", w.bob_live} & set(seen), seen


MASKING = {None: 401, "ingest": 403, "agent": "masked", "lead": "clear", "admin": "clear"}


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r or "none")
def test_customer_fields_are_shown_only_to_roles_with_access(world, role):
    srv, call_id = world.srv, world.alice_live
    one = srv.get(f"/v1/calls/{call_id}", role=role)
    listed = srv.get("/v1/calls", role=role)
    want = MASKING[role]
    if isinstance(want, int):
        assert one.status_code == listed.status_code == want
        return
    row = next(c for c in listed.json()["calls"] if c["call_id"] == call_id)
    for call, text in ((one.json(), one.text), (row, listed.text)):
        if want == "clear":
            assert call["customer"] == CUSTOMER
        else:
            assert call["customer"] == {k: "•••" for k in CUSTOMER}
            assert not any(v in text for v in CUSTOMER.values())
    # the customer's name said in the transcript counts as a customer field too
    caller = json.loads(open(HARPER_DEV).readline())["caller_name"].lower()   # alice_done's customer
    done = srv.get(f"/v1/calls/{world.alice_done}", role=role).json()
    said = " ".join(u["text"] for u in done["utterances"]).lower()
    assert (caller in said) == (want == "clear")
    assert (caller.split()[0] in said) == (want == "clear")


def test_the_console_call_page_masks_nothing_for_leads_and_opens_for_no_one_else(world):
    w = world
    page = w.http.get(f"{w.srv.url}/console/calls/{w.alice_live}", cookies=console_cookie(w, "lead"))
    w.http.cookies.clear()
    assert page.status_code == 200 and CUSTOMER["phone"] in page.text
    for role in ("agent", "ingest"):
        refused = w.http.get(f"{w.srv.url}/console/calls/{w.alice_live}", cookies=console_cookie(w, role))
        w.http.cookies.clear()
        assert refused.status_code == 403 and CUSTOMER["phone"] not in refused.text


# ------------------------------------------------------------------ revocation and expiry
@pytest.fixture
def quick_revocation(world):
    """Revocation applies within the token cache time; make it short for the test."""
    tokens = world.srv.app.state.tokens
    before, tokens.cache_seconds = tokens.cache_seconds, 0.5
    yield world
    tokens.cache_seconds = before


def cli(world, *args: str) -> str:
    from typer.testing import CliRunner

    from livecoach.cli import app

    r = CliRunner().invoke(app, ["token", *args], env={"LIVECOACH_DATABASE_URL": world.srv.settings.database_url})
    assert r.exit_code == 0, r.output
    return r.stdout.strip()


def closed_with(ws, timeout: float) -> int | None:
    """Read until the server closes the socket; its close code (None if it stayed open)."""
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            ws.recv(timeout=max(0.05, end - time.monotonic()))
    except TimeoutError:
        return None
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else -1
    return None


def test_a_revoked_token_is_refused_everywhere_and_its_open_sockets_close(quick_revocation):
    w = quick_revocation
    agent = cli(w, "create", "--role", "agent", "--name", "dora", "--agent-id", "alice").splitlines()[-1]
    lead = cli(w, "create", "--role", "lead", "--name", "erin").splitlines()[-1]
    listed = cli(w, "list")
    assert agent not in listed and lead not in listed   # neither the token nor its hash is ever shown
    ids = {json.loads(line)["name"]: json.loads(line)["id"] for line in listed.splitlines()}
    h = {"agent": {"Authorization": f"Bearer {agent}"}, "lead": {"Authorization": f"Bearer {lead}"}}
    assert w.http.get(w.srv.url + "/v1/calls", headers=h["agent"]).status_code == 200
    with connect(f"{w.srv.ws}/v1/agents/alice/prompts", additional_headers=h["agent"]) as cues, \
            connect(f"{w.srv.ws}/v1/board/live", additional_headers=h["lead"]) as board:
        assert json.loads(cues.recv(timeout=10))["type"] == "ready"
        board.recv(timeout=10)
        t0 = time.monotonic()
        for name in ("dora", "erin"):
            assert cli(w, "revoke", str(ids[name])) == f"revoked token {ids[name]}"
        assert closed_with(cues, 5) == 4401 and closed_with(board, 5) == 4401
        closed_after = time.monotonic() - t0
    assert closed_after < 0.5 + 2.0   # the cache time, plus a watch tick
    for who in ("agent", "lead"):
        assert w.http.get(w.srv.url + "/v1/calls", headers=h[who]).status_code == 401
    assert socket_outcome(f"{w.srv.ws}/v1/agents/alice/prompts", h["agent"], None) == 4401
    r = w.http.post(w.srv.url + "/console/login", data={"token": lead})
    assert r.status_code == 401


def test_an_expired_token_is_refused_and_its_open_socket_closes_keeping_what_was_acked(quick_revocation):
    w = quick_revocation
    token = cli(w, "create", "--role", "ingest", "--name", "dialer-short", "--expires-days", str(3 / 86400))
    token = token.splitlines()[-1]
    h = {"Authorization": f"Bearer {token}"}
    with connect(f"{w.srv.ws}/v1/calls/m-expiring/events", additional_headers=h) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        ws.send(json.dumps({"type": "call_started", "seq": 1, "agent_id": "alice"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "ack"
        assert closed_with(ws, 8) == 4401
    assert w.srv.store.get_call("m-expiring")["last_seq"] == 1     # nothing acknowledged is lost
    assert socket_outcome(f"{w.srv.ws}/v1/calls/m-expiring/events", h, None) == 4401
    assert w.http.post(w.srv.url + "/v1/calls/m-expiring/csat", headers=h, json={"csat": 8}).status_code == 401


# ------------------------------------------------------------------ audit log
def test_viewing_and_approving_a_note_leaves_audit_rows_naming_the_actor(world):
    srv = world.srv
    finished_call(srv, "m-audit", "alice", 2)       # the lead's wait already viewed it once
    t_before = datetime.now(timezone.utc)
    assert srv.get("/v1/calls/m-audit/note", role="lead").status_code == 200
    assert srv.post("/v1/calls/m-audit/note/review", json={"action": "approve"}).status_code == 200
    assert srv.get("/v1/calls/m-audit/note", role="agent").status_code == 200
    assert srv.get("/v1/calls/m-audit/note", role="agent:bob").status_code == 404   # refused: not a view
    page = world.http.get(f"{srv.url}/console/calls/m-audit", cookies=console_cookie(world, "admin"))
    world.http.cookies.clear()
    assert page.status_code == 200

    rows = srv.get("/v1/audit?call_id=m-audit", role="admin").json()["entries"]
    trail = [(r["actor"], r["role"], r["action"], r["note_status"]) for r in reversed(rows)]
    assert trail[-4:] == [("test-lead", "lead", "view", "draft"), ("test-lead", "lead", "approve", "approved"),
                          ("alice", "agent", "view", "approved"), ("test-admin", "admin", "view", "approved")]
    assert all(r["client"] == "127.0.0.1" and r["note_version"] and r["token_id"] for r in rows)
    assert rows[0]["details"] == {"via": "console"}
    approve = next(r for r in rows if r["action"] == "approve")
    assert datetime.fromisoformat(approve["at"]) >= t_before - timedelta(seconds=1)
    lead_rows = srv.get("/v1/audit?actor=test-lead&call_id=m-audit", role="admin").json()["entries"]
    assert {r["actor"] for r in lead_rows} == {"test-lead"} and len(lead_rows) == len(rows) - 2
    assert srv.get("/v1/audit", role="lead").status_code == 403


def test_the_audit_migration_runs_up_and_down_on_both_databases(db_url):
    from alembic import command
    from sqlalchemy import inspect

    from livecoach.store import Store, alembic_config, current_revision, make_engine

    Store(db_url).close()
    engine = make_engine(db_url)
    assert current_revision(engine) == "0003"
    cols = {c["name"] for c in inspect(engine).get_columns("audit_log")}
    assert {"actor", "token_id", "role", "action", "call_id", "note_version", "client", "at"} <= cols
    command.downgrade(alembic_config(db_url), "0002")
    assert "audit_log" not in inspect(engine).get_table_names()
    Store(db_url).close()
    assert "audit_log" in inspect(engine).get_table_names()
    engine.dispose()
