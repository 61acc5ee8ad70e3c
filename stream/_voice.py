"""Voice call internals: the shared VAD + ASR pool (``VoiceService``) and one audio channel of one
call (``ChannelSession``: decode → resample → find speech → partials and finals → store → bus)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from typing import Any, Awaitable, Callable

import numpy as np

from livecoach.bus import CALLS, PARTIALS
from livecoach.events import CallStarted, PartialUtterance, Utterance, Word
from livecoach.settings import Settings
from livecoach.stream.vad import (SR, SileroVad, SpeechConfig, SpeechFinder, SpeechPause, SpeechSegment,
                                  SpeechUpdate)

log = logging.getLogger(__name__)

SUPPORTED_RATES = (8000, 16000)
STATUS_CHECK_S = 2.0


def pool_shape(settings: Settings) -> tuple[int, int]:
    """(workers, threads per worker): the pool is sized to the cores."""
    cores = max(1, os.cpu_count() or 1)
    workers = settings.asr_workers or cores
    threads = settings.asr_threads_per_worker or cores
    return workers, threads


class VoiceService:
    """One per app: the Whisper model, its worker pool, the VAD session and per-call store locks."""

    def __init__(self, settings: Settings, metrics):
        from livecoach.models.asr import WhisperAsr
        from livecoach.stream.asr_pool import AsrPool

        self.settings = settings
        self.metrics = metrics
        workers, threads = pool_shape(settings)
        self.asr = WhisperAsr(settings.whisper_model_dir, workers=workers, threads_per_worker=threads,
                              min_window_s=settings.asr_min_window_s, beam_size=settings.asr_beam_size)
        self.asr.warm_up()
        self.pool = AsrPool(self.asr, workers=workers, max_batch=settings.asr_max_batch,
                            partial_max_age_s=max(1.0, settings.asr_partial_every_s), metrics=metrics)
        self.vad = SileroVad()
        self.speech = SpeechConfig(threshold=settings.vad_threshold, hangover_ms=settings.vad_hangover_ms,
                                   min_speech_ms=settings.vad_min_speech_ms,
                                   max_segment_s=settings.asr_max_segment_s,
                                   partial_every_s=settings.asr_partial_every_s)
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self.latencies: deque[float] = deque(maxlen=500)

    def close(self) -> None:
        self.pool.stop()

    def call_lock(self, call_id: str) -> asyncio.Lock:
        lock, n = self._locks.get(call_id, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[call_id] = (lock, n + 1)
        return lock

    def release_call(self, call_id: str) -> None:
        lock, n = self._locks.get(call_id, (None, 0))
        if n <= 1:
            self._locks.pop(call_id, None)
        else:
            self._locks[call_id] = (lock, n - 1)

    def record_latency(self, seconds: float) -> None:
        self.latencies.append(seconds)
        xs = sorted(self.latencies)
        self.metrics["asr_final_latency_p50_ms"] = int(xs[len(xs) // 2] * 1000)
        self.metrics["asr_final_latency_p95_ms"] = int(xs[min(len(xs) - 1, int(len(xs) * 0.95))] * 1000)


async def voice_service(app) -> VoiceService:
    """The app's VoiceService, loaded on first use (model load and warm-up off the event loop)."""
    svc = getattr(app.state, "voice", None)
    if svc is not None:
        return svc
    lock = getattr(app.state, "voice_lock", None)
    if lock is None:
        lock = app.state.voice_lock = asyncio.Lock()
    async with lock:
        svc = getattr(app.state, "voice", None)
        if svc is None:
            svc = await asyncio.to_thread(VoiceService, app.state.settings, app.state.metrics)
            app.state.voice = svc
    return svc


class Upsampler:
    """8 kHz → 16 kHz, streaming: zero-stuffing and a windowed-sinc low-pass that keeps its state
    across frames (no clicks at frame edges)."""

    def __init__(self):
        from scipy.signal import firwin

        self._taps = (firwin(63, 0.5) * 2).astype(np.float32)
        self._zi = np.zeros(len(self._taps) - 1, np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        from scipy.signal import lfilter

        up = np.zeros(len(x) * 2, np.float32)
        up[::2] = x
        y, self._zi = lfilter(self._taps, 1.0, up, zi=self._zi)
        return y.astype(np.float32)


Send = Callable[[dict[str, Any]], Awaitable[None]]


class ChannelSession:
    """One channel (agent or customer) of one call, from the start frame to the end."""

    def __init__(self, app, svc: VoiceService, call_id: str, channel: str, sample_rate: int, t_offset: float,
                 start: CallStarted, send: Send):
        self.app, self.svc, self.call_id, self.channel = app, svc, call_id, channel
        self.sample_rate = sample_rate
        self.t_offset = t_offset
        self.start_event = start
        self.send = send
        self.finder = SpeechFinder(svc.vad, svc.speech)
        self.upsample = Upsampler() if sample_rate == 8000 else None
        self.call_ended = False
        self.finals_stored = 0
        self._arrivals: deque[tuple[int, float]] = deque(maxlen=256)  # (16 kHz position, monotonic)
        self._chain: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._finalised_segment = 0
        self._last_status_check = time.monotonic()
        self._lock = svc.call_lock(call_id)
        self._key = (call_id, channel)
        self._spec: tuple[int, int, asyncio.Future] | None = None  # (segment, speech_end, transcript)

    # ------------------------------------------------------------------ audio in
    def feed(self, pcm: bytes) -> None:
        x = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
        self.app.state.metrics["audio_received_ms"] += len(x) * 1000 // self.sample_rate
        if self.upsample is not None:
            x = self.upsample(x)
        now = time.monotonic()
        for ev in self.finder.feed(x):
            if isinstance(ev, SpeechSegment):
                self._final(ev, now)
            elif isinstance(ev, SpeechPause):
                self._speculate(ev)
            elif isinstance(ev, SpeechUpdate):
                self._partial(ev)
        if self._spec is not None and self.finder.in_speech and self._spec[0] == self.finder.segment_id \
                and self.finder.last_speech_end != self._spec[1]:
            self._drop_speculation()  # speech went on: that guess at the end was wrong
        self._arrivals.append((self.finder.position, now))

    async def maybe_check_status(self) -> None:
        """Notice a call ended on the events socket (audio after that is refused)."""
        now = time.monotonic()
        if now - self._last_status_check < STATUS_CHECK_S or self.call_ended:
            return
        self._last_status_check = now
        head = await asyncio.to_thread(self.app.state.store.get_call_header, self.call_id)
        if head and head.get("status") == "ended":
            self.call_ended = True

    async def finish(self) -> int:
        """The channel ended (end frame or hang-up): open speech becomes a final; wait for all finals."""
        seg = self.finder.flush()
        if seg is not None:
            self._final(seg, time.monotonic())
        self._drop_speculation()
        self.svc.pool.drop_partials(self._key)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        return self.finals_stored

    def close(self) -> None:
        self.svc.pool.drop_partials(self._key)
        self.svc.release_call(self.call_id)

    # ------------------------------------------------------------------ partials and finals
    def _seconds(self, sample: int) -> float:
        return round(self.t_offset + sample / SR, 3)

    def _spoken_at(self, sample: int, fallback: float) -> float:
        """Monotonic time the sample was spoken, from the arrival of the frame that carried it."""
        for pos, t in self._arrivals:
            if pos >= sample:
                return t - (pos - sample) / SR
        return fallback

    def _partial(self, ev: SpeechUpdate) -> None:
        seg_id = ev.segment_id
        t_start = self._seconds(ev.start)

        def on_result(tr) -> None:
            if tr.empty or seg_id <= self._finalised_segment:
                return
            p = PartialUtterance(call_id=self.call_id, speaker=self.channel, text=tr.text, t_start=t_start)
            self.app.state.metrics["asr_partials"] += 1
            self._spawn(self._publish_partial(p))

        self.svc.pool.partial(self._key, ev.audio, on_result)

    async def _publish_partial(self, p: PartialUtterance) -> None:
        await self.app.state.bus.publish(PARTIALS, self.call_id, p)
        await self.send({"type": "partial", "speaker": p.speaker, "text": p.text, "t_start": p.t_start})

    def _speculate(self, ev: SpeechPause) -> None:
        self._drop_speculation()
        self.svc.pool.drop_partials(self._key)  # the final is what matters now
        if self.svc.pool.queued:  # under load, spend nothing on guesses
            return
        self.app.state.metrics["asr_speculations"] += 1
        self._spec = (ev.segment_id, ev.speech_end, self.svc.pool.final(ev.audio))

    def _drop_speculation(self) -> None:
        if self._spec is not None:
            fut = self._spec[2]
            if not self.svc.pool.cancel(fut) and not fut.done():
                fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # result unused
            self._spec = None

    def _final(self, seg: SpeechSegment, now: float) -> None:
        self._finalised_segment = seg.segment_id
        self.svc.pool.drop_partials(self._key)
        spoken_end = self._spoken_at(seg.speech_end, now)
        spec, self._spec = self._spec, None
        if spec is not None and spec[0] == seg.segment_id and spec[1] == seg.speech_end and not seg.cut:
            fut = spec[2]
            self.app.state.metrics["asr_speculations_used"] += 1
        else:
            if spec is not None:
                self._spec = spec
                self._drop_speculation()
            fut = self.svc.pool.final(seg.audio)
        prev = self._chain
        task = self._spawn(self._store_final(seg, fut, prev, spoken_end))
        self._chain = task

    def _spawn(self, coro) -> asyncio.Task:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    async def _store_final(self, seg: SpeechSegment, fut: asyncio.Future, prev: asyncio.Task | None,
                           spoken_end: float) -> None:
        metrics = self.app.state.metrics
        try:
            tr = await fut
        except Exception as exc:
            metrics["asr_finals_failed"] += 1
            log.error("final for %s/%s failed: %s", self.call_id, self.channel, exc)
            await self.send({"type": "error", "seq": None, "code": "asr_failed",
                             "message": f"speech at {self._seconds(seg.speech_start)} s could not be transcribed"})
            return
        if prev is not None and not prev.done():  # one channel's finals are stored in spoken order
            await asyncio.wait([prev])
        if tr.empty:
            metrics["asr_finals_empty"] += 1
            return
        base = self.t_offset + seg.start / SR
        words = [Word(word=w.word, start=round(base + w.start, 2), end=round(base + w.end, 2),
                      probability=w.probability) for w in tr.words] or None
        t_start = self._seconds(seg.speech_start)
        t_end = max(t_start, self._seconds(seg.speech_end))
        text = tr.text

        def build(seq: int) -> Utterance:
            return Utterance(call_id=self.call_id, seq=seq, speaker=self.channel, text=text, t_start=t_start,
                             t_end=t_end, final=True, source="asr", words=words,
                             confidence=round(tr.confidence, 3))

        store, bus = self.app.state.store, self.app.state.bus
        async with self._lock:  # store and publish in seq order across the call's two channels
            try:
                res = await store.append_server(self.call_id, build, start=self.start_event)
            except Exception as exc:
                metrics["asr_finals_failed"] += 1
                log.exception("storing a final for %s failed", self.call_id)
                await self.send({"type": "error", "seq": None, "code": "storage_unavailable",
                                 "message": f"a final transcript could not be stored: {type(exc).__name__}"})
                return
            if res.outcome != "stored":
                metrics["asr_finals_rejected"] += 1
                if res.code == "call_ended":
                    self.call_ended = True
                await self.send({"type": "error", "seq": None, "code": res.code or "rejected",
                                 "message": f"final transcript not stored: {res.message}"})
                return
            utt = build(res.seq)
            await bus.publish(CALLS, self.call_id, utt)
        latency = time.monotonic() - spoken_end
        self.finals_stored += 1
        metrics["asr_finals"] += 1
        if latency > self.svc.settings.asr_late_after_s:
            metrics["asr_finals_late"] += 1
        self.svc.record_latency(latency)
        await self.send({"type": "final", "seq": res.seq, "speaker": self.channel, "text": text,
                         "t_start": t_start, "t_end": t_end, "confidence": utt.confidence,
                         "latency_ms": int(latency * 1000)})

