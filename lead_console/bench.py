"""``livecoach bench board``: how fast the live board shows what happens, under many live calls.

Starts a server in-process (fresh SQLite in a temporary directory), replays N calls at once, opens
board sockets like consoles do (optionally some that read slowly), raises signals at random live
calls and measures, on the board socket:

- signal → board: from publishing a signal to a console receiving the card that shows it
- update staleness: from the board applying an event to a console receiving the card
- ingest ack latency of the replay (the pipeline must not slow down because of the board)
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command("board")(board)


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def board(calls: int = typer.Option(200, help="Concurrent replayed calls"),
          speed: float = typer.Option(4.0, help="Replay speed (x real time)"),
          signals: int = typer.Option(400, help="Signals raised at random live calls"),
          consoles: int = typer.Option(3, help="Board sockets reading at full speed"),
          slow: int = typer.Option(1, help="Board sockets that read one message every 2 s"),
          data: str = typer.Option("", help="Conversations JSONL (default: ../shared/data/harper_valley/calls_dev.jsonl)"),
          detectors: bool = typer.Option(False, help="Run the tier-0 detectors too"),
          port: int = typer.Option(0, help="Port (0: a free one)")) -> None:
    """Board update latency with many concurrent calls (percentiles and throughput)."""
    import asyncio
    import json
    import random
    import socket
    import tempfile
    import threading
    import time
    from pathlib import Path

    import uvicorn
    import websockets

    from livecoach.app import create_app
    from livecoach.auth import TokenStore
    from livecoach.bus import SIGNALS
    from livecoach.events import EvidenceRef, Signal
    from livecoach.ready import wait_healthy
    from livecoach.settings import Settings
    from livecoach.stream.replay import load_conversations, replay_conversations

    path = Path(data) if data else Path(__file__).resolve().parents[2] / "shared" / "data" / "harper_valley" / "calls_dev.jsonl"
    if not path.exists():
        path = Path("../shared/data/harper_valley/calls_dev.jsonl")
    base = load_conversations(path)
    convs = [{**base[i % len(base)], "id": f"bench-{i:04d}"} for i in range(calls)]
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    tmp = tempfile.mkdtemp(prefix="livecoach-bench-board-")
    settings = Settings(data_dir=tmp, port=port, detectors=detectors, postcall=False, log_level="warning")
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, timeout=300, alive=th.is_alive)
    ts = TokenStore.from_settings(settings)
    ingest, lead = ts.create(role="ingest", name="bench-ingest"), ts.create(role="lead", name="bench-lead")
    feed = app.state.stages["board"]
    typer.echo(f"bench board: {calls} calls at {speed}x, {signals} signals, {consoles} consoles + {slow} slow, "
               f"detectors {'on' if detectors else 'off'} (2 shared cores: figures are noisy)")

    published: dict[str, float] = {}
    sig_lat: list[float] = []
    stale: list[float] = []
    msgs = [0]
    bytes_in = [0]
    live_calls: set[str] = set()
    seen: set[str] = set()

    async def console(i: int, slow_reader: bool, stop: asyncio.Event) -> None:
        ws_url = url.replace("http", "ws") + f"/v1/board/live?token={lead}"
        async with websockets.connect(ws_url, max_size=2 ** 24) as ws:
            while not stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 0.5)
                except asyncio.TimeoutError:
                    continue
                except websockets.ConnectionClosed:
                    return
                now_wall, now = time.time() * 1000, time.perf_counter()
                if slow_reader:
                    await asyncio.sleep(2)
                    continue
                msg = json.loads(raw)
                msgs[0] += 1
                bytes_in[0] += len(raw)
                for card in msg.get("cards", []):
                    if i == 0:
                        live_calls.add(card["call_id"])
                        if msg["type"] == "delta" and card.get("changed_ms"):
                            stale.append(now_wall - card["changed_ms"])
                    for s in card["signals"]:
                        key = (i, s["id"])
                        if s["id"] in published and key not in seen:
                            seen.add(key)
                            sig_lat.append((now - published[s["id"]]) * 1000)
                if i == 0:
                    for cid in msg.get("removed", []):
                        live_calls.discard(cid)

    async def raise_signals(stop: asyncio.Event, duration: float) -> None:
        rnd = random.Random(7)
        gap = duration / max(signals, 1)
        n = 0
        while n < signals and not stop.is_set():
            await asyncio.sleep(gap)
            if not live_calls:
                continue
            cid = rnd.choice(sorted(live_calls))
            n += 1
            sig = Signal(call_id=cid, kind=rnd.choice(["churn_intent", "complaint", "frustration_spike"]),
                         confidence=round(rnd.uniform(0.5, 0.99), 2),
                         evidence=[EvidenceRef(seq=10_000 + n, excerpt="bench", t=float(n))])
            published[sig.id] = time.perf_counter()
            asyncio.run_coroutine_threadsafe(app.state.bus.publish(SIGNALS, cid, sig), feed.loop)

    async def main():
        stop = asyncio.Event()
        tasks = [asyncio.create_task(console(i, False, stop)) for i in range(consoles)]
        tasks += [asyncio.create_task(console(100 + i, True, stop)) for i in range(slow)]
        await asyncio.sleep(0.5)
        mean_s = sum((c.get("duration_ms") or 60_000) for c in convs) / len(convs) / 1000 / speed
        sigs = asyncio.create_task(raise_signals(stop, mean_s * 0.8))
        t0 = time.perf_counter()
        summary = await replay_conversations(convs, url=url, token=ingest, speed=speed, concurrency=calls)
        wall = time.perf_counter() - t0
        await asyncio.sleep(1.5)
        stop.set()
        sigs.cancel()
        await asyncio.gather(*tasks, sigs, return_exceptions=True)
        return summary, wall

    summary, wall = asyncio.run(main())
    n_seen = len({k[1] for k in seen})
    typer.echo(summary.render())
    typer.echo(f"signal -> board ms (per console): p50 {_pct(sig_lat, 50):.0f}  p95 {_pct(sig_lat, 95):.0f}  "
               f"p99 {_pct(sig_lat, 99):.0f}  max {max(sig_lat, default=float('nan')):.0f}  "
               f"({n_seen}/{len(published)} signals seen, {sum(1 for x in sig_lat if x <= 1000)}/{len(sig_lat)} within 1 s)")
    typer.echo(f"board update staleness ms: p50 {_pct(stale, 50):.0f}  p95 {_pct(stale, 95):.0f}  "
               f"p99 {_pct(stale, 99):.0f}  max {max(stale, default=float('nan')):.0f}")
    typer.echo(f"board messages {msgs[0]} ({msgs[0] / wall:.0f}/s to {consoles} consoles, "
               f"{bytes_in[0] / max(msgs[0], 1) / 1024:.1f} KiB avg); stage stats {dict(feed.stats)}")
    server.should_exit = True
    th.join(timeout=30)
