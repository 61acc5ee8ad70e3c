"""Replaying recorded calls end to end, and a SIGKILL in the middle of a replay."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
import websockets

from livecoach.auth import TokenStore
from livecoach.settings import Settings
from livecoach.store import Store
from livecoach.stream.replay import conversation_events, load_conversations

from conftest import DEMO_CALLS, free_port


def test_conversation_events_follow_the_recorded_timing():
    conv = load_conversations(DEMO_CALLS)[0]
    events = conversation_events(conv)
    assert events[0][1]["type"] == "call_started" and events[-1][1]["type"] == "call_ended"
    assert [e["seq"] for _, e in events] == list(range(1, len(events) + 1))
    offsets = [t for t, _ in events]
    assert offsets == sorted(offsets)
    first_turn = conv["turns"][0]
    assert events[1][0] == pytest.approx(first_turn["start_ms"] / 1000)
    assert events[0][1]["customer"] == {"name": conv["caller_name"]}
    assert events[-1][1]["csat"] == conv["partner_rating"]


def test_abcd_action_turns_become_agent_actions():
    conv = {"id": 3592, "turns": [{"speaker": "agent", "text": "may I have your name please?"},
                                  {"speaker": "customer", "text": "Crystal Minh"},
                                  {"speaker": "action", "text": "Account has been pulled up for Crystal Minh."}],
            "actions": [{"turn": 2, "action": "pull-up-account", "values": ["crystal minh"]}]}
    kinds = [(e["type"], e.get("name")) for _, e in conversation_events(conv)]
    assert kinds == [("call_started", None), ("utterance", None), ("utterance", None),
                     ("agent_action", "pull-up-account"), ("call_ended", None)]


def test_replay_command_stores_every_event(server, tmp_path):
    out = subprocess.run([sys.executable, "-m", "livecoach.cli", "replay", str(DEMO_CALLS), "--url", server.url,
                          "--token", server.tokens["ingest"], "--speed", "200", "--concurrency", "8"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    convs = load_conversations(DEMO_CALLS)
    n_events = sum(len(conversation_events(c)) for c in convs)
    assert f"events sent {n_events}, acked {n_events}" in out.stdout
    assert "p50" in out.stdout and "p99" in out.stdout
    assert server.store.count("events") == n_events
    for c in convs:
        turns = [t for t in c["turns"] if t["text"].strip()]
        assert len(server.get(f"/v1/calls/{c['id']}").json()["utterances"]) == len(turns)


def _serve(settings_env: dict, port: int, log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "livecoach.cli", "serve", "--port", str(port)],
                            env={**os.environ, **settings_env}, stdout=log, stderr=subprocess.STDOUT)


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "server exited"
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("server not healthy")


async def _send_until_dropped(ws_base: str, token: str, convs, acked: set, speed: float) -> None:
    async def one(conv):
        events = conversation_events(conv)
        cid = events[0][1]["call_id"]
        try:
            async with websockets.connect(f"{ws_base}/v1/calls/{cid}/events",
                                          additional_headers={"Authorization": f"Bearer {token}"}) as ws:
                ready = json.loads(await ws.recv())

                async def reader():
                    async for raw in ws:
                        f = json.loads(raw)
                        if f["type"] == "ack":
                            acked.add((cid, f["seq"]))

                r = asyncio.create_task(reader())
                t0 = time.monotonic()
                for t, e in events:
                    if e["seq"] < ready["next_seq"]:
                        continue
                    await asyncio.sleep(max(0, t0 + t / speed - time.monotonic()))
                    await ws.send(json.dumps(e))
                await asyncio.sleep(1.0)
                r.cancel()
        except (OSError, websockets.exceptions.WebSocketException):
            pass  # the server died under us

    await asyncio.gather(*(one(c) for c in convs))


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [0.7, 1.6])
def test_sigkill_mid_replay_loses_no_acked_event(tmp_path, kill_after):
    env = {"LIVECOACH_DATA_DIR": str(tmp_path), "LIVECOACH_DETECTORS": "false", "LIVECOACH_POSTCALL": "false"}
    settings = Settings(data_dir=tmp_path, detectors=False)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ingest = TokenStore.from_settings(settings).create(role="ingest", name="crash-test")
    convs = load_conversations(DEMO_CALLS)
    acked: set = set()
    with open(tmp_path / "serve.log", "wb") as log:
        proc = _serve(env, port, log)
        _wait_healthy(url, proc)

        async def crash():
            sender = asyncio.create_task(_send_until_dropped(url.replace("http", "ws"), ingest, convs, acked, 40))
            await asyncio.sleep(kill_after)
            proc.send_signal(signal.SIGKILL)
            await sender

        asyncio.run(crash())
        proc.wait(timeout=10)
        assert acked, "nothing was acked before the kill"
        all_events = {(e["call_id"], e["seq"]) for c in convs for _, e in conversation_events(c)}
        assert acked < all_events, "the kill came after the replay finished"

        # every acked event survived the SIGKILL
        store = Store(settings.database_url)
        stored = {(cid, s) for c in convs for cid in [str(c["id"])]
                  for s in [e.seq for e in store.call_events(cid)]}
        assert acked <= stored
        store.close()

        # restart, resume every call from the server's next_seq: the result is complete and unduplicated
        proc = _serve(env, port, log)
        try:
            _wait_healthy(url, proc)
            asyncio.run(_send_until_dropped(url.replace("http", "ws"), ingest, convs, acked, 200))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    store = Store(settings.database_url)
    try:
        assert store.count("events") == len(all_events)
        for c in convs:
            seqs = [e.seq for e in store.call_events(str(c["id"]))]
            assert seqs == list(range(1, len(conversation_events(c)) + 1))
    finally:
        store.close()


def test_schema_command_prints_every_event_type():
    out = subprocess.run([sys.executable, "-m", "livecoach.cli", "schema"], capture_output=True, text=True,
                         timeout=60)
    schema = json.loads(out.stdout)
    text = json.dumps(schema)
    for name in ("CallStarted", "Utterance", "AgentAction", "CallEnded", "Signal"):
        assert name in text
    assert schema["version"] == 1


def test_config_is_overridable_by_environment(tmp_path):
    env = {**os.environ, "LIVECOACH_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test",
           "LIVECOACH_PHASE": "2", "LIVECOACH_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "livecoach.cli", "config"], capture_output=True, text=True,
                         env=env, timeout=60)
    cfg = json.loads(out.stdout)
    assert cfg["database_url"] == "postgresql://postgres@127.0.0.1:5432/test" and cfg["phase"] == 2

    bad = subprocess.run([sys.executable, "-m", "livecoach.cli", "config"], capture_output=True, text=True,
                         env={**env, "LIVECOACH_PHASE": "9"}, timeout=60)
    assert bad.returncode == 2 and "phase" in bad.stderr
