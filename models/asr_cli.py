"""``livecoach models eval-asr`` and ``livecoach models synth-calls``."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("eval-asr")(eval_asr)
    app.command("synth-calls")(synth_calls_cmd)


def _pairs(directory: Path) -> list[tuple[Path, dict[str, str]]]:
    """WAV files with references: ``X.json`` (turns with speaker/text: one reference per channel of a
    stereo agent/customer WAV) or ``X.txt`` (one reference for a mono WAV)."""
    out = []
    for wav in sorted(directory.glob("*.wav")):
        js, txt = wav.with_suffix(".json"), wav.with_suffix(".txt")
        if js.exists():
            import json

            turns = json.loads(js.read_text())["turns"]
            refs = {spk: " ".join(t["text"] for t in turns if t["speaker"] == spk) for spk in ("agent", "customer")}
            out.append((wav, {k: v for k, v in refs.items() if v}))
        elif txt.exists():
            out.append((wav, {"mono": txt.read_text().strip()}))
    return out


def stream_transcribe(asr, vad, audio16k, settings, frame_s: float = 0.1) -> str:
    """The server's streaming path, offline: 100 ms frames → Silero segments → batched Whisper finals."""
    from livecoach.stream.vad import SpeechConfig, SpeechFinder, SpeechSegment

    cfg = SpeechConfig(threshold=settings.vad_threshold, hangover_ms=settings.vad_hangover_ms,
                       min_speech_ms=settings.vad_min_speech_ms, max_segment_s=settings.asr_max_segment_s,
                       partial_every_s=1e9, speculate=False)
    finder = SpeechFinder(vad, cfg)
    step = int(16000 * frame_s)
    segs = []
    for i in range(0, len(audio16k), step):
        segs += [e.audio for e in finder.feed(audio16k[i:i + step]) if isinstance(e, SpeechSegment)]
    last = finder.flush()
    if last is not None:
        segs.append(last.audio)
    texts = []
    for i in range(0, len(segs), 8):
        texts += [t.text for t in asr.transcribe_batch(segs[i:i + 8], words=False)]
    return " ".join(t for t in texts if t)


def eval_asr(directory: Path = typer.Argument(..., exists=True, file_okay=False,
                                              help="WAV files with X.json (call turns) or X.txt references"),
             mode: str = typer.Option("both", help="streaming | whole-file | both"),
             model_dir: Path = typer.Option(None, help="CTranslate2 Whisper directory (default: the setting)"),
             limit: int = typer.Option(0, min=0, help="Only the first N files (0: all)"),
             show: bool = typer.Option(False, help="Print each hypothesis")) -> None:
    """Word error rate (Whisper-style normalisation) of streaming and whole-file transcription."""
    import time

    from livecoach.models.asr import WhisperAsr, load_wav, resample_to_16k
    from livecoach.models.asr_eval import corpus_wer, wer
    from livecoach.settings import Settings
    from livecoach.stream._voice import pool_shape
    from livecoach.stream.vad import SileroVad

    if mode not in ("streaming", "whole-file", "both"):
        raise typer.BadParameter("mode must be streaming, whole-file or both")
    settings = Settings()
    pairs = _pairs(directory)[: limit or None]
    if not pairs:
        typer.echo(f"no WAV files with a .json or .txt reference in {directory}", err=True)
        raise typer.Exit(2)
    _, threads = pool_shape(settings)
    asr = WhisperAsr(model_dir or settings.whisper_model_dir, workers=1, threads_per_worker=threads,
                     min_window_s=settings.asr_min_window_s, beam_size=settings.asr_beam_size)
    asr.warm_up()
    vad = SileroVad()
    results: dict[str, list[tuple[str, str]]] = {"streaming": [], "whole-file": []}
    secs = {"streaming": 0.0, "whole-file": 0.0}
    audio_s = 0.0
    typer.echo(f"{'file':32} {'channel':9} {'words':>5} {'stream':>7} {'whole':>7}")
    for wav, refs in pairs:
        audio, sr = load_wav(wav)
        audio = resample_to_16k(audio, sr)
        for ch, (name, ref) in enumerate(refs.items()):
            col = audio[:, 0 if name in ("mono", "agent") else min(1, audio.shape[1] - 1)]
            audio_s += len(col) / 16000
            row = {}
            for m in ("streaming", "whole-file"):
                if mode not in (m, "both"):
                    continue
                t0 = time.perf_counter()
                hyp = stream_transcribe(asr, vad, col, settings) if m == "streaming" else asr.transcribe_file(col)
                secs[m] += time.perf_counter() - t0
                results[m].append((ref, hyp))
                row[m] = wer(ref, hyp)
                if show:
                    typer.echo(f"  [{m}] {hyp}")
            typer.echo(f"{wav.name[:32]:32} {name:9} {len(ref.split()):5d} "
                       f"{row.get('streaming', float('nan')):7.3f} {row.get('whole-file', float('nan')):7.3f}")
    typer.echo("")
    for m in ("streaming", "whole-file"):
        if results[m]:
            typer.echo(f"{m:10} corpus WER {corpus_wer(results[m]):.3f}  over {len(results[m])} channels, "
                       f"RTF {secs[m] / max(audio_s, 1e-9):.3f}")
    if results["streaming"] and results["whole-file"]:
        gap = corpus_wer(results["streaming"]) - corpus_wer(results["whole-file"])
        typer.echo(f"streaming - whole-file: {gap * 100:+.1f} points (target: within 2)")


def synth_calls_cmd(out: Path = typer.Argument(..., help="Output directory"),
                    calls: int = typer.Option(10, min=1, help="How many calls"),
                    skip: int = typer.Option(0, min=0, help="Skip the first K calls of the transcript file"),
                    rate: int = typer.Option(8000, help="Sample rate: 8000 (telephony) or 16000"),
                    max_seconds: float = typer.Option(600.0, help="Cut each call after this many seconds"),
                    source: Path = typer.Option(None, help="Harper Valley JSONL (default ../shared/data)")) -> None:
    """Synthesise two-channel calls from Harper Valley transcripts with espeak-ng, keeping turn timing."""
    from livecoach.models.asr_synth import DATA, synth_calls

    if rate not in (8000, 16000):
        raise typer.BadParameter("rate must be 8000 or 16000")
    try:
        synth_calls(out, calls=calls, skip=skip, rate=rate, max_seconds=max_seconds, source=source or DATA,
                    log=typer.echo)
    except RuntimeError as exc:
        typer.echo(f"livecoach models synth-calls: {exc}", err=True)
        raise typer.Exit(2)
