"""Shared fixtures: a real server on a free port, tokens for every role, both storage backends."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from livecoach.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
DEMO_CALLS = ROOT / "livecoach" / "demo_calls.jsonl"
# 60 real Harper Valley dev calls, committed (CC BY 4.0) so the suite runs from a plain clone
HARPER_DEV = ROOT / "tests" / "fixtures" / "harper_valley" / "calls_dev.jsonl"
PG_ADMIN_URL = os.environ.get("LIVECOACH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    settings: Settings
    tokens: dict[str, str]
    app: object

    @property
    def ws(self) -> str:
        return self.url.replace("http://", "ws://")

    def get(self, path: str, role: str | None = "lead", **kw) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.get(self.url + path, headers=headers, timeout=30, **kw)

    def post(self, path: str, role: str | None = "lead", **kw) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.post(self.url + path, headers=headers, timeout=30, **kw)

    @property
    def store(self):
        return self.app.state.store


def start_server(settings: Settings, *, agent_ids=("alice",)) -> tuple[Server, uvicorn.Server, threading.Thread]:
    from livecoach.app import create_app
    from livecoach.auth import TokenStore
    from livecoach.limits import ws_max_size

    app = create_app(settings)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="warning",
                                        lifespan="on", ws_max_size=ws_max_size(settings)))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    url = f"http://127.0.0.1:{settings.port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if not th.is_alive():
            raise RuntimeError("server thread died during start-up")
        time.sleep(0.05)
    ts = TokenStore.from_settings(settings)
    tokens = {role: ts.create(role=role, name=f"test-{role}") for role in ("ingest", "lead", "admin")}
    for a in agent_ids:
        tokens["agent" if a == agent_ids[0] else f"agent:{a}"] = ts.create(role="agent", name=a, agent_id=a)
    return Server(url, settings, tokens, app), srv, th


def make_settings(tmp_path: Path, **over) -> Settings:
    base = dict(data_dir=tmp_path, cache_dir=Path(os.environ.get("LIVECOACH_CACHE_DIR", Path.home() / ".cache" / "livecoach")),
                port=free_port(), detectors=False, postcall=False, asr_preload=False)
    base.update(over)
    return Settings(**base)


@pytest.fixture
def server_factory(tmp_path):
    """Start real servers (uvicorn on a free port) with chosen settings; stopped after the test."""
    running = []

    def start(agent_ids=("alice", "bob"), **over) -> Server:
        s, srv, th = start_server(make_settings(tmp_path, **over), agent_ids=agent_ids)
        running.append((srv, th))
        return s

    yield start
    for srv, th in running:
        srv.should_exit = True
        th.join(timeout=30)


@pytest.fixture
def server(server_factory) -> Server:
    """A bare spine server: storage and bus, no detectors or post-call stage."""
    return server_factory()


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database on the local server, dropped afterwards."""
    from sqlalchemy import create_engine, text

    name = "lc_test_" + uuid.uuid4().hex[:10]
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # pragma: no cover - the machine runs PostgreSQL; say so loudly if not
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not usable: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    yield url
    with admin.connect() as c:
        c.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    """Each storage test runs on SQLite and on the local PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("pg_url")
