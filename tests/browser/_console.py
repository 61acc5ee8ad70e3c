"""Helpers and fixtures for the console's browser tests: a running server plus what the tests need
to drive it, and a headless Chromium (Debian's package, driven by Playwright).

Never ``playwright install``: it downloads browsers, which fails on these offline machines.
``.ci/run`` installs the Debian ``chromium`` package.

The fixtures live here, not in a ``tests/browser/conftest.py``: a second module named ``conftest``
would shadow ``tests/conftest.py`` for the test modules that ``from conftest import ...``.
Test modules import them: ``from _console import chromium, console, page, with_postcall``.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
HARPER = ROOT.parent / "shared" / "data" / "harper_valley" / "calls_dev.jsonl"
DEMO = ROOT / "livecoach" / "demo_calls.jsonl"


@dataclass
class Console:
    """A running server plus what the browser tests need to drive it."""

    server: Any
    requests: list[str] = field(default_factory=list)

    @property
    def app(self):
        return self.server.app

    @property
    def feed(self):
        return self.app.state.stages["board"]

    def run(self, coro, timeout: float = 30):
        """Run a coroutine on the server's own event loop (its bus and store live there)."""
        return asyncio.run_coroutine_threadsafe(coro, self.feed.loop).result(timeout)

    def publish_signal(self, sig) -> None:
        from livecoach.bus import SIGNALS

        self.run(self.app.state.bus.publish(SIGNALS, sig.call_id, sig))

    def wait_stored(self, signal_id: str, timeout: float = 10) -> None:
        import time

        from livecoach.lead_console._data import get_signal

        deadline = time.monotonic() + timeout
        while get_signal(self.app.state.store, signal_id) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"signal {signal_id} was not stored")
            time.sleep(0.05)

    def replay_in_background(self, convs: list[dict[str, Any]], speed: float) -> threading.Thread:
        from livecoach.stream.replay import replay_conversations

        out: dict[str, Any] = {}

        def go():
            out["summary"] = asyncio.run(replay_conversations(convs, url=self.server.url, token=self.server.tokens["ingest"],
                                                              speed=speed, concurrency=len(convs)))

        th = threading.Thread(target=go, daemon=True)
        th.result = out  # type: ignore[attr-defined]
        th.start()
        return th

    def sign_in(self, page, role: str = "lead") -> None:
        page.goto(self.server.url + "/console")
        page.fill("#token", self.server.tokens[role])
        page.click("button[type=submit]")

    def shot(self, page, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


def seed_history(console: Console, weeks: int = 6) -> list[str]:
    """Ended calls over past weeks with signals and cues (for the metrics trends). Their events go
    on the calls topic as ingest would send them, so post-call drafts their notes itself."""
    from livecoach.bus import CALLS
    from livecoach.events import CallEnded, CallStarted, EvidenceRef, Signal, Utterance

    store = console.app.state.store
    bus = console.app.state.bus
    agents = ["elizabeth", "michael", "jennifer", "david"]
    queues = ["replace card", "check balance", "transfer money", "reset password"]
    now = datetime.now(timezone.utc)
    ids: list[str] = []

    async def go():
        n = 0
        for w in range(weeks, 0, -1):
            for k in range(4 + w % 3):
                n += 1
                cid = f"hist-{n:03d}"
                ids.append(cid)
                agent, queue = agents[n % 4], queues[(n // 2) % 4]
                start = now - timedelta(weeks=w, hours=k)
                for ev in (CallStarted(call_id=cid, seq=1, agent_id=agent, queue=queue, started_at=start,
                                       customer={"name": "Pat Doe"}),
                           Utterance(call_id=cid, seq=2, speaker="agent", text="hello, how can i help", t_start=1),
                           Utterance(call_id=cid, seq=3, speaker="customer",
                                     text="this is the third time i call about this", t_start=6),
                           CallEnded(call_id=cid, seq=4, ended_at=start + timedelta(minutes=4))):
                    await store.append(ev)
                    await bus.publish(CALLS, cid, ev)
                for j in range((n + w) % 3):
                    await store.save_signal(Signal(call_id=cid, kind=["frustration_spike", "complaint", "churn_intent"][j],
                                                   confidence=0.8, evidence=[EvidenceRef(seq=3, excerpt="third time", t=6)],
                                                   created_at=start))
                if n % 3 == 0:
                    await store.save_signal(Signal(call_id=cid, kind="frustration_spike", audience="agent",
                                                   confidence=0.9, message="Acknowledge before the next step",
                                                   evidence=[EvidenceRef(seq=3, t=6)], created_at=start))

    console.run(go(), timeout=120)
    return ids


def lead_json(console: Console, path: str) -> Any:
    r = console.server.get(path)
    assert r.status_code == 200, (path, r.status_code, r.text[:300])
    return r.json()


def wait_notes(console: Console, call_ids: list[str], timeout: float = 60) -> None:
    """Until post-call has drafted a note for every call (read from the store: a lead's GET of the
    note would count as the lead reviewing it)."""
    import time

    deadline = time.monotonic() + timeout
    for cid in call_ids:
        while console.app.state.store.get_note(cid) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"post-call drafted no note for {cid}")
            time.sleep(0.1)


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def chromium():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail("Debian chromium is missing: apt-get install -y chromium (never `playwright install`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def console(server_factory, request) -> Console:
    """A real server. Tests that use the ``with_postcall`` fixture get the post-call stage, which
    drafts real QA notes when calls end."""
    postcall = "with_postcall" in request.fixturenames
    # rules-only notes: deterministic, and no detector load shared with other tests in this process
    return Console(server_factory(detectors=False, postcall=postcall, postcall_detectors=False,
                                  agent_ids=("alice", "bob")))


@pytest.fixture
def with_postcall() -> bool:
    return True


@pytest.fixture
def page(chromium, console):
    # bypass_csp: Playwright's wait_for_function evaluates strings, which the console's CSP forbids;
    # the request log below checks that nothing leaves the machine without the CSP's help.
    ctx = chromium.new_context(viewport={"width": 1440, "height": 900}, bypass_csp=True)
    pg = ctx.new_page()
    pg.on("request", lambda r: console.requests.append(r.url))
    pg.set_default_timeout(15_000)
    yield pg
    ctx.close()
