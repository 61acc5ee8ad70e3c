"""Waiting for a livecoach server to answer ``/healthz`` (demo, benchmarks, tools)."""

from __future__ import annotations

import time
from typing import Callable

import httpx


class ServerNotReady(RuntimeError):
    pass


def wait_healthy(url: str, *, timeout: float = 300.0, alive: Callable[[], bool] | None = None,
                 interval: float = 0.2) -> None:
    """Return once ``GET {url}/healthz`` answers 200; raise :class:`ServerNotReady` if ``alive()``
    says the server died or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise ServerNotReady(f"the server at {url} exited during start-up")
        try:
            if httpx.get(url.rstrip("/") + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(interval)
    raise ServerNotReady(f"the server at {url} was not ready after {timeout:.0f} s")
