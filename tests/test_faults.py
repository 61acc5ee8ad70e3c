"""Faults: the server SIGKILLed mid-replay, a client that drops mid-call, a full disk, a database
that goes away.

What must hold through all of them: every acknowledged event is stored exactly once, every ended
call gets its QA note (a crash too: the next start catches up), and a storage fault is answered
with an error frame that names it, never with an ack, while the server keeps running.

``LIVECOACH_FAULT_TRIALS`` (default 3) sets the number of kill trials; ``LIVECOACH_FAULT_SEED``
(default 1010, or ``random``) their kill points, so CI is reproducible and a local run can vary.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import websockets
from sqlalchemy import Engine, func, select
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from livecoach import _catchup
from livecoach import tables as T
from livecoach.auth import TokenStore
from livecoach.events import QANote, inbound_adapter, utcnow
from livecoach.ready import wait_healthy
from livecoach.settings import Settings
from livecoach.store import Store, fingerprint, make_engine
from livecoach.stream.replay import conversation_events, load_conversations

from conftest import HARPER_DEV, free_port, make_settings

# notes drafted by rules only: fast, and the drafter needs neither detectors nor tier-1
NOTES_BY_RULES = dict(postcall=True, postcall_detectors=False, tier1_backend="off")
TRIALS = int(os.environ.get("LIVECOACH_FAULT_TRIALS", "3"))
_SEED = os.environ.get("LIVECOACH_FAULT_SEED", "1010")
SEED = random.randrange(2 ** 32) if _SEED == "random" else int(_SEED)
CALLS_PER_TRIAL = 12
REPLAY_SPEED = 40.0   # Harper Valley calls last 36-125 s: 0.9-3.1 s each at this speed


def _wait(cond, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def _events(conv: dict, call_id: str) -> list[dict]:
    return [e for _, e in conversation_events({**conv, "id": call_id})]


def _expected_fingerprint(e: dict) -> str:
    return fingerprint(inbound_adapter.validate_python(e))


# ------------------------------------------------------------------ catch-up after a crash

def _store_call(store: Store, events: list[dict], *, ended_at=None) -> None:
    async def put():
        for e in events:
            if e["type"] == "call_ended" and ended_at is not None:
                e = {**e, "ended_at": ended_at.isoformat()}
            res = await store.append(inbound_adapter.validate_python(e))
            assert res.outcome == "stored", res

    asyncio.run(put())


def test_calls_that_ended_while_the_server_was_down_get_their_note_on_start(server_factory, tmp_path, caplog):
    # the state a crash leaves: calls stored and ended, their notes never drafted
    convs = load_conversations(HARPER_DEV)[:5]
    store = Store(make_settings(tmp_path).database_url)
    _store_call(store, _events(convs[0], "ended-1"))
    _store_call(store, _events(convs[1], "ended-2"))
    _store_call(store, _events(convs[2], "ended-long-ago"), ended_at=utcnow() - timedelta(days=10))
    _store_call(store, _events(convs[3], "still-open")[:-1])
    _store_call(store, _events(convs[4], "reviewed"))
    lead_note = {"call_id": "reviewed", "written_by": "a lead"}
    asyncio.run(store.save_note(QANote(call_id="reviewed", rubric_id="support-qa", rubric_version="1",
                                       status="approved", body=lead_note)))
    store.close()

    caplog.set_level(logging.INFO, logger="livecoach.catchup")
    srv = server_factory(**NOTES_BY_RULES)
    catch_up = srv.app.state.catch_up
    _wait(lambda: catch_up.state == "done", 60, "the start-up catch-up")
    assert (catch_up.found, catch_up.drafted, catch_up.failed) == (2, 2, 0)
    for cid in ("ended-1", "ended-2"):
        note = srv.store.get_note(cid)
        assert note["status"] == "draft" and note["body"]["call_id"] == cid and note["body"]["criteria"]
    assert srv.store.get_note("ended-long-ago") is None  # outside the 7-day window
    assert srv.store.get_note("still-open") is None
    reviewed = srv.store.get_note("reviewed")
    assert reviewed["status"] == "approved" and reviewed["body"] == lead_note  # a lead's note is never redrafted
    assert "catch-up: 2 calls ended without a QA note in the last 7 days" in caplog.text
    assert "catch-up: caught up 2 calls (2 drafted, 0 failed)" in caplog.text


def test_the_gateway_leaves_catch_up_to_the_workers_with_kafka(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="livecoach.catchup")
    settings = Settings(data_dir=tmp_path, bus="kafka://127.0.0.1:9092")
    record = _catchup.start(settings, store=None, bus=None, stages=[])
    assert record.state == "skipped" and record.task is None and "workers" in record.reason
    assert "catch-up skipped: bus kafka://127.0.0.1:9092, the workers own the pipeline" in caplog.text


# ------------------------------------------------------------------ SIGKILL at random points

class ServeProcess:
    """``livecoach serve`` in a subprocess on one data directory: started, SIGKILLed, started again."""

    def __init__(self, data_dir: Path, log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "LIVECOACH_DATA_DIR": str(data_dir), "LIVECOACH_DETECTORS": "false",
                    "LIVECOACH_POSTCALL": "true", "LIVECOACH_POSTCALL_DETECTORS": "false",
                    "LIVECOACH_TIER1_BACKEND": "off", "LIVECOACH_ASR_PRELOAD": "false",
                    "LIVECOACH_LOG_LEVEL": "info"}
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "livecoach.cli", "serve", "--port", str(self.port)],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT)
        wait_healthy(self.url, timeout=120, alive=lambda: self.proc.poll() is None, interval=0.05)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


async def _send_call(ws_base: str, token: str, call_id: str, timed: list[tuple[float, dict]], acked: set,
                     errors: list, *, speed: float | None, delay: float = 0.0, until_dropped: bool,
                     on_call_ended_ack=None) -> None:
    """Send one call from the server's next_seq (the resume protocol) and collect its answers.
    ``until_dropped``: the server is about to die under us; a dropped socket ends the call quietly."""
    await asyncio.sleep(delay)
    try:
        async with websockets.connect(f"{ws_base}/v1/calls/{call_id}/events", open_timeout=10,
                                      additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            ready = json.loads(await ws.recv())
            todo = [(t, e) for t, e in timed if e["seq"] >= ready["next_seq"]]
            if not todo:
                return

            async def answers() -> None:
                n = 0
                async for raw in ws:
                    f = json.loads(raw)
                    if f["type"] == "ack":
                        acked.add((call_id, f["seq"]))
                        if on_call_ended_ack is not None and f["seq"] == timed[-1][1]["seq"]:
                            on_call_ended_ack()
                    else:
                        errors.append((call_id, f))
                    n += 1
                    if n == len(todo):
                        return

            reader = asyncio.create_task(answers())
            t0, base = time.monotonic(), todo[0][0]
            for t, e in todo:
                if speed:
                    await asyncio.sleep(max(0.0, t0 + (t - base) / speed - time.monotonic()))
                await ws.send(json.dumps(e))
            await asyncio.wait_for(reader, 30)
    except (OSError, websockets.exceptions.WebSocketException):
        if not until_dropped:
            raise


def _audit(engine: Engine, expected: dict[str, list[dict]], acked: set) -> dict[str, int]:
    """Compare what the clients were told (acks) and sent with the rows in the database."""
    ids = list(expected)
    with engine.connect() as conn:
        rows = conn.execute(select(T.events.c.call_id, T.events.c.seq, T.events.c.fingerprint)
                            .where(T.events.c.call_id.in_(ids))).all()
        utterances = dict(conn.execute(select(T.utterances.c.call_id, func.count())
                                       .where(T.utterances.c.call_id.in_(ids)).group_by(T.utterances.c.call_id)).all())
        ended = conn.execute(select(func.count()).select_from(T.calls)
                             .where(T.calls.c.call_id.in_(ids), T.calls.c.status == "ended")).scalar_one()
        notes = conn.execute(select(func.count()).select_from(T.notes)
                             .where(T.notes.c.call_id.in_(ids))).scalar_one()
    want = {(cid, e["seq"]): _expected_fingerprint(e) for cid, evs in expected.items() for e in evs}
    stored = {(r.call_id, r.seq): r.fingerprint for r in rows}
    counts = Counter((r.call_id, r.seq) for r in rows)
    duplicated = sum(c - 1 for c in counts.values()) + sum(1 for k in stored if k not in want)
    duplicated += sum(max(0, utterances.get(cid, 0) - sum(e["type"] == "utterance" for e in evs))
                      for cid, evs in expected.items())
    return {"acked": len(acked), "lost": sum(1 for k in acked if stored.get(k) != want[k]),
            "missing": sum(1 for k in want if stored.get(k) != want[k]), "duplicated": duplicated,
            "ended": ended, "notes": notes}


@pytest.mark.slow
def test_sigkill_at_random_points_loses_no_acked_event_and_every_ended_call_gets_its_note(tmp_path, capsys):
    rng = random.Random(SEED)
    convs = load_conversations(HARPER_DEV)
    settings = Settings(data_dir=tmp_path)
    token = TokenStore.from_settings(settings).create(role="ingest", name="fault-test")
    engine = make_engine(settings.database_url)
    server = ServeProcess(tmp_path, tmp_path / "serve.log")
    t_start = time.monotonic()
    totals = Counter()
    kill_points, errors = [], []
    try:
        server.start()
        for trial in range(TRIALS):
            calls = {f"{c['id']}.k{trial}": conversation_events({**c, "id": f"{c['id']}.k{trial}"})
                     for c in rng.sample(convs, CALLS_PER_TRIAL)}
            delays = {cid: rng.uniform(0, 1.0) for cid in calls}
            span = max(delays[cid] + timed[-1][0] / REPLAY_SPEED for cid, timed in calls.items())
            # half the kills land at a random moment, half just as the k-th call_ended is acked (before
            # its note is drafted, most likely: the start-up catch-up must draft it)
            if rng.random() < 0.5:
                kill_at, kill_after_ended = rng.uniform(0.2, 0.9) * span, None
                kill_points.append(f"{kill_at:.2f}s")
            else:
                kill_at, kill_after_ended = span, rng.randint(1, 3)
                kill_points.append(f"ended#{kill_after_ended}")
            acked: set = set()
            ended_acks = Counter()

            async def replay_then_kill():
                killed = asyncio.Event()

                def kill() -> None:
                    if not killed.is_set():
                        server.kill()
                        killed.set()

                def on_call_ended_ack() -> None:
                    ended_acks["n"] += 1
                    if ended_acks["n"] == kill_after_ended:
                        kill()

                senders = asyncio.gather(*(
                    _send_call(server.url.replace("http", "ws"), token, cid, timed, acked, errors,
                               speed=REPLAY_SPEED, delay=delays[cid], until_dropped=True,
                               on_call_ended_ack=on_call_ended_ack)
                    for cid, timed in calls.items()))
                try:
                    await asyncio.wait_for(killed.wait(), kill_at)
                except asyncio.TimeoutError:
                    kill()
                await senders

            asyncio.run(replay_then_kill())
            expected = {cid: [e for _, e in timed] for cid, timed in calls.items()}
            before = _audit(engine, expected, acked)
            assert before["lost"] == 0, f"trial {trial}: acked events lost by the SIGKILL: {before}"
            assert len(acked) < sum(map(len, expected.values())), f"trial {trial}: the kill came after the replay"
            totals["acked_before_kill"] += len(acked)

            # start again; every client resumes its call from the server's next_seq
            server.start()

            async def resume():
                await asyncio.gather(*(
                    _send_call(server.url.replace("http", "ws"), token, cid, timed, acked, errors,
                               speed=None, until_dropped=False) for cid, timed in calls.items()))

            asyncio.run(resume())
            _wait(lambda: _audit(engine, expected, acked)["notes"] == len(calls), 60,
                  f"trial {trial}: a note for every ended call")
            after = _audit(engine, expected, acked)
            for k in ("acked", "lost", "duplicated", "ended", "notes", "missing"):
                totals[k] += after[k]
    finally:
        server.stop()
        engine.dispose()
    log = (tmp_path / "serve.log").read_text(errors="replace")
    caught_up = sum(int(n) for n in re.findall(r"catch-up: caught up (\d+) calls", log))
    starts_logged = len(re.findall(r"catch-up: (caught up|every call ended)", log))
    with capsys.disabled():
        print(f"\nfault seed {SEED} (LIVECOACH_FAULT_SEED), kill points {kill_points}, "
              f"calls per trial {CALLS_PER_TRIAL}, replay x{REPLAY_SPEED:g}")
        print(f"kill trials {TRIALS}, acked {totals['acked']}, lost {totals['lost']}, "
              f"duplicated {totals['duplicated']}, ended calls {totals['ended']}, notes {totals['notes']}")
        print(f"acked before the kills {totals['acked_before_kill']}, notes drafted by the start-up catch-up "
              f"{caught_up}, wall {time.monotonic() - t_start:.1f} s")
    assert errors == [], errors[:5]
    assert totals["lost"] == 0 and totals["duplicated"] == 0 and totals["missing"] == 0, totals
    assert totals["acked_before_kill"] > 0
    assert starts_logged == TRIALS + 1, "every start says in the log what it caught up"
    assert totals["ended"] == totals["notes"] == TRIALS * CALLS_PER_TRIAL, totals


# ------------------------------------------------------------------ a client that drops mid-call

def _open(server, call_id: str):
    ws = connect(f"{server.ws}/v1/calls/{call_id}/events", open_timeout=10,
                 additional_headers={"Authorization": f"Bearer {server.tokens['ingest']}"})
    ready = json.loads(ws.recv(timeout=10))
    assert ready["type"] == "ready", ready
    return ws, ready


def _drop(ws) -> None:
    """Leave without a close frame, unread acks in the buffer (the kernel answers with a reset)."""
    ws.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.socket.close()


def test_a_client_that_drops_mid_call_resumes_by_seq_without_loss_or_duplicates(server_factory):
    server = server_factory(tier1_backend="off")
    rng = random.Random(SEED)
    conv = max(load_conversations(HARPER_DEV), key=lambda c: len(c["turns"]))
    events = _events(conv, "drops")
    last_acked, drops, duplicate_acks = 0, 0, 0
    while True:
        ws, ready = _open(server, "drops")
        # everything acked is stored: the server never asks for less than the client was told
        assert ready["next_seq"] > last_acked
        # the client knows only its own acks: it resends after the last one; what got through is re-acked
        todo = events[last_acked:]
        burst = len(todo) if drops >= 4 else rng.randint(3, 12)
        for e in todo[:burst]:
            ws.send(json.dumps(e))
        if burst == len(todo):
            answers = [json.loads(ws.recv(timeout=10)) for _ in todo]
            ws.close()
        else:
            # read some answers, leave the rest in flight, and drop the connection
            answers = [json.loads(ws.recv(timeout=10)) for _ in range(rng.randint(0, burst - 1))]
            _drop(ws)
            drops += 1
        assert all(a["type"] == "ack" for a in answers), answers
        for a in answers:
            assert a["seq"] == last_acked + 1
            last_acked = a["seq"]
            duplicate_acks += bool(a.get("duplicate"))
        if last_acked == len(events):
            break
    assert drops == 4
    with server.store.engine.connect() as conn:
        rows = conn.execute(select(T.events.c.seq, T.events.c.fingerprint)
                            .where(T.events.c.call_id == "drops").order_by(T.events.c.seq)).all()
    assert [r.seq for r in rows] == list(range(1, len(events) + 1))
    assert [r.fingerprint for r in rows] == [_expected_fingerprint(e) for e in events]
    assert server.store.count("utterances", "drops") == sum(e["type"] == "utterance" for e in events)
    print(f"drops {drops}, duplicate re-acks after resuming {duplicate_acks}")


# ------------------------------------------------------------------ a full disk

class SmallDisk:
    """A 16 MB tmpfs for the data directory: a real ENOSPC, which SQLite reports as SQLITE_FULL."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir()
        mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(path)],
                               capture_output=True, text=True)
        if mount.returncode != 0:
            pytest.skip(f"a full disk needs a tmpfs mount (root): {mount.stderr.strip()}")

    def fill(self) -> None:
        with open(self.path / "filler", "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * (1 << 16))
                    fh.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc

    def free(self) -> None:
        (self.path / "filler").unlink()

    def close(self) -> None:
        if subprocess.run(["umount", str(self.path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(self.path)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    disk = SmallDisk(tmp_path / "small-disk")
    yield disk
    disk.close()


def _refused_new_socket(srv, role: str) -> tuple[dict, int]:
    """Open a new call socket with ``role``'s token: the frame it is answered with, and its close code."""
    late = connect(f"{srv.ws}/v1/calls/pg-other/events", open_timeout=10,
                   additional_headers={"Authorization": f"Bearer {srv.tokens[role]}"})
    frame = json.loads(late.recv(timeout=10))
    with pytest.raises(ConnectionClosed) as closed:
        late.recv(timeout=10)
    return frame, closed.value.rcvd.code


def _send(ws, frame: dict) -> dict:
    ws.send(json.dumps(frame))
    return json.loads(ws.recv(timeout=15))


def _utt(seq: int, text: str) -> dict:
    return {"type": "utterance", "seq": seq, "speaker": "customer" if seq % 2 else "agent", "text": text}


def test_a_full_disk_is_refused_with_a_clear_error_and_ingest_recovers_when_space_is_back(small_disk,
                                                                                           server_factory):
    srv = server_factory(data_dir=small_disk.path, tier1_backend="off")
    ws, _ = _open(srv, "full")
    assert _send(ws, {"type": "call_started", "seq": 1, "agent_id": "alice"})["type"] == "ack"
    long_text = "my card was charged twice and nobody has called me back " * 60   # ~3.4 kB a turn
    seq = 2
    assert _send(ws, _utt(seq, long_text)) == {"type": "ack", "seq": seq}

    small_disk.fill()
    while True:  # the log may still have room for a few pages; the next ones find the disk full
        seq += 1
        answer = _send(ws, _utt(seq, f"{seq}: {long_text}"))
        if answer["type"] != "ack":
            break
        assert seq < 3000, "the disk never filled"
    assert answer == {"type": "error", "seq": seq, "code": "storage_unavailable", "reason": "disk_full",
                      "message": "storage is full (database or disk full); not stored, send it again later"}
    refused = seq
    # nothing refused was stored; the server keeps running and says why it is unhealthy
    assert srv.store.get_call_header("full")["last_seq"] == refused - 1
    assert _send(ws, _utt(refused, f"{refused}: {long_text}"))["reason"] == "disk_full"
    health = httpx.get(srv.url + "/healthz", timeout=10)
    assert health.status_code == 503 and health.json()["reason"] == "disk_full", health.text
    other, ready = _open(srv, "full")   # reads still work: a client can learn where to resume
    assert ready["next_seq"] == refused
    other.close()

    small_disk.free()
    _wait(lambda: httpx.get(srv.url + "/healthz", timeout=10).status_code == 200, 10, "healthz to recover")
    assert _send(ws, _utt(refused, f"{refused}: {long_text}")) == {"type": "ack", "seq": refused}
    assert _send(ws, {"type": "call_ended", "seq": refused + 1}) == {"type": "ack", "seq": refused + 1}
    ws.close()
    assert srv.store.count("events", "full") == refused + 1
    assert srv.store.count("utterances", "full") == refused - 1
    print(f"disk full after {refused - 2} utterances")


# ------------------------------------------------------------------ the database goes away

class TcpProxy:
    """Forwards a local port to PostgreSQL. ``cut()`` is the database going away: the listener
    closes and every open connection is torn down; ``restore()`` listens on the same port again.
    ``freeze()`` is a database that stops answering: bytes are held (connections stay open) until
    ``thaw()``."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: asyncio.AbstractServer | None = None
        self.links: set = set()
        self.flowing = asyncio.Event()
        self.loop.call_soon_threadsafe(self.flowing.set)

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _pipe(self, reader, writer) -> None:
        try:
            while data := await reader.read(1 << 16):
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.transport.abort()

    async def _link(self, client_r, client_w) -> None:
        try:
            db_r, db_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        link = (client_w, db_w, asyncio.current_task())
        self.links.add(link)
        try:
            await asyncio.gather(self._pipe(client_r, db_w), self._pipe(db_r, client_w))
        finally:
            self.links.discard(link)

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", self.port, reuse_address=True)

    async def _cut(self) -> None:
        self.server.close()
        self.flowing.set()
        links = list(self.links)
        for client_w, db_w, _ in links:
            client_w.transport.abort()
            db_w.transport.abort()
        if links:
            await asyncio.wait([task for _, _, task in links], timeout=5)

    def restore(self) -> None:
        self._run(self._listen())

    def cut(self) -> None:
        self._run(self._cut())

    def freeze(self) -> None:
        self.loop.call_soon_threadsafe(self.flowing.clear)

    def thaw(self) -> None:
        self.loop.call_soon_threadsafe(self.flowing.set)

    def close(self) -> None:
        if self.server is not None:
            self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def test_an_unreachable_database_is_refused_quickly_and_ingest_recovers_without_restart(server_factory, pg_url):
    target = int(re.search(r"127\.0\.0\.1:(\d+)/", pg_url).group(1))
    proxy = TcpProxy(target)
    proxy.restore()
    try:
        srv = server_factory(database_url=pg_url.replace(f"127.0.0.1:{target}/", f"127.0.0.1:{proxy.port}/"),
                             tier1_backend="off")
        ws, _ = _open(srv, "pg-call")
        for frame in ({"type": "call_started", "seq": 1, "agent_id": "alice"}, _utt(2, "hello, how can I help?"),
                      _utt(3, "my card was declined")):
            assert _send(ws, frame)["type"] == "ack"

        proxy.cut()
        t0 = time.monotonic()
        answer = _send(ws, _utt(4, "let me check that for you"))
        refused_in = time.monotonic() - t0
        assert answer == {"type": "error", "seq": 4, "code": "storage_unavailable", "reason": "unreachable",
                          "message": "the database is unreachable; not stored, send it again later"}
        assert refused_in < 5, f"refusing took {refused_in:.1f} s"
        t0 = time.monotonic()
        health = httpx.get(srv.url + "/healthz", timeout=15)
        health_in = time.monotonic() - t0
        assert health.status_code == 503 and health_in < 5
        assert health.json() == {"status": "storage_unavailable", "reason": "unreachable",
                                 "message": "the database is unreachable"}
        # a new socket cannot be told where to resume (nor, with a token not seen lately, be
        # authenticated): it is refused with the reason, not left hanging
        for role in ("ingest", "admin"):
            assert _refused_new_socket(srv, role) == (
                {"type": "error", "seq": None, "code": "storage_unavailable", "reason": "unreachable",
                 "message": "the database is unreachable; connect again later"}, 1013)

        proxy.restore()  # the database is back: the same socket goes on, no restart
        _wait(lambda: httpx.get(srv.url + "/healthz", timeout=15).status_code == 200, 15, "healthz to recover")
        assert _send(ws, _utt(4, "let me check that for you")) == {"type": "ack", "seq": 4}
        assert _send(ws, {"type": "call_ended", "seq": 5}) == {"type": "ack", "seq": 5}
        ws.close()
        print(f"unreachable database: ingest refused in {refused_in:.2f} s, healthz answered 503 in {health_in:.2f} s")
    finally:
        proxy.close()
    direct = make_engine(pg_url)
    try:
        with direct.connect() as conn:
            seqs = conn.execute(select(T.events.c.seq).where(T.events.c.call_id == "pg-call")
                                .order_by(T.events.c.seq)).scalars().all()
        assert seqs == [1, 2, 3, 4, 5]
    finally:
        direct.dispose()


def test_a_database_that_stops_answering_is_answered_within_the_deadline(server_factory, pg_url):
    target = int(re.search(r"127\.0\.0\.1:(\d+)/", pg_url).group(1))
    proxy = TcpProxy(target)
    proxy.restore()
    try:
        srv = server_factory(database_url=pg_url.replace(f"127.0.0.1:{target}/", f"127.0.0.1:{proxy.port}/"),
                             tier1_backend="off", storage_timeout_s=1.5)
        # a token check that misses the cache would wait on the frozen database: keep this one cached
        srv.app.state.tokens.cache_seconds = 120
        ws, _ = _open(srv, "pg-hung")
        for frame in ({"type": "call_started", "seq": 1, "agent_id": "alice"}, _utt(2, "hello, how can I help?")):
            assert _send(ws, frame)["type"] == "ack"

        proxy.freeze()  # connected, silent: no reset, no timeout from the network
        t0 = time.monotonic()
        answer = _send(ws, _utt(3, "my card was declined"))
        answered_in = time.monotonic() - t0
        assert answer == {"type": "error", "seq": 3, "code": "storage_unavailable", "reason": "timeout",
                          "message": "storage did not answer within 1.5 s; the event may still be stored: "
                                     "send it again (an identical resend is acked once)"}
        assert answered_in < 3, f"answering took {answered_in:.1f} s"
        # a new socket (its token checked before the freeze) is not told where to resume
        # after 1.5 s: it is refused with the reason
        assert _refused_new_socket(srv, "ingest") == (
            {"type": "error", "seq": None, "code": "storage_unavailable", "reason": "timeout",
             "message": "the database did not answer within 1.5 s; connect again later"}, 1013)
        t0 = time.monotonic()
        health = httpx.get(srv.url + "/healthz", timeout=15)
        health_in = time.monotonic() - t0
        assert health.status_code == 503 and health.json()["reason"] in ("timeout", "unreachable"), health.text
        assert health_in < 7, f"healthz took {health_in:.1f} s"

        proxy.thaw()
        _wait(lambda: httpx.get(srv.url + "/healthz", timeout=15).status_code == 200, 15, "healthz to recover")
        # the held write committed after all: the resend is re-acked as a duplicate, stored once
        again = _send(ws, _utt(3, "my card was declined"))
        assert again == {"type": "ack", "seq": 3, "duplicate": True}
        assert _send(ws, {"type": "call_ended", "seq": 4}) == {"type": "ack", "seq": 4}
        ws.close()
        # a late commit still goes down the pipeline: four events, each counted stored once
        assert srv.app.state.metrics["events_stored"] == 4
        print(f"hung database: ingest answered in {answered_in:.2f} s, healthz in {health_in:.2f} s")
    finally:
        proxy.close()
    direct = make_engine(pg_url)
    try:
        with direct.connect() as conn:
            seqs = conn.execute(select(T.events.c.seq).where(T.events.c.call_id == "pg-hung")
                                .order_by(T.events.c.seq)).scalars().all()
        assert seqs == [1, 2, 3, 4]
    finally:
        direct.dispose()
