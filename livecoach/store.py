"""Durable storage: SQLite (WAL) by default, PostgreSQL by URL.

Writes go through one writer thread that commits in groups (many events, one transaction, one
fsync) and answers each caller only after the commit: an ack sent after ``await store.append(...)``
means the event is on disk. Reads run in worker threads and never block the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import queue
import shutil
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from typing import Any, Callable, Iterable, Literal

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from livecoach import tables as T
from livecoach.events import (AgentAction, CallEnded, CallStarted, Event, QANote, Signal, Utterance,
                              utcnow)

log = logging.getLogger(__name__)

Outcome = Literal["stored", "duplicate", "rejected"]


@dataclass(frozen=True)
class WriteResult:
    outcome: Outcome
    seq: int | None = None
    code: str = ""
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome != "rejected"


class StorageUnavailable(RuntimeError):
    """The database cannot take writes (unreachable, disk full …). Nothing was acknowledged.

    ``reason`` names the fault for clients and health checks: ``disk_full``, ``unreachable``,
    ``read_only``, ``closed`` or ``error`` (anything else the database refused)."""

    def __init__(self, message: str, reason: str = "error"):
        super().__init__(message)
        self.reason = reason


# PostgreSQL: give up connecting after PG_CONNECT_TIMEOUT_S, and notice a silent network (no RST)
# within about PG_DEAD_PEER_S instead of waiting on a dead socket for the kernel's default ~15 min.
PG_CONNECT_TIMEOUT_S = 5
PG_DEAD_PEER_S = 10
# after a disk-full failure, health stays "storage_unavailable" until the SQLite disk has this much room
HEALTHY_FREE_BYTES = 4 << 20


def normalise_url(url: str) -> str:
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def make_engine(url: str, *, sqlite_synchronous: str = "FULL") -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _rec):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={sqlite_synchronous}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    pg = {"connect_timeout": PG_CONNECT_TIMEOUT_S, "keepalives": 1, "keepalives_idle": 5,
          "keepalives_interval": 2, "keepalives_count": 2, "tcp_user_timeout": PG_DEAD_PEER_S * 1000}
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10, pool_timeout=10,
                         connect_args=pg if url.startswith("postgresql") else {})


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("livecoach") / "migrations"))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with the Alembic migrations (the only way it changes)."""
    cfg = alembic_config(str(engine.url.render_as_string(hide_password=False)))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def fingerprint(event: Event) -> str:
    """What the client actually said (defaults the server filled in do not count)."""
    raw = json.dumps(event.model_dump(mode="json", exclude_unset=True), sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()


def _aware(dt: datetime | None) -> datetime | None:
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt


class Store:
    """All reads and writes of calls, events, signals, notes and tokens."""

    def __init__(self, url: str, *, migrate: bool = True, batch_max: int = 256,
                 sqlite_synchronous: str = "FULL"):
        self.url = normalise_url(url)
        self.engine = make_engine(self.url, sqlite_synchronous=sqlite_synchronous)
        if migrate:
            upgrade(self.engine)
        self._writer = _GroupWriter(self.engine, batch_max)
        self._pinging: asyncio.Future | None = None

    # ---------------------------------------------------------------- lifecycle
    def close(self) -> None:
        self._writer.close()
        self.engine.dispose()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    # ---------------------------------------------------------------- writes (async, group-committed)
    async def append(self, ev: Event) -> WriteResult:
        """Store one client event with its seq checked; returns after the commit."""
        return await self._writer.submit(lambda conn: _append(conn, ev))

    async def append_server(self, call_id: str, build: Callable[[int], Event],
                            start: CallStarted | None = None) -> WriteResult:
        """Store an event whose seq the server assigns (ASR utterances). ``start`` opens the call
        first if it does not exist yet (audio for an unknown call starts a voice call)."""
        return await self._writer.submit(lambda conn: _append_server(conn, call_id, build, start))

    async def save_signal(self, sig: Signal) -> bool:
        """Store a signal once (its id is deterministic); False if it was already there."""
        return await self._writer.submit(lambda conn: _save_signal(conn, sig))

    async def save_note(self, note: QANote, *, replace_draft: bool = True) -> bool:
        return await self._writer.submit(lambda conn: _save_note(conn, note, replace_draft))

    async def run_write(self, fn: Callable[[Connection], Any]) -> Any:
        """Run ``fn(conn)`` inside the writer's transaction (for other packages' tables)."""
        return await self._writer.submit(fn)

    async def health(self, timeout: float = 5.0) -> dict[str, Any]:
        """``{"status": "ok"}`` when the database answers a read and (after a write failed) a small
        probe write commits again; else ``{"status": "storage_unavailable", "reason", "message"}``."""
        try:
            if self._pinging is None or self._pinging.done():  # a ping stuck on a hung database is shared
                self._pinging = asyncio.ensure_future(asyncio.to_thread(self._ping))
                self._pinging.add_done_callback(lambda f: f.cancelled() or f.exception())
            await asyncio.wait_for(asyncio.shield(self._pinging), timeout)
            fault = self._writer.failure
            if fault is not None:  # the last write failed: healthy again once a write commits
                if fault.reason == "disk_full" and self._free_bytes() < HEALTHY_FREE_BYTES:
                    raise fault
                await asyncio.wait_for(self._writer.submit(_probe_write), timeout)
        except StorageUnavailable as exc:
            return {"status": "storage_unavailable", "reason": exc.reason, "message": str(exc)}
        except SQLAlchemyError as exc:
            fault = storage_fault(exc)
            return {"status": "storage_unavailable", "reason": fault.reason, "message": str(fault)}
        except asyncio.TimeoutError:
            return {"status": "storage_unavailable", "reason": "timeout",
                    "message": f"the database did not answer within {timeout:g} s"}
        return {"status": "ok"}

    def _ping(self) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def _free_bytes(self) -> float:
        """Free space where the SQLite file lives (PostgreSQL's disk is the server's business)."""
        db = self.engine.url.database
        if self.dialect != "sqlite" or not db or db == ":memory:":
            return float("inf")
        return shutil.disk_usage(os.path.dirname(os.path.abspath(db))).free

    # ---------------------------------------------------------------- reads (sync; wrap with to_thread)
    def get_call(self, call_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(T.calls).where(T.calls.c.call_id == call_id)).mappings().first()
            if row is None:
                return None
            call = _call_dict(row)
            call["utterances"] = [
                dict(r) for r in conn.execute(
                    select(T.utterances.c.seq, T.utterances.c.speaker, T.utterances.c.text,
                           T.utterances.c.t_start, T.utterances.c.t_end, T.utterances.c.source,
                           T.utterances.c.confidence, T.utterances.c.words)
                    .where(T.utterances.c.call_id == call_id).order_by(T.utterances.c.seq)).mappings()
            ]
            for u in call["utterances"]:
                u["final"] = True
            call["actions"] = [
                dict(r) for r in conn.execute(
                    select(T.actions.c.seq, T.actions.c.name, T.actions.c.args, T.actions.c.t)
                    .where(T.actions.c.call_id == call_id).order_by(T.actions.c.seq)).mappings()
            ]
            call["signals"] = [_signal_dict(r) for r in conn.execute(
                select(T.signals).where(T.signals.c.call_id == call_id)
                .order_by(T.signals.c.created_at)).mappings()]
            return call

    def get_call_header(self, call_id: str) -> dict[str, Any] | None:
        """The call row alone (status, last_seq, agent_id …), without its transcript."""
        with self.engine.connect() as conn:
            row = conn.execute(select(T.calls).where(T.calls.c.call_id == call_id)).mappings().first()
            return _call_dict(row) if row else None

    def list_calls(self, *, status: str | None = None, agent_id: str | None = None,
                   limit: int = 500) -> list[dict[str, Any]]:
        q = select(T.calls).order_by(T.calls.c.started_at.desc()).limit(limit)
        if status:
            q = q.where(T.calls.c.status == status)
        if agent_id:
            q = q.where(T.calls.c.agent_id == agent_id)
        with self.engine.connect() as conn:
            out = [_call_dict(r) for r in conn.execute(q).mappings()]
            if out:
                ids = [c["call_id"] for c in out]
                counts = dict(conn.execute(
                    select(T.utterances.c.call_id, func.count()).where(T.utterances.c.call_id.in_(ids))
                    .group_by(T.utterances.c.call_id)).all())
                sigs = dict(conn.execute(
                    select(T.signals.c.call_id, func.count()).where(T.signals.c.call_id.in_(ids))
                    .group_by(T.signals.c.call_id)).all())
                for c in out:
                    c["utterance_count"] = counts.get(c["call_id"], 0)
                    c["signal_count"] = sigs.get(c["call_id"], 0)
            return out

    def call_events(self, call_id: str) -> list[Event]:
        """The call's stored inbound events in seq order (what the post-call stage and replays read)."""
        from livecoach.events import parse_event

        with self.engine.connect() as conn:
            rows = conn.execute(select(T.events.c.body).where(T.events.c.call_id == call_id)
                                .order_by(T.events.c.seq)).scalars()
            return [parse_event(b) for b in rows]

    def count(self, table: str, call_id: str | None = None) -> int:
        t = T.metadata.tables[table]
        q = select(func.count()).select_from(t)
        if call_id is not None:
            q = q.where(t.c.call_id == call_id)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def get_note(self, call_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(T.notes).where(T.notes.c.call_id == call_id)).mappings().first()
            return dict(row) if row else None


# ---------------------------------------------------------------------- write operations

def _reject(seq: int | None, code: str, message: str) -> WriteResult:
    return WriteResult("rejected", seq, code, message)


def _call_row(conn: Connection, call_id: str):
    return conn.execute(select(T.calls.c.status, T.calls.c.last_seq)
                        .where(T.calls.c.call_id == call_id)).first()


def _append(conn: Connection, ev: Event) -> WriteResult:
    seq = ev.seq  # type: ignore[union-attr]
    row = _call_row(conn, ev.call_id)
    last = row.last_seq if row else 0
    if seq <= last:
        stored = conn.execute(select(T.events.c.fingerprint).where(
            T.events.c.call_id == ev.call_id, T.events.c.seq == seq)).scalar()
        if stored == fingerprint(ev):
            return WriteResult("duplicate", seq)
        return _reject(seq, "seq_conflict",
                       f"seq {seq} was already stored with different content; next expected seq is {last + 1}")
    if seq > last + 1:
        return _reject(seq, "seq_gap", f"seq gap: expected seq {last + 1}, got {seq}")
    if row is None and not isinstance(ev, CallStarted):
        return _reject(seq, "call_not_started",
                       f"call {ev.call_id} has not started: the first event (seq 1) must be call_started")
    if row is not None and isinstance(ev, CallStarted):
        return _reject(seq, "call_already_started", f"call {ev.call_id} already started")
    if row is not None and row.status == "ended":
        return _reject(seq, "call_ended", f"call {ev.call_id} has ended; no further events are accepted")
    _insert(conn, ev, seq, row is None)
    return WriteResult("stored", seq)


def _append_server(conn: Connection, call_id: str, build: Callable[[int], Event],
                   start: CallStarted | None) -> WriteResult:
    row = _call_row(conn, call_id)
    if row is None:
        if start is None:
            return _reject(None, "call_not_started", f"call {call_id} has not started")
        _insert(conn, start, 1, True)
        row = _call_row(conn, call_id)
    if row.status == "ended":
        return _reject(None, "call_ended", f"call {call_id} has ended")
    seq = row.last_seq + 1
    ev = build(seq)
    _insert(conn, ev, seq, False)
    return WriteResult("stored", seq)


def _insert(conn: Connection, ev: Event, seq: int, new_call: bool) -> None:
    if isinstance(ev, CallStarted):
        conn.execute(insert(T.calls).values(
            call_id=ev.call_id, channel=ev.channel, agent_id=ev.agent_id, queue=ev.queue, tags=list(ev.tags),
            customer=dict(ev.customer), status="active", last_seq=seq, started_at=_aware(ev.started_at)))
    conn.execute(insert(T.events).values(call_id=ev.call_id, seq=seq, type=ev.type, body=ev.canonical(),
                                         fingerprint=fingerprint(ev), stored_at=utcnow()))
    if isinstance(ev, CallStarted):
        return
    values: dict[str, Any] = {"last_seq": seq}
    if isinstance(ev, Utterance):
        conn.execute(insert(T.utterances).values(
            call_id=ev.call_id, seq=seq, speaker=ev.speaker, text=ev.text, t_start=ev.t_start, t_end=ev.t_end,
            source=ev.source, confidence=ev.confidence,
            words=[w.model_dump() for w in ev.words] if ev.words else None))
    elif isinstance(ev, AgentAction):
        conn.execute(insert(T.actions).values(call_id=ev.call_id, seq=seq, name=ev.name, args=ev.args, t=ev.t))
    elif isinstance(ev, CallEnded):
        values.update(status="ended", ended_at=_aware(ev.ended_at), csat=ev.csat)
    conn.execute(update(T.calls).where(T.calls.c.call_id == ev.call_id).values(**values))


def _save_signal(conn: Connection, sig: Signal) -> bool:
    if conn.execute(select(T.signals.c.id).where(T.signals.c.id == sig.id)).first():
        return False
    if _call_row(conn, sig.call_id) is None:
        raise ValueError(f"signal for unknown call {sig.call_id}")
    conn.execute(insert(T.signals).values(
        id=sig.id, call_id=sig.call_id, kind=sig.kind, confidence=sig.confidence, tier=sig.tier,
        audience=sig.audience, evidence=[e.model_dump() for e in sig.evidence], message=sig.message,
        detector=sig.detector, details=sig.details, created_at=_aware(sig.created_at)))
    return True


def _save_note(conn: Connection, note: QANote, replace_draft: bool) -> bool:
    now = utcnow()
    row = conn.execute(select(T.notes.c.status).where(T.notes.c.call_id == note.call_id)).first()
    if row is None:
        conn.execute(insert(T.notes).values(call_id=note.call_id, rubric_id=note.rubric_id,
                                            rubric_version=note.rubric_version, status=note.status,
                                            body=note.body, created_at=now, updated_at=now))
        return True
    if row.status != "draft" or not replace_draft:
        return False  # a lead's decision is never overwritten by the machine
    conn.execute(update(T.notes).where(T.notes.c.call_id == note.call_id).values(
        rubric_id=note.rubric_id, rubric_version=note.rubric_version, status=note.status, body=note.body,
        updated_at=now))
    return True


def _call_dict(row) -> dict[str, Any]:
    d = dict(row)
    for k in ("started_at", "ended_at"):
        d[k] = _aware(d.get(k))
    return d


def _signal_dict(row) -> dict[str, Any]:
    d = dict(row)
    d["created_at"] = _aware(d["created_at"])
    return d


# ---------------------------------------------------------------------- group commit

class _GroupWriter:
    """One thread, one transaction per batch: callers wait for the commit of their batch.

    If a batch fails as a whole (a constraint raced by another process, say), each operation is
    retried alone so one bad write never takes the others down. If the database itself is gone,
    every waiting caller gets :class:`StorageUnavailable` and nothing is acknowledged.
    """

    def __init__(self, engine: Engine, batch_max: int):
        self.engine = engine
        self.batch_max = batch_max
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="livecoach-writer", daemon=True)
        self._closed = False
        # the last StorageUnavailable while no commit has succeeded since (read by health checks)
        self.failure: StorageUnavailable | None = None
        self._thread.start()

    async def submit(self, op: Callable[[Connection], Any]) -> Any:
        if self._closed:
            raise StorageUnavailable("storage is closed (the server is stopping)", "closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self._q.put((op, fut, loop))
        return await fut

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._q.put(None)
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < self.batch_max:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list) -> None:
        try:
            with self.engine.begin() as conn:
                results = [(fut, loop, True, op(conn)) for op, fut, loop in batch]
        except SQLAlchemyError as exc:
            if len(batch) == 1 or _is_unavailable(exc):
                results = [(fut, loop, False, _wrap(exc)) for _, fut, loop in batch]
            else:
                results = [self._one(op, fut, loop) for op, fut, loop in batch]
        except Exception as exc:  # a bug in one op: retry each alone
            if len(batch) == 1:
                results = [(batch[0][1], batch[0][2], False, exc)]
            else:
                results = [self._one(op, fut, loop) for op, fut, loop in batch]
        faults = [value for _, _, ok, value in results if not ok and isinstance(value, StorageUnavailable)]
        if faults:
            self.failure = faults[-1]
        elif any(ok for _, _, ok, _ in results):
            self.failure = None
        for fut, loop, ok, value in results:
            loop.call_soon_threadsafe(_resolve, fut, ok, value)

    def _one(self, op, fut, loop):
        try:
            with self.engine.begin() as conn:
                return (fut, loop, True, op(conn))
        except SQLAlchemyError as exc:
            return (fut, loop, False, _wrap(exc))
        except Exception as exc:
            return (fut, loop, False, exc)


def _is_unavailable(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(s in text for s in ("disk", "full", "connection", "could not connect", "readonly",
                                   "read-only", "unable to open", "server closed", "terminating"))


def _wrap(exc: SQLAlchemyError) -> Exception:
    from sqlalchemy.exc import IntegrityError

    if isinstance(exc, IntegrityError):
        return exc
    log.error("storage write failed: %s", exc)
    return storage_fault(exc)


def storage_fault(exc: Exception) -> StorageUnavailable:
    """Name the fault in words a client can act on (details, e.g. the database host, stay in the log)."""
    text = str(exc).lower()
    if any(s in text for s in ("disk is full", "no space left", "disk full", "quota")):
        return StorageUnavailable("storage is full (database or disk full)", "disk_full")
    if any(s in text for s in ("readonly", "read-only")):
        return StorageUnavailable("storage is read-only", "read_only")
    if any(s in text for s in ("connection", "could not connect", "server closed", "terminating",
                               "timeout expired", "timed out", "unable to open")):
        return StorageUnavailable("the database is unreachable", "unreachable")
    orig = getattr(exc, "orig", None) or exc
    return StorageUnavailable(f"storage failed ({type(orig).__name__})", "error")


def _probe_write(conn: Connection) -> None:
    """The smallest real write: SQLite bumps the header's user_version (one page, so it fails when
    the disk is full); PostgreSQL runs a statement on the writer's connection."""
    if conn.dialect.name == "sqlite":
        v = int(conn.exec_driver_sql("PRAGMA user_version").scalar() or 0)
        conn.exec_driver_sql(f"PRAGMA user_version = {(v + 1) % 1_000_000}")
    else:
        conn.exec_driver_sql("SELECT 1")


def _resolve(fut: asyncio.Future, ok: bool, value: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


def iter_jsonl(lines: Iterable[str]) -> Iterable[dict[str, Any]]:
    for line in lines:
        line = line.strip()
        if line:
            yield json.loads(line)
