"""Tier-1 escalation: a larger model reads the last turns of the call and confirms, rejects or
re-scores a tier-0 signal, off the hot path.

    tier1 = Tier1Escalation(make_backend(settings), queue_size=64, timeout_s=2.0)
    await tier1.start()
    ok = tier1.submit(case, on_verdict)     # never blocks; False when the queue is full

- Bounded queue: when it is full the case is not escalated (outcome ``dropped``).
- Timeout: a case has ``timeout_s`` from submission to verdict, queueing included; past it the
  outcome is ``timeout``.
- Fallback, stated once: whenever tier-1 has no verdict (dropped, timeout, error, abstained, or
  tier-1 switched off) **the tier-0 decision stands**. Tier-0 lead signals are never held back
  for tier-1: they are emitted before the case is even queued.

Backends (``settings.tier1_backend``): ``model`` (default: the window classifier trained here on
all-mpnet-base-v2, or on all-MiniLM-L6-v2 when the mpnet parts are not installed — the fallback,
logged; see ``signals/tier1_model.md``), ``chat`` (an OpenAI-compatible chat endpoint, see
``signals/_tier1_backends.py`` for how far it is tested) and ``off``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tier1Case:
    """What tier-1 reads: the kind tier-0 proposed and the last turns up to the evidence."""

    call_id: str
    kind: str
    tier0_confidence: float
    window: tuple[tuple[str, str], ...]  # (speaker, text), oldest first, the evidence turn last
    target: str  # the evidence utterance


@dataclass
class Tier1Verdict:
    outcome: str  # scored | dropped | timeout | error | abstained | off
    probability: float | None = None
    latency_s: float = 0.0
    backend: str = ""  # e.g. model:mpnet, model:minilm, chat
    detail: str = ""
    model: str = ""  # the model that gave the verdict, in words (e.g. "window classifier on mpnet (int8), …")

    @property
    def has_score(self) -> bool:
        return self.outcome == "scored" and self.probability is not None


class Tier1Backend(Protocol):
    name: str

    def warm_up(self) -> None:
        """Load what the first case would otherwise wait for (runs in a worker thread)."""

    def score(self, case: Tier1Case) -> float | None:
        """P(case.kind is right) from the window, or None to abstain (blocking; worker thread)."""


class OffBackend:
    name = "off"

    def warm_up(self) -> None:
        pass

    def score(self, case: Tier1Case) -> float | None:
        return None


def make_backend(settings) -> Tier1Backend:
    """The backend ``settings.tier1_backend`` names (imports stay lazy: no torch at import)."""
    kind = getattr(settings, "tier1_backend", "model")
    if kind == "off":
        return OffBackend()
    from livecoach.signals import _tier1_backends as B

    if kind == "chat":
        return B.ChatBackend.from_settings(settings)
    return B.WindowClassifierBackend.from_settings(settings)


OnVerdict = Callable[[Tier1Verdict], Awaitable[None]]


@dataclass
class Tier1Stats:
    counts: Counter = field(default_factory=Counter)  # submitted, dropped, timeout, error, abstained, scored
    latencies: deque = field(default_factory=lambda: deque(maxlen=2000))
    agree: int = 0
    disagree: int = 0

    def agreement(self) -> float | None:
        n = self.agree + self.disagree
        return round(self.agree / n, 4) if n else None

    def latency_pct(self, q: float) -> float | None:
        if not self.latencies:
            return None
        xs = sorted(self.latencies)
        return round(xs[min(len(xs) - 1, int(q * len(xs)))], 4)


class Tier1Escalation:
    """A bounded queue in front of a tier-1 backend, with ``workers`` model threads."""

    def __init__(self, backend: Tier1Backend, *, queue_size: int = 64, timeout_s: float = 2.0, workers: int = 1):
        self.backend = backend
        self.queue_size = queue_size
        self.timeout_s = timeout_s
        self.workers = workers
        self.stats = Tier1Stats()
        self._q: asyncio.Queue | None = None
        self._tasks: list[asyncio.Task] = []
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.ready = False

    @property
    def enabled(self) -> bool:
        return not isinstance(self.backend, OffBackend)

    @property
    def depth(self) -> int:
        return self._q.qsize() if self._q else 0

    async def start(self) -> None:
        if self._q is not None:
            return
        self._q = asyncio.Queue(self.queue_size)
        self._pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="livecoach-tier1")
        for i in range(self.workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"tier1:{i}"))
        if self.enabled:
            self._warming = asyncio.get_running_loop().run_in_executor(self._pool, self._warm)

    def _warm(self) -> None:
        try:
            self.backend.warm_up()
            self.ready = True
        except Exception as exc:  # tier-1 unavailable: every case falls back to tier-0
            log.warning("tier-1 backend %s did not load (%s); the tier-0 decision will stand until it does",
                        self.backend.name, exc, exc_info=True)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._pool:
            self._pool.shutdown(wait=False, cancel_futures=True)
        warming = getattr(self, "_warming", None)
        if warming is not None and not warming.done():
            # a model still loading must finish before the process may exit, or the interpreter's
            # shutdown breaks its imports half-way; bounded so a stuck load cannot hang a stop
            try:
                await asyncio.wait_for(asyncio.shield(warming), 60)
            except Exception:  # noqa: BLE001 - timed out or failed: _warm already logged it
                pass
        self._q = None

    def submit(self, case: Tier1Case, on_verdict: OnVerdict) -> bool:
        """Queue ``case``; False (and nothing queued) when tier-1 is off, not started or full."""
        if not self.enabled or self._q is None:
            return False
        try:
            self._q.put_nowait((case, on_verdict, time.monotonic()))
        except asyncio.QueueFull:
            self.stats.counts["dropped"] += 1
            return False
        self.stats.counts["submitted"] += 1
        return True

    async def _work(self) -> None:
        assert self._q is not None and self._pool is not None
        loop = asyncio.get_running_loop()
        while True:
            case, on_verdict, t0 = await self._q.get()
            remaining = self.timeout_s - (time.monotonic() - t0)
            if remaining <= 0:
                verdict = Tier1Verdict("timeout", detail="expired in the queue")
            else:
                try:
                    p = await asyncio.wait_for(loop.run_in_executor(self._pool, self.backend.score, case), remaining)
                    verdict = Tier1Verdict("scored", float(p)) if p is not None else Tier1Verdict("abstained")
                except asyncio.TimeoutError:
                    verdict = Tier1Verdict("timeout", detail=f"no answer in {self.timeout_s} s")
                except Exception as exc:
                    log.warning("tier-1 %s failed on %s/%s: %s", self.backend.name, case.call_id, case.kind, exc)
                    verdict = Tier1Verdict("error", detail=type(exc).__name__)
            verdict.latency_s = time.monotonic() - t0
            verdict.backend = self.backend.name  # after loading: a fallback model renames the backend
            verdict.model = self.model_name
            self.stats.counts[verdict.outcome] += 1
            if verdict.outcome == "scored":
                self.stats.latencies.append(verdict.latency_s)
            try:
                await on_verdict(verdict)
            except Exception:
                log.exception("tier-1 verdict handling failed for %s/%s", case.call_id, case.kind)

    @property
    def model_name(self) -> str:
        """The backend's model in words (its name when it has no description)."""
        return str(getattr(self.backend, "model", "") or self.backend.name)

    def snapshot(self) -> dict[str, Any]:
        c = self.stats.counts
        return {
            "backend": self.backend.name, "model": self.model_name,
            "ready": self.ready, "queue_depth": self.depth,
            "queue_size": self.queue_size, "timeout_s": self.timeout_s,
            "submitted": c["submitted"], "scored": c["scored"], "dropped": c["dropped"],
            "timeout": c["timeout"], "error": c["error"], "abstained": c["abstained"],
            "agreement_with_tier0": self.stats.agreement(), "agree": self.stats.agree,
            "disagree": self.stats.disagree,
            "latency_p50_s": self.stats.latency_pct(0.5), "latency_p95_s": self.stats.latency_pct(0.95),
        }
