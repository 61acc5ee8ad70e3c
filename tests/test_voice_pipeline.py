"""Voice pipeline parts without the server: speech finding on real call audio, and the ASR pool under
overload (real Silero VAD and real Whisper tiny.en)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from livecoach.models.asr import WhisperAsr, load_wav
from livecoach.stream._voice import Upsampler
from livecoach.stream.asr_pool import AsrPool
from livecoach.stream.vad import SR, SileroVad, SpeechConfig, SpeechFinder, SpeechSegment

FIX = Path(__file__).parent / "fixtures" / "audio"
CALL = FIX / "hv_0002f70f_8k_stereo.wav"
CLIP = FIX / "librispeech_1272-128104-0000.wav"


@pytest.fixture(scope="module")
def vad():
    return SileroVad()


@pytest.fixture(scope="module")
def asr():
    a = WhisperAsr(workers=1, threads_per_worker=2)
    a.warm_up()
    return a


def segments(finder: SpeechFinder, audio16k: np.ndarray, step: int = 1600) -> list[SpeechSegment]:
    out = []
    for i in range(0, len(audio16k), step):
        out += [e for e in finder.feed(audio16k[i:i + step]) if isinstance(e, SpeechSegment)]
    return out


def test_speech_finder_finds_each_turn_of_an_8khz_phone_channel(vad):
    audio, sr = load_wav(CALL)
    turns = json.loads(CALL.with_suffix(".json").read_text())["turns"]
    up = Upsampler()
    for ch, spk in enumerate(("agent", "customer")):
        x8 = audio[:, ch]
        x16 = np.concatenate([up(x8[i:i + 800]) for i in range(0, len(x8), 800)])  # 100 ms frames, streaming
        segs = segments(SpeechFinder(vad, SpeechConfig(hangover_ms=300)), x16)
        ref = [t for t in turns if t["speaker"] == spk]
        spans = [(s.speech_start / SR, s.speech_end / SR) for s in segs]
        # every reference turn lies inside a segment (turns closer than the hangover share one) ...
        for t in ref:
            assert any(a - 0.3 <= t["start"] and t["end"] <= b + 0.4 for a, b in spans), (t, spans)
        # ... and every segment starts where a turn starts and ends where a turn ends
        for a, b in spans:
            assert min(abs(t["start"] - a) for t in ref) < 0.3, (a, ref)
            assert min(abs(t["end"] - b) for t in ref) < 0.4, (b, ref)


def test_speech_finder_holds_bounded_audio_through_endless_speech(vad):
    clip, _ = load_wav(CLIP)
    speech = clip[int(0.5 * SR):int(5.4 * SR), 0]  # speech only, no pauses at the joins
    cfg = SpeechConfig(max_segment_s=4.0)
    finder = SpeechFinder(vad, cfg)
    limit = int((cfg.max_segment_s + cfg.pre_roll_ms / 1000 + 0.1) * SR)
    most, segs = 0, []
    for _ in range(20):  # about 100 s of talking
        for i in range(0, len(speech), 3200):
            segs += [e for e in finder.feed(speech[i:i + 3200]) if isinstance(e, SpeechSegment)]
            most = max(most, finder.buffered_samples)
    assert most <= limit
    assert len(segs) >= 20 and all(len(s.audio) <= limit for s in segs)
    assert sum(s.cut for s in segs) >= 10


async def test_pool_never_drops_a_final_and_sheds_stale_partials_under_overload(asr):
    clip, _ = load_wav(CLIP)
    speech = clip[:, 0]
    metrics: dict = {}
    pool = AsrPool(asr, workers=1, max_batch=4, partial_max_age_s=0.2, metrics=metrics)
    got = []
    try:
        for k in range(12):
            pool.partial(("call", k), speech[: SR * 2], got.append)
        finals = [pool.final(speech) for _ in range(6)]
        results = await asyncio.wait_for(asyncio.gather(*finals), timeout=120)
        await asyncio.sleep(0.5)
    finally:
        await asyncio.to_thread(pool.stop)
    assert all("quilter" in r.text.lower() for r in results)
    assert all(r.words and 0 < r.confidence <= 1 for r in results)
    assert metrics["asr_partials_shed"] > 0
    assert len(got) + metrics["asr_partials_shed"] == 12
    assert pool.queued == 0


def test_transcripts_batch_across_segments_of_different_lengths(asr):
    clip, _ = load_wav(CLIP)
    speech = clip[:, 0]
    short, long = speech[: int(2.2 * SR)], speech
    alone = [asr.transcribe_batch([short])[0].text, asr.transcribe_batch([long])[0].text]
    together = [t.text for t in asr.transcribe_batch([short, long])]
    assert together == alone
