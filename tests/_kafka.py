"""Helpers for the Kafka tests: worker processes, feeding calls like the gateway does, reading results."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from livecoach.bus import CALLS
from livecoach.events import inbound_adapter, utcnow
from livecoach.stream.broker import die_with_parent
from livecoach.stream.replay import conversation_events

TESTS = Path(__file__).resolve().parent


class Workers:
    """``livecoach worker`` processes (the real command), each logging to its own file."""

    def __init__(self, tmp_path: Path, env: dict[str, str]):
        self.tmp_path = tmp_path
        self.env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def start(self, *args: str) -> subprocess.Popen:
        log = self.tmp_path / f"worker-{len(self.procs)}.log"
        cmd = [sys.executable, "-m", "livecoach.cli", "worker", "--loglevel", "info", *args]
        p = subprocess.Popen(cmd, env=self.env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        self.procs.append(p)
        self.logs.append(log)
        return p

    def log(self, i: int) -> str:
        return self.logs[i].read_text(errors="replace")

    def wait_ready(self, i: int, since: int = 0, timeout: float = 120) -> None:
        """Until worker ``i`` has been given its partitions (Faust prints 'Worker ready')."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[i].poll() is not None:
                raise RuntimeError(f"worker {i} exited with {self.procs[i].returncode}:\n{self.log(i)[-4000:]}")
            if self.log(i).count("Worker ready") > since:
                return
            time.sleep(0.2)
        raise TimeoutError(f"worker {i} not ready in {timeout:.0f} s:\n{self.log(i)[-4000:]}")

    def kill(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait(timeout=10)

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


def worker_env(settings) -> dict[str, str]:
    """The environment that gives a worker process the same settings as ``settings``."""
    env = {}
    for name in ("bus", "database_url", "data_dir", "cache_dir", "detectors", "postcall", "postcall_detectors",
                 "phase", "kafka_partitions", "kafka_topic_prefix", "kafka_session_timeout_s", "tier1_backend"):
        if name in type(settings).model_fields:
            v = getattr(settings, name)
            env[f"LIVECOACH_{name.upper()}"] = str(v).lower() if isinstance(v, bool) else str(v)
    return env


async def feed(store, bus, convs: list[dict[str, Any]], *, settle, concurrency: int = 8) -> int:
    """What the gateway does for each inbound event: store it, then publish it.

    The calls run concurrently up to their last event; then they end one at a time, in input order,
    ``await settle()`` between them: the post-call stage reads the agent's earlier notes, so which
    call counts as "previous" must not depend on a race.
    """
    sem = asyncio.Semaphore(concurrency)
    ends = []

    async def put(ev) -> None:
        res = await store.append(ev)
        assert res.outcome == "stored", res
        await bus.publish(CALLS, ev.call_id, ev)

    async def one(conv):
        async with sem:
            events = [inbound_adapter.validate_python(raw) for _, raw in conversation_events(conv)]
            for ev in events[:-1]:
                await put(ev)
            return events[-1]

    ends = await asyncio.gather(*(one(c) for c in convs))
    await settle()
    for raw_end in ends:
        await put(raw_end.model_copy(update={"ended_at": utcnow()}))
        await settle()
    return len(ends)


_VOLATILE = ("created_at", "updated_at", "drafted_at", "stored_at", "generated_at")


def _stable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _stable(v) for k, v in sorted(x.items()) if k not in _VOLATILE and not k.endswith("_ms")}
    if isinstance(x, list):
        return [_stable(v) for v in x]
    if isinstance(x, float):
        return round(x, 4)
    return x


def outcome(store) -> dict[str, Any]:
    """Signals and notes as a comparable value (wall-clock times and timings left out)."""
    from sqlalchemy import select

    from livecoach import tables as T

    with store.engine.connect() as conn:
        sigs = sorted(
            (r.call_id, r.kind, r.audience, r.tier, round(r.confidence, 4), r.id, r.message,
             tuple(e["seq"] for e in r.evidence or []))
            for r in conn.execute(select(T.signals)))
        notes = {r.call_id: (r.rubric_id, r.rubric_version, r.status, _stable(r.body))
                 for r in conn.execute(select(T.notes))}
    return {"signals": sigs, "notes": notes}


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two JSON-like values differ, as ``path: a != b`` lines (for readable failures)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += differences(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{path}.{k}")
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r:.200} != {b!r:.200}"]
