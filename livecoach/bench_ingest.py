"""``livecoach bench ingest``: ack latency and throughput of the ingest path (socket → commit → ack)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("ingest")
    def bench_ingest(calls: int = typer.Option(100, min=1, help="Concurrent chat connections"),
                     events: int = typer.Option(50, min=2, help="Events per call"),
                     rate: float = typer.Option(2.0, min=0.0, help="Events per second per call (0: as fast as acks come)"),
                     url: str = typer.Option("", help="A running server (default: start one in-process, detectors off)"),
                     token: str = typer.Option("", help="Ingest token for --url"),
                     database_url: str = typer.Option("", help="For the in-process server: database URL "
                                                               "(default: a temporary SQLite file)")) -> None:
        """Drive CALLS concurrent chats of EVENTS events each and print ack latency p50/p95/p99 and acks/s."""
        import asyncio

        from livecoach.bench_ingest import run

        asyncio.run(run(calls, events, rate, url, token, database_url))


async def run(calls: int, events: int, rate: float, url: str, token: str, database_url: str) -> None:
    import asyncio
    import json
    import tempfile
    import threading
    import time

    import uvicorn
    import websockets

    from livecoach.app import create_app
    from livecoach.auth import TokenStore
    from livecoach.settings import Settings

    server = None
    if not url:
        tmp = tempfile.mkdtemp(prefix="livecoach-bench-")
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        settings = Settings(data_dir=tmp, database_url=database_url, port=port, detectors=False, postcall=False)
        server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                               log_level="warning", lifespan="on"))
        server_thread = threading.Thread(target=server.run, daemon=True)
        server_thread.start()
        url = f"http://127.0.0.1:{port}"
        from livecoach.ready import wait_healthy

        await asyncio.to_thread(wait_healthy, url, timeout=60)
        token = TokenStore.from_settings(settings).create(role="ingest", name="bench")
        print(f"in-process server on {settings.database_url.split('://')[0]}, detectors off")
    lat: list[float] = []
    errors = 0
    ws_base = url.replace("http", "ws")

    async def one(i: int) -> None:
        nonlocal errors
        cid = f"bench-{i}-{int(time.time())}"
        async with websockets.connect(f"{ws_base}/v1/calls/{cid}/events",
                                      additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            await ws.recv()
            for seq in range(1, events + 1):
                if seq == 1:
                    ev = {"type": "call_started", "seq": 1, "agent_id": f"agent-{i % 20}"}
                elif seq == events:
                    ev = {"type": "call_ended", "seq": seq}
                else:
                    ev = {"type": "utterance", "seq": seq, "speaker": "customer" if seq % 2 else "agent",
                          "text": "i would like to check the balance on my savings account please"}
                t0 = time.perf_counter()
                await ws.send(json.dumps(ev))
                frame = json.loads(await ws.recv())
                lat.append((time.perf_counter() - t0) * 1000)
                if frame.get("type") != "ack":
                    errors += 1
                if rate > 0:
                    await asyncio.sleep(max(0.0, 1 / rate - lat[-1] / 1000))

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(calls)))
    wall = time.perf_counter() - t0
    lat.sort()

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q / 100 * (len(lat) - 1)))]

    print(f"{calls} calls x {events} events, {rate:g} ev/s per call: {len(lat)} acks in {wall:.1f} s "
          f"= {len(lat) / wall:.0f} acks/s, errors {errors}")
    print(f"ack latency ms: p50 {pct(50):.1f}  p95 {pct(95):.1f}  p99 {pct(99):.1f}  max {lat[-1]:.1f}")
    if server is not None:  # a clean stop: let its stages finish loading and shut down
        server.should_exit = True
        await asyncio.to_thread(server_thread.join, 60)
