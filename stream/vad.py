"""Speech finding for one audio channel: Silero VAD (ONNX, from the ``silero-vad`` package) and a
segmenter that turns a stream of 16 kHz samples into speech segments.

``SpeechFinder(vad, cfg).feed(samples)`` returns what happened in that audio:
``SpeechUpdate`` (someone is speaking; audio so far, for a partial hypothesis) and ``SpeechSegment``
(speech ended, or reached the longest segment: audio to transcribe as a final). Memory per channel
is bounded by the longest segment plus the pre-roll, however long the call.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass

import numpy as np

SR = 16000
WINDOW = 512  # Silero's window at 16 kHz (32 ms)
CONTEXT = 64


class SileroVad:
    """The shared ONNX session; per-channel recurrent state lives in ``VadState``."""

    def __init__(self, threads: int = 1):
        import onnxruntime as ort
        import silero_vad

        path = os.path.join(os.path.dirname(silero_vad.__file__), "data", "silero_vad.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        self._sr = np.array(SR, dtype=np.int64)

    def new_state(self) -> "VadState":
        return VadState()

    def prob(self, st: "VadState", window: np.ndarray) -> float:
        """Speech probability of one 512-sample window, advancing the channel's recurrent state."""
        x = np.concatenate([st.context, window])[None, :].astype(np.float32, copy=False)
        p, st.state = self._session.run(None, {"input": x, "state": st.state, "sr": self._sr})
        st.context = x[0, -CONTEXT:].copy()
        return float(p[0, 0])


class VadState:
    __slots__ = ("state", "context")

    def __init__(self):
        self.state = np.zeros((2, 1, 128), np.float32)
        self.context = np.zeros(CONTEXT, np.float32)


@dataclass
class SpeechConfig:
    threshold: float = 0.5          # a window at or above this is speech
    hangover_ms: int = 300          # silence that ends a segment
    min_speech_ms: int = 250        # shorter bursts are dropped (coughs, clicks)
    pre_roll_ms: int = 200          # audio kept before the onset, so the first word is whole
    tail_ms: int = 150              # silence kept after the last speech window
    max_segment_s: float = 20.0     # a longer monologue is cut into finals of at most this
    partial_every_s: float = 1.0    # an update (for a partial hypothesis) about this often
    speculate: bool = True          # announce a likely end (``SpeechPause``) after ``tail_ms`` of silence

    @property
    def neg_threshold(self) -> float:
        return max(0.05, self.threshold - 0.15)


@dataclass
class SpeechUpdate:
    segment_id: int
    start: int            # sample index (channel clock) of the audio's first sample
    audio: np.ndarray


@dataclass
class SpeechPause:
    """Silence has begun: if it lasts the hangover, the segment will be exactly this one, so its final
    can be transcribed now (speculatively) and be ready when the hangover confirms the end."""
    segment_id: int
    start: int
    speech_start: int
    speech_end: int
    audio: np.ndarray


@dataclass
class SpeechSegment:
    segment_id: int
    start: int            # first sample of ``audio`` (includes pre-roll)
    speech_start: int     # first speech window
    speech_end: int       # end of the last speech window
    audio: np.ndarray
    cut: bool = False     # ended by the length limit, not by silence


class SpeechFinder:
    def __init__(self, vad: SileroVad, cfg: SpeechConfig | None = None):
        self.vad = vad
        self.cfg = cfg or SpeechConfig()
        self._st = vad.new_state()
        self.position = 0                      # samples consumed so far (channel clock)
        self._vad_pos = 0                      # samples covered by VAD windows
        self._pending = np.zeros(0, np.float32)  # < one window, waiting for the next frame
        pre = int(self.cfg.pre_roll_ms * SR / 1000)
        self._pre: deque[np.ndarray] = deque()
        self._pre_len = 0
        self._pre_max = pre
        self._seg: list[np.ndarray] = []
        self._seg_len = 0
        self._seg_start = 0
        self._speech_start = 0
        self._last_speech_end = 0
        self._in_speech = False
        self._paused = False
        self._next_update = 0
        self._segment_id = 0

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def segment_id(self) -> int:
        return self._segment_id

    @property
    def last_speech_end(self) -> int:
        return self._last_speech_end

    @property
    def buffered_samples(self) -> int:
        """Audio held in memory (for the bounded-memory test and metrics)."""
        return self._pre_len + self._seg_len + len(self._pending)

    def feed(self, samples: np.ndarray) -> list[SpeechUpdate | SpeechPause | SpeechSegment]:
        samples = np.asarray(samples, dtype=np.float32)
        out: list[SpeechUpdate | SpeechPause | SpeechSegment] = []
        self.position += len(samples)
        buf = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        n = len(buf) // WINDOW
        self._pending = buf[n * WINDOW:].copy()
        cfg = self.cfg
        hang = int(cfg.hangover_ms * SR / 1000)
        tail = int(cfg.tail_ms * SR / 1000)
        for i in range(n):
            win = buf[i * WINDOW:(i + 1) * WINDOW]
            p = self.vad.prob(self._st, win)
            w0 = self._vad_pos
            self._vad_pos += WINDOW
            if not self._in_speech:
                if p >= cfg.threshold:
                    self._in_speech = True
                    self._segment_id += 1
                    self._seg = list(self._pre)
                    self._seg_len = self._pre_len
                    self._seg_start = w0 - self._pre_len
                    self._speech_start = w0
                    self._last_speech_end = w0 + WINDOW
                    self._next_update = w0 + int(cfg.partial_every_s * SR)
                    self._pre.clear()
                    self._pre_len = 0
                    self._append_seg(win)
                else:
                    self._append_pre(win)
                continue
            self._append_seg(win)
            if p >= cfg.neg_threshold:
                self._last_speech_end = w0 + WINDOW
                self._paused = False
            silent = self._vad_pos - self._last_speech_end
            if (cfg.speculate and not self._paused and tail <= silent < hang
                    and (self._last_speech_end - self._speech_start) * 1000 / SR >= cfg.min_speech_ms):
                self._paused = True
                end = self._last_speech_end + tail
                out.append(SpeechPause(self._segment_id, self._seg_start, self._speech_start, self._last_speech_end,
                                       self._seg_audio()[:end - self._seg_start].copy()))
            if silent >= hang:
                seg = self._close(self._last_speech_end + tail)
                if seg is not None:
                    out.append(seg)
            elif self._seg_len >= cfg.max_segment_s * SR:
                seg = self._close(self._vad_pos, cut=True)
                if seg is not None:
                    out.append(seg)
                # speech goes on: a new segment starts right here, without pre-roll
                self._in_speech = True
                self._segment_id += 1
                self._seg, self._seg_len = [], 0
                self._seg_start = self._speech_start = self._vad_pos
                self._last_speech_end = self._vad_pos
                self._next_update = self._vad_pos + int(cfg.partial_every_s * SR)
            elif self._vad_pos >= self._next_update:
                self._next_update = self._vad_pos + int(cfg.partial_every_s * SR)
                out.append(SpeechUpdate(self._segment_id, self._seg_start, self._seg_audio()))
        return out

    def flush(self) -> SpeechSegment | None:
        """The channel ended: whatever speech is open becomes a final."""
        if not self._in_speech:
            return None
        return self._close(self._vad_pos)

    # ------------------------------------------------------------------ details
    def _append_pre(self, win: np.ndarray) -> None:
        self._pre.append(win)
        self._pre_len += len(win)
        while self._pre and self._pre_len - len(self._pre[0]) >= self._pre_max:
            self._pre_len -= len(self._pre.popleft())

    def _append_seg(self, win: np.ndarray) -> None:
        self._seg.append(win)
        self._seg_len += len(win)

    def _seg_audio(self) -> np.ndarray:
        if len(self._seg) > 1:
            self._seg = [np.concatenate(self._seg)]
        return self._seg[0] if self._seg else np.zeros(0, np.float32)

    def _close(self, end: int, cut: bool = False) -> SpeechSegment | None:
        audio = self._seg_audio()
        keep = max(0, min(len(audio), end - self._seg_start))
        audio = audio[:keep]
        speech_ms = (self._last_speech_end - self._speech_start) * 1000 / SR
        seg = SpeechSegment(self._segment_id, self._seg_start, self._speech_start,
                            min(self._last_speech_end, self._seg_start + keep), audio, cut)
        self._in_speech = False
        self._paused = False
        self._seg, self._seg_len = [], 0
        if speech_ms < self.cfg.min_speech_ms and not cut:
            return None
        return seg
