"""Every route and socket needs a token with the right role; a refused caller stores nothing."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import update
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from livecoach import tables as T
from livecoach.auth import TokenStore, hash_token


def ws_close_code(server, token: str | None, call_id: str = "c-auth", via: str = "header") -> int:
    url = f"{server.ws}/v1/calls/{call_id}/events"
    headers = {}
    if token and via == "header":
        headers["Authorization"] = f"Bearer {token}"
    if token and via == "query":
        url += f"?token={token}"
    ws = connect(url, additional_headers=headers)
    try:
        ws.send(json.dumps({"type": "call_started", "seq": 1, "agent_id": "alice"}))
        ws.recv(timeout=10)
        ws.recv(timeout=10)
    except ConnectionClosed as exc:
        return exc.rcvd.code
    finally:
        ws.close()
    return 1000


def test_ingest_socket_without_token_closes_4401_and_stores_nothing(server):
    assert ws_close_code(server, None) == 4401
    assert ws_close_code(server, "lc_not-a-real-token") == 4401
    assert server.store.get_call("c-auth") is None


@pytest.mark.parametrize("role", ["lead", "agent"])
def test_ingest_socket_with_wrong_role_closes_4403_and_stores_nothing(server, role):
    assert ws_close_code(server, server.tokens[role]) == 4403
    assert server.store.get_call("c-auth") is None


def test_ingest_socket_takes_the_token_as_query_parameter_too(server):
    url = f"{server.ws}/v1/calls/c-query/events?token={server.tokens['ingest']}"
    with connect(url) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"


@pytest.mark.parametrize("path", ["/v1/calls", "/v1/calls?status=active", "/v1/calls/x"])
def test_reads_need_a_token(server, path):
    r = server.get(path, role=None)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def test_ingest_token_cannot_read_calls(server):
    assert server.get("/v1/calls", role="ingest").status_code == 403


def test_healthz_is_open(server):
    assert server.get("/healthz", role=None).json() == {"status": "ok"}


def _call(server, call_id, agent):
    with connect(f"{server.ws}/v1/calls/{call_id}/events",
                 additional_headers={"Authorization": f"Bearer {server.tokens['ingest']}"}) as ws:
        ws.recv(timeout=10)
        ws.send(json.dumps({"type": "call_started", "seq": 1, "agent_id": agent, "customer": {"name": "Ann Lee"}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "ack"


def test_agent_sees_only_own_calls_and_no_customer_fields(server):
    _call(server, "alice-call", "alice")
    _call(server, "bob-call", "bob")
    mine = server.get("/v1/calls", role="agent").json()["calls"]
    assert [c["call_id"] for c in mine] == ["alice-call"]
    assert mine[0]["customer"] == {"name": "•••"}
    assert server.get("/v1/calls/alice-call", role="agent").status_code == 200
    assert server.get("/v1/calls/bob-call", role="agent").status_code == 404
    lead_view = server.get("/v1/calls", role="lead").json()["calls"]
    assert sorted(c["call_id"] for c in lead_view) == ["alice-call", "bob-call"]
    assert server.get("/v1/calls/bob-call", role="lead").json()["customer"] == {"name": "Ann Lee"}


def test_tokens_are_stored_hashed(server):
    db = server.settings.database_url.removeprefix("sqlite:///")
    rows = sqlite3.connect(db).execute("select token_hash from tokens").fetchall()
    stored = {r[0] for r in rows}
    for token in server.tokens.values():
        assert token not in stored and hash_token(token) in stored


def test_revoked_and_expired_tokens_are_refused(server):
    ts = TokenStore.from_settings(server.settings)
    ts.cache_seconds = 0
    server.app.state.tokens.cache_seconds = 0
    lead = ts.create(role="lead", name="carol")
    h = {"Authorization": f"Bearer {lead}"}
    import httpx

    assert httpx.get(server.url + "/v1/calls", headers=h).status_code == 200
    token_id = next(t["id"] for t in ts.list() if t["name"] == "carol")
    assert ts.revoke(token_id)
    assert httpx.get(server.url + "/v1/calls", headers=h).status_code == 401

    old = ts.create(role="lead", name="dave", expires_days=1)
    with ts.engine.begin() as c:
        c.execute(update(T.tokens).where(T.tokens.c.name == "dave")
                  .values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
    assert httpx.get(server.url + "/v1/calls", headers={"Authorization": f"Bearer {old}"}).status_code == 401


def test_tokens_in_websocket_urls_never_reach_the_log(caplog):
    import logging

    from livecoach.logs import install

    install()
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        logging.getLogger("uvicorn.access").info('%s - "WebSocket %s" %s', "127.0.0.1:5",
                                                  "/v1/calls/x/audio?channel=agent&token=lc_secret123", "[accepted]")
    assert "lc_secret123" not in caplog.text and "token=[redacted]" in caplog.text
