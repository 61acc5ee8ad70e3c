"""``livecoach bench pipeline``: end-to-end latency and throughput, embedded bus vs Kafka workers.

Each run feeds the same recorded calls the way the gateway does (store, then publish), as fast as
``--concurrency`` calls at a time allow, through the full stage line-up plus a probe stage that
answers every utterance with a ``bench_echo`` signal. Reported per run:

* e2e latency: utterance published → its echo seen back on the signals topic (bus, queueing
  behind the real stages of that worker, the worker's output path). Under this saturating load it
  is mostly queueing: read it as "how far behind the pipeline runs", not as idle latency.
* throughput: utterances per second from first publish to last echo;
* drained: seconds until every stage has handled everything (embedded: bus drained; Kafka: every
  topic's offsets committed).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import typer

from livecoach.bus import CALLS, SIGNALS
from livecoach.events import EvidenceRef, Signal, Utterance, inbound_adapter
from livecoach.pipeline import Stage

DEFAULT_CALLS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "harper_valley" / "calls_dev.jsonl"


class Echo(Stage):
    """The probe: one ``bench_echo`` signal per utterance, straight to the signals topic."""

    name = "bench_echo"
    consumes = (CALLS,)
    produces = SIGNALS

    async def handle(self, event, state):
        if isinstance(event, Utterance):
            return [Signal(call_id=event.call_id, kind="bench_echo", confidence=1.0, detector=self.name,
                           evidence=[EvidenceRef(seq=event.seq)])]
        return []


def echo_stage(settings, store) -> Stage:
    return Echo()


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def _calls(path: Path, n: int, run: str) -> list[list[Any]]:
    from livecoach.stream.replay import conversation_events, load_conversations

    convs = load_conversations(path)
    out = []
    for i in range(n):
        c = dict(convs[i % len(convs)])
        c["id"] = f"{c['id']}-{run}-{i}"
        out.append([inbound_adapter.validate_python(e) for _, e in conversation_events(c)])
    return out


async def _feed(store, bus, calls, concurrency: int, sent: dict) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one(events):
        async with sem:
            for ev in events:
                res = await store.append(ev)
                if res.outcome != "stored":
                    raise RuntimeError(f"could not store {ev.call_id}/{ev.seq}: {res.message}")
                if isinstance(ev, Utterance):
                    sent[(ev.call_id, ev.seq)] = time.perf_counter()
                await bus.publish(CALLS, ev.call_id, ev)

    await asyncio.gather(*(one(evs) for evs in calls))


async def _wait_echoes(seen: dict, want: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(seen) < want:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(seen)} of {want} echoes came back in {timeout:.0f} s")
        await asyncio.sleep(0.05)


def _row(label: str, sent: dict, seen: dict, drained: float) -> dict[str, Any]:
    lat = [(seen[k] - sent[k]) * 1000 for k in seen if k in sent]
    span = max(seen.values()) - min(sent.values()) if seen and sent else float("nan")
    return {"run": label, "utterances": len(seen), "p50": _pct(lat, 50), "p95": _pct(lat, 95),
            "p99": _pct(lat, 99), "max": max(lat, default=float("nan")), "rate": len(seen) / span if span else 0.0,
            "drained": drained}


async def _embedded(settings, calls, concurrency: int, timeout: float) -> dict[str, Any]:
    from livecoach.app import build_stages
    from livecoach.pipeline import Pipeline
    from livecoach.store import Store
    from livecoach.stream.local_bus import LocalBus

    store = Store(settings.database_url, batch_max=settings.write_batch_max)
    bus = LocalBus()
    sent: dict = {}
    seen: dict = {}

    async def on_signal(ev):
        if isinstance(ev, Signal) and ev.kind == "bench_echo":
            seen.setdefault((ev.call_id, ev.evidence[0].seq), time.perf_counter())

    pipeline = Pipeline(bus, build_stages(settings, store) + [Echo()])
    bus.subscribe(SIGNALS, on_signal, group="bench")
    await pipeline.start()
    await bus.start()
    try:
        t0 = time.perf_counter()
        await _feed(store, bus, calls, concurrency, sent)
        await _wait_echoes(seen, len(sent), timeout)
        await bus.drain()
        drained = time.perf_counter() - t0
    finally:
        await bus.stop()
        await pipeline.stop()
        store.close()
    return _row("embedded (in-process bus)", sent, seen, drained)


def _start_workers(n: int, env: dict[str, str], logdir: Path) -> list[tuple[subprocess.Popen, Path]]:
    from livecoach.stream.broker import die_with_parent

    procs = []
    for i in range(n):
        log = logdir / f"worker-{i}.log"
        p = subprocess.Popen([sys.executable, "-m", "livecoach.cli", "worker", "--loglevel", "info",
                              "--extra-stage", "livecoach.stream.bench_pipeline:echo_stage"],
                             env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             preexec_fn=die_with_parent)
        procs.append((p, log))
    return procs


async def _wait_ready(procs, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    for p, log in procs:
        while "Worker ready" not in log.read_text(errors="replace"):
            if p.poll() is not None:
                raise RuntimeError(f"worker exited ({p.returncode}); see {log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker not ready in {timeout:.0f} s; see {log}")
            await asyncio.sleep(0.2)


async def _kafka(settings, calls, n_workers: int, concurrency: int, timeout: float, logdir: Path) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer

    from livecoach.events import parse_event
    from livecoach.store import Store
    from livecoach.stream._kafka_admin import all_topic_names, ensure_topics, topic_name, wait_until_processed
    from livecoach.stream.kafka_bus import KafkaBus

    servers = settings.bus[len("kafka://"):]
    prefix = settings.kafka_topic_prefix
    await ensure_topics(servers, all_topic_names(prefix), settings.kafka_partitions)
    env = {**os.environ}
    for name in ("bus", "database_url", "data_dir", "cache_dir", "detectors", "postcall", "kafka_partitions",
                 "kafka_topic_prefix", "kafka_session_timeout_s"):
        v = getattr(settings, name)
        env[f"LIVECOACH_{name.upper()}"] = str(v).lower() if isinstance(v, bool) else str(v)
    procs = _start_workers(n_workers, env, logdir)
    store = Store(settings.database_url, batch_max=settings.write_batch_max)
    bus = KafkaBus(settings)
    consumer = AIOKafkaConsumer(topic_name(prefix, SIGNALS), bootstrap_servers=servers, group_id=None,
                                auto_offset_reset="earliest")
    sent: dict = {}
    seen: dict = {}

    async def collect():
        async for msg in consumer:
            ev = parse_event(msg.value)
            if isinstance(ev, Signal) and ev.kind == "bench_echo":
                seen.setdefault((ev.call_id, ev.evidence[0].seq), time.perf_counter())

    try:
        await _wait_ready(procs)
        await asyncio.sleep(2 * settings.kafka_session_timeout_s / 3)  # let a late joiner settle
        await _wait_ready(procs)
        await consumer.start()
        collector = asyncio.create_task(collect())
        await bus.start()
        t0 = time.perf_counter()
        await _feed(store, bus, calls, concurrency, sent)
        await bus.drain()
        await _wait_echoes(seen, len(sent), timeout)
        await wait_until_processed(servers, [f"{prefix}-all"], all_topic_names(prefix), timeout=timeout, settle=0.3)
        drained = time.perf_counter() - t0
        collector.cancel()
    finally:
        await bus.stop()
        await consumer.stop()
        for p, _ in procs:
            p.terminate()
        for p, _ in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        store.close()
    return _row(f"kafka, {n_workers} worker{'s' if n_workers > 1 else ''}", sent, seen, drained)


def register(app: typer.Typer) -> None:
    @app.command("pipeline")
    def pipeline(
        bus: str = typer.Option("tansu", help="kafka://host:port, or 'tansu' to start an in-memory tansu on loopback"),
        workers: str = typer.Option("1,2", help="Worker counts to measure on Kafka, comma-separated"),
        calls: int = typer.Option(40, min=1, help="Calls per run (recorded calls, reused if fewer)"),
        concurrency: int = typer.Option(16, min=1, help="Calls fed at the same time"),
        calls_file: Path = typer.Option(DEFAULT_CALLS, help="Recorded calls (JSONL, replay format)"),
        database_url: str = typer.Option("", help="Storage for every run (default: a fresh SQLite file per run; "
                                                  "use PostgreSQL for numbers that mean something)"),
        detectors: bool = typer.Option(True, help="Run the tier-0 detectors"),
        postcall: bool = typer.Option(True, help="Draft QA notes"),
        embedded: bool = typer.Option(True, help="Also measure the in-process bus"),
        timeout: float = typer.Option(300, help="Give up a run after this many seconds"),
    ) -> None:
        """End-to-end latency and throughput: in-process bus vs Kafka with 1 and 2 workers."""
        from livecoach.settings import Settings
        from livecoach.stream.broker import Tansu

        counts = [int(x) for x in workers.split(",") if x.strip()]
        if calls_file and not calls_file.exists():
            typer.echo(f"bench pipeline: no such file {calls_file}", err=True)
            raise typer.Exit(2)
        tmp = Path(tempfile.mkdtemp(prefix="livecoach-bench-pipeline-"))
        broker = None
        if bus == "tansu":
            broker = Tansu(log_path=tmp / "tansu.log").start()
            bus_url = broker.url
        elif bus.startswith("kafka://"):
            bus_url = bus
        else:
            typer.echo("bench pipeline: --bus must be kafka://host:port or 'tansu'", err=True)
            raise typer.Exit(2)
        rows = []
        cores = os.cpu_count()
        typer.echo(f"bench pipeline: {calls} calls, concurrency {concurrency}, detectors {detectors}, "
                   f"postcall {postcall}, broker {bus_url}{' (tansu, memory)' if broker else ''}, {cores} cores; "
                   f"logs in {tmp}")
        try:
            runs: list[tuple[str, int]] = ([("embedded", 0)] if embedded else []) + [("kafka", n) for n in counts]
            for kind, n in runs:
                run = uuid.uuid4().hex[:6]
                data_dir = tmp / f"{kind}-{n}-{run}"
                data_dir.mkdir(parents=True)
                s = Settings(data_dir=data_dir, database_url=database_url, detectors=detectors, postcall=postcall,
                             bus="memory" if kind == "embedded" else bus_url,
                             kafka_topic_prefix=f"bench{run}", kafka_session_timeout_s=6)
                batch = _calls(calls_file, calls, run)
                if kind == "embedded":
                    row = asyncio.run(_embedded(s, batch, concurrency, timeout))
                else:
                    row = asyncio.run(_kafka(s, batch, n, concurrency, timeout, data_dir))
                rows.append(row)
                typer.echo(f"  done: {row['run']}")
        finally:
            if broker is not None:
                broker.stop()
        typer.echo("")
        typer.echo(f"{'run':<28} {'utts':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} "
                   f"{'utt/s':>7} {'drained s':>9}")
        for r in rows:
            typer.echo(f"{r['run']:<28} {r['utterances']:>6} {r['p50']:>8.1f} {r['p95']:>8.1f} {r['p99']:>8.1f} "
                       f"{r['max']:>8.1f} {r['rate']:>7.1f} {r['drained']:>9.1f}")
        typer.echo("(saturating load: latency is mostly queueing; CPU shared with other work makes figures noisy)")
