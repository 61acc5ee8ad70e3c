"""Storage on both backends: seq rules, idempotency, migrations as the only schema source."""

from __future__ import annotations

import asyncio

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from livecoach.events import AgentAction, CallEnded, CallStarted, EvidenceRef, QANote, Signal, Utterance
from livecoach.store import Store, current_revision, make_engine


def _all_metadata():
    """The tables of every package (each package registers its own on the shared metadata)."""
    import importlib
    import pkgutil

    import livecoach
    from livecoach.tables import metadata

    for pkg in ("livecoach.postcall", "livecoach.signals", "livecoach.lead_console", "livecoach.stream"):
        try:
            mod = importlib.import_module(pkg)
        except ImportError:
            continue
        for info in pkgutil.iter_modules(mod.__path__):
            if "table" in info.name:
                importlib.import_module(f"{pkg}.{info.name}")
    del livecoach
    return metadata


@pytest.fixture
def store(db_url):
    s = Store(db_url)
    yield s
    s.close()


def run(coro):
    return asyncio.run(coro)


def test_migrations_build_exactly_the_declared_schema(db_url):
    engine = make_engine(db_url)
    Store(db_url).close()
    assert current_revision(engine) is not None
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), _all_metadata())
    assert diffs == []
    assert {"calls", "events", "utterances", "actions", "signals", "notes", "tokens", "feedback"} <= \
        set(inspect(engine).get_table_names())


def test_reopening_keeps_the_data(db_url):
    async def write(s):
        await s.append(CallStarted(call_id="keep", seq=1, agent_id="a"))
        await s.append(Utterance(call_id="keep", seq=2, speaker="customer", text="still here?"))

    s = Store(db_url)
    asyncio.run(write(s))
    s.close()
    s = Store(db_url)  # upgrade on start is a no-op on a current schema
    assert [u["text"] for u in s.get_call("keep")["utterances"]] == ["still here?"]
    s.close()


def test_seq_rules(store):
    async def go():
        ok = await store.append(CallStarted(call_id="c", seq=1, agent_id="a"))
        gap = await store.append(Utterance(call_id="c", seq=3, speaker="agent", text="hi"))
        first = await store.append(Utterance(call_id="c", seq=2, speaker="agent", text="hi"))
        dup = await store.append(Utterance(call_id="c", seq=2, speaker="agent", text="hi"))
        clash = await store.append(Utterance(call_id="c", seq=2, speaker="agent", text="bye"))
        act = await store.append(AgentAction(call_id="c", seq=3, name="refund", args={"amount": 5}))
        end = await store.append(CallEnded(call_id="c", seq=4, csat=3))
        late = await store.append(Utterance(call_id="c", seq=5, speaker="agent", text="hi"))
        return ok, gap, first, dup, clash, act, end, late

    ok, gap, first, dup, clash, act, end, late = run(go())
    assert (ok.outcome, first.outcome, act.outcome, end.outcome) == ("stored",) * 4
    assert gap.code == "seq_gap" and dup.outcome == "duplicate" and clash.code == "seq_conflict"
    assert late.code == "call_ended"
    assert store.count("events", "c") == 4 and store.count("utterances", "c") == 1
    call = store.get_call("c")
    assert call["status"] == "ended" and call["csat"] == 3 and call["actions"][0]["args"] == {"amount": 5}
    assert [type(e).__name__ for e in store.call_events("c")] == \
        ["CallStarted", "Utterance", "AgentAction", "CallEnded"]


def test_many_concurrent_calls_are_group_committed_without_loss(store):
    async def call(i):
        cid = f"call-{i}"
        results = [await store.append(CallStarted(call_id=cid, seq=1, agent_id="a"))]
        for seq in range(2, 22):
            results.append(await store.append(Utterance(call_id=cid, seq=seq, speaker="agent", text=f"t{seq}")))
        return results

    async def go():
        return await asyncio.gather(*(call(i) for i in range(40)))

    results = [r for rs in run(go()) for r in rs]
    assert all(r.outcome == "stored" for r in results)
    assert store.count("events") == 40 * 21 and store.count("utterances") == 40 * 20


def test_server_assigned_seq_starts_an_unknown_call(store):
    async def go():
        start = CallStarted(call_id="v", seq=1, channel="voice", agent_id="unknown")
        a = await store.append_server("v", lambda s: Utterance(call_id="v", seq=s, speaker="customer",
                                                               text="hello", source="asr"), start=start)
        b = await store.append_server("v", lambda s: Utterance(call_id="v", seq=s, speaker="agent",
                                                               text="hi there", source="asr"))
        return a, b

    a, b = run(go())
    assert (a.seq, b.seq) == (2, 3)
    call = store.get_call("v")
    assert call["channel"] == "voice" and [u["source"] for u in call["utterances"]] == ["asr", "asr"]


def test_signals_are_stored_once_and_notes_keep_the_leads_decision(store):
    sig = Signal(call_id="s", kind="churn_intent", confidence=0.93,
                 evidence=[EvidenceRef(seq=2, excerpt="close my account", t=65.0)])

    async def go():
        await store.append(CallStarted(call_id="s", seq=1, agent_id="a"))
        first = await store.save_signal(sig)
        again = await store.save_signal(Signal(call_id="s", kind="churn_intent", confidence=0.5,
                                               evidence=[EvidenceRef(seq=2, excerpt="close my account")]))
        n1 = await store.save_note(QANote(call_id="s", rubric_id="default", rubric_version="1", body={"v": 1}))
        await store.run_write(lambda c: c.execute(
            __import__("sqlalchemy").text("UPDATE notes SET status='approved' WHERE call_id='s'")))
        n2 = await store.save_note(QANote(call_id="s", rubric_id="default", rubric_version="1", body={"v": 2}))
        return first, again, n1, n2

    first, again, n1, n2 = run(go())
    assert (first, again, n1, n2) == (True, False, True, False)
    assert store.count("signals", "s") == 1
    assert store.get_note("s")["body"] == {"v": 1} and store.get_note("s")["status"] == "approved"
