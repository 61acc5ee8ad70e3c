"""``livecoach demo``: one process, embedded defaults, a few real calls replayed, where to look."""

from __future__ import annotations

import asyncio
import socket
import sys
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path

import httpx
import uvicorn

from livecoach.ready import ServerNotReady, wait_healthy

from livecoach.settings import Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _say(msg: str = "") -> None:
    print(msg, flush=True)


def run_demo(*, port: int = 0, speed: float = 20.0, once: bool = False, data_dir: str | None = None) -> int:
    from livecoach.app import create_app
    from livecoach.auth import TokenStore
    from livecoach.stream.replay import load_conversations, replay_conversations

    base = Settings()
    data = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="livecoach-demo-"))
    settings = Settings.model_validate({**base.model_dump(), "data_dir": data, "database_url": "",
                                        "host": "127.0.0.1", "port": port or _free_port()})
    settings.ensure_dirs()
    url = f"http://{settings.host}:{settings.port}"
    _say(f"livecoach demo: starting a server at {url} (data in {data})")
    _say("  first start builds the detector model cache; this can take a minute")

    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=settings.host, port=settings.port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="livecoach-server", daemon=True)
    thread.start()
    try:
        wait_healthy(url, timeout=600, alive=thread.is_alive)
    except ServerNotReady as exc:
        _say(f"livecoach demo: {exc} (see the log above)")
        return 1

    tokens = TokenStore.from_settings(settings)
    lead = tokens.create(role="lead", name="demo-lead")
    ingest = tokens.create(role="ingest", name="demo-replay")
    calls_file = resources.files("livecoach") / "demo_calls.jsonl"
    convs = load_conversations(str(calls_file))
    _say(f"replaying {len(convs)} real Harper Valley bank calls (CC BY 4.0, Gridspace & Stanford) "
         f"at {speed:g}x real time …")
    summary = asyncio.run(replay_conversations(convs, url=url, token=ingest, speed=speed, concurrency=len(convs)))
    _say(summary.render())

    hdr = {"Authorization": f"Bearer {lead}"}
    ids = [str(c["id"]) for c in convs]
    calls, notes = _settle(url, hdr, ids)
    _say()
    _say(f"{len(calls)} calls stored, {sum(len(c['utterances']) for c in calls)} utterances, "
         f"{sum(len(c['signals']) for c in calls)} signals, {notes} QA note drafts")
    for c in calls:
        sigs = sorted(c["signals"], key=lambda s: -s["confidence"])[:2]
        line = f"  {c['call_id']}  {c['queue']:<20} agent {c['agent_id']:<8} csat {c['csat']}"
        _say(line)
        for s in sigs:
            ev = (s.get("evidence") or [{}])[0]
            minute = _minute(ev.get("t"))
            _say(f"      {s['kind']} ({s['confidence']:.2f}, {s['audience']}) at {minute}: "
                 f"\"{(ev.get('excerpt') or '')[:70]}\"")
    _say()
    _say("Where to look:")
    _say(f"  console     {url}/console   (sign in with the lead token below)")
    _say(f"  API         {url}/docs")
    _say(f"  one call    curl -H 'Authorization: Bearer {lead}' {url}/v1/calls/{ids[0]}")
    _say(f"  lead token  {lead}")
    if once:
        server.should_exit = True
        thread.join(timeout=30)
        return 0 if summary.errors == 0 and summary.acked == summary.sent else 1
    _say("serving until Ctrl-C …")
    try:
        while thread.is_alive():
            thread.join(timeout=1)
    except KeyboardInterrupt:
        server.should_exit = True
        thread.join(timeout=30)
    return 0


def _minute(t) -> str:
    if t is None:
        return "-"
    t = int(t)
    return f"{t // 60}:{t % 60:02d}"


def _settle(url: str, hdr: dict, ids: list[str], timeout: float = 60.0):
    """Wait until every call has ended and the pipeline has stopped producing for a moment."""
    last, stable_since, deadline = None, time.monotonic(), time.monotonic() + timeout
    calls: list[dict] = []
    notes = 0
    while time.monotonic() < deadline:
        calls = [r.json() for i in ids if (r := httpx.get(f"{url}/v1/calls/{i}", headers=hdr, timeout=10))
                 .status_code == 200]
        notes = sum(1 for i in ids if httpx.get(f"{url}/v1/calls/{i}/note", headers=hdr, timeout=10)
                    .status_code == 200)
        state = (tuple(c["status"] for c in calls), sum(len(c["signals"]) for c in calls), notes)
        if state != last:
            last, stable_since = state, time.monotonic()
        elif all(c["status"] == "ended" for c in calls) and time.monotonic() - stable_since > 1.5:
            break
        time.sleep(0.3)
    return calls, notes


if __name__ == "__main__":
    sys.exit(run_demo(once=True))
