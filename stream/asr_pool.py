"""The ASR worker pool: one shared Whisper model, a few worker threads, batches across calls.

Finals (end of speech) are never dropped: they go first, in arrival order, and each is counted
``late`` when it is stored after ``late_after_s``. Partials (live hypotheses while someone speaks)
only fill what finals leave: a newer partial for the same channel replaces an older one, and a
partial that waited longer than ``partial_max_age_s`` is shed (counted) instead of run.

A batch holds jobs of one kind whose encoder windows are the same size (see
``models.asr.window_frames``), so no job pays for a longer window than it needs; the decoder and the
word alignment then run the whole batch at once, which is where batching pays on CPU. Partial
batches may occupy at most ``workers - 1`` workers and start only while no final is being
transcribed, so a final never queues behind partials and does not share the cores with them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class _Job:
    kind: str                       # "final" | "partial"
    audio: np.ndarray
    window: int
    fut: asyncio.Future | None = None
    loop: asyncio.AbstractEventLoop | None = None
    key: Any = None                 # partials: the channel, for superseding
    on_partial: Callable[[Any], None] | None = None
    queued_at: float = field(default_factory=time.monotonic)


class AsrPool:
    def __init__(self, asr, *, workers: int = 1, max_batch: int = 8, partial_max_age_s: float = 1.0,
                 metrics=None):
        self.asr = asr
        self.max_batch = max_batch
        self.partial_max_age_s = partial_max_age_s
        self.metrics = metrics if metrics is not None else {}
        self._finals: deque[_Job] = deque()
        self._partials: dict[Any, _Job] = {}
        self._cv = threading.Condition()
        self._stopped = False
        self._busy = 0
        self._partial_batches = 0  # in flight; kept below the worker count so a final never waits on them
        self._partial_slots = max(1, workers - 1)
        self._final_batches = 0    # in flight; while any runs, partials wait (they would slow it down)
        self._threads = [threading.Thread(target=self._run, name=f"asr-worker-{i}", daemon=True)
                         for i in range(max(1, workers))]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ submit (event loop side)
    def final(self, audio: np.ndarray) -> asyncio.Future:
        """Transcribe ``audio`` (16 kHz float32) as a final; the future yields a ``Transcript``."""
        loop = asyncio.get_running_loop()
        job = _Job("final", audio, self.asr.window_frames(len(audio)), loop.create_future(), loop)
        with self._cv:
            self._finals.append(job)
            self._cv.notify()
        return job.fut

    def partial(self, key: Any, audio: np.ndarray, on_result: Callable[[Any], None]) -> None:
        """Ask for a partial hypothesis; ``on_result(transcript)`` runs on the event loop, maybe never."""
        loop = asyncio.get_running_loop()
        job = _Job("partial", audio, self.asr.window_frames(len(audio)), None, loop, key, on_result)
        with self._cv:
            if key in self._partials:
                self._count("asr_partials_shed")
            self._partials[key] = job
            self._cv.notify()

    def cancel(self, fut: asyncio.Future) -> bool:
        """Withdraw a final not yet started (a speculative one that speech outran)."""
        with self._cv:
            for j in self._finals:
                if j.fut is fut:
                    self._finals.remove(j)
                    fut.cancel()
                    return True
        return False

    def drop_partials(self, key: Any) -> None:
        with self._cv:
            self._partials.pop(key, None)

    @property
    def queued(self) -> int:
        return len(self._finals) + len(self._partials)

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify_all()
        for t in self._threads:
            t.join(timeout=10)

    # ------------------------------------------------------------------ workers
    def _count(self, name: str, n: int = 1) -> None:
        self.metrics[name] = self.metrics.get(name, 0) + n

    def _take(self) -> list[_Job]:
        """Build the next batch (holding the lock)."""
        now = time.monotonic()
        for k, j in list(self._partials.items()):
            if now - j.queued_at > self.partial_max_age_s:
                del self._partials[k]
                self._count("asr_partials_shed")
        batch: list[_Job] = []
        if self._finals:
            window = self._finals[0].window
            keep: deque[_Job] = deque()
            while self._finals:
                j = self._finals.popleft()
                if j.window == window and len(batch) < self.max_batch:
                    batch.append(j)
                else:
                    keep.append(j)
            self._finals = keep
            return batch  # finals never wait for a partial in their batch
        if self._partial_batches >= self._partial_slots or self._final_batches:
            return batch
        window = None
        for k, j in sorted(self._partials.items(), key=lambda kv: kv[1].queued_at):
            if len(batch) >= self.max_batch:
                break
            if window is None:
                window = j.window
            if j.window == window:
                batch.append(j)
                del self._partials[k]
        return batch

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopped and not self._finals and not self._partials:
                    self._cv.wait()
                if self._stopped:
                    for j in self._finals:
                        _resolve(j, exc=RuntimeError("ASR pool stopped"))
                    return
                batch = self._take()
                if not batch:  # only partials waiting, and their slots are taken
                    self._cv.wait(0.05)
                    continue
                self._busy += 1
                partial_only = all(j.kind == "partial" for j in batch)
                if partial_only:
                    self._partial_batches += 1
                else:
                    self._final_batches += 1
            t0 = time.perf_counter()
            try:
                results = self.asr.transcribe_batch([j.audio for j in batch],
                                                    words=any(j.kind == "final" for j in batch))
                err = None
            except Exception as exc:  # a bad batch must not stop the worker
                log.exception("ASR batch of %d failed", len(batch))
                results, err = [None] * len(batch), exc
            dt = time.perf_counter() - t0
            if log.isEnabledFor(logging.DEBUG):
                log.debug("asr batch %s x%d window %d: waited %.3f s, ran %.3f s", batch[0].kind, len(batch),
                          batch[0].window, time.monotonic() - dt - min(j.queued_at for j in batch), dt)
            with self._cv:
                self._busy -= 1
                if partial_only:
                    self._partial_batches -= 1
                else:
                    self._final_batches -= 1
                self._cv.notify_all()
                self._count("asr_batches")
                self._count("asr_batch_segments", len(batch))
                self._count("asr_busy_ms", int(dt * 1000))
                self._count("asr_audio_ms", int(sum(len(j.audio) for j in batch) / 16))
            for j, r in zip(batch, results):
                if j.kind == "final":
                    _resolve(j, r, err)
                elif r is not None and j.on_partial is not None:
                    j.loop.call_soon_threadsafe(j.on_partial, r)


def _resolve(job: _Job, result=None, exc: BaseException | None = None) -> None:
    def set_it():
        if job.fut.done():
            return
        if exc is not None:
            job.fut.set_exception(exc)
        else:
            job.fut.set_result(result)

    try:
        job.loop.call_soon_threadsafe(set_it)
    except RuntimeError:  # the loop is closed (server shutting down)
        pass
