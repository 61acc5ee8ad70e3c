"""``livecoach bench voice``: end-of-speech → final latency, ASR real-time factor, concurrent calls.

It starts ``livecoach serve`` in a subprocess (or uses ``--url``), then streams synthetic two-channel
calls in real time: first one call, then more at once, level by level, until the p95 latency passes
the target. Latency is measured against the true end of each turn (from the calls' JSON), at the
client, when the final arrives: what a lead's screen would see.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("voice")(bench_voice)


def _calls_dir(settings, log) -> Path:
    d = settings.cache_dir / "voice_bench_calls"
    if d.exists() and any(d.glob("*.wav")):
        return d
    try:
        from livecoach.models.asr_synth import synth_calls

        log(f"synthesising bench calls into {d} (espeak-ng) …")
        synth_calls(d, calls=12, skip=20, rate=8000, max_seconds=90, log=lambda _m: None)
        return d
    except RuntimeError as exc:
        fixture = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "audio"
        log(f"{exc}; using the test fixture call")
        return fixture


def _start_server(workdir: Path, detectors: bool, env_extra: dict[str, str]):
    import socket
    import subprocess
    import sys


    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, LIVECOACH_DATA_DIR=str(workdir), LIVECOACH_DATABASE_URL="",
               LIVECOACH_DETECTORS=str(detectors).lower(), LIVECOACH_POSTCALL="false", **env_extra)
    proc = subprocess.Popen([sys.executable, "-m", "livecoach.cli", "serve", "--host", "127.0.0.1", "--port",
                             str(port)], env=env, cwd=workdir, stdout=open(workdir / "serve.log", "w"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    from livecoach.ready import wait_healthy

    try:
        wait_healthy(url, timeout=180, alive=lambda: proc.poll() is None)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}; see {workdir / 'serve.log'}") from None
    from livecoach.auth import TokenStore
    from livecoach.settings import Settings

    ts = TokenStore.from_settings(Settings(data_dir=workdir, database_url=""))
    tokens = {r: ts.create(role=r, name=f"bench-{r}") for r in ("ingest", "admin")}
    return proc, url, tokens


def _stats(url: str, token: str) -> dict:
    import httpx

    try:
        return httpx.get(url + "/v1/voice/stats", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
    except Exception:
        return {}


def bench_voice(url: str = typer.Option("", help="Use this server instead of starting one"),
                token: str = typer.Option("", help="Ingest token for --url"),
                admin_token: str = typer.Option("", help="Lead/admin token for --url (reads /v1/voice/stats)"),
                calls_dir: Path = typer.Option(None, help="WAV calls with JSON turns (default: synthesised once "
                                                          "into the cache)"),
                seconds: float = typer.Option(40.0, min=5, help="Stream the first S seconds of each call"),
                levels: str = typer.Option("1,2,4,6,8,10,12,14", help="Concurrent two-channel calls to try"),
                target: float = typer.Option(1.5, help="p95 latency target for the concurrency figure (s)"),
                detectors: bool = typer.Option(False, help="Run the tier-0 detectors in the server too"),
                workers: int = typer.Option(0, help="LIVECOACH_ASR_WORKERS for the started server"),
                threads: int = typer.Option(0, help="LIVECOACH_ASR_THREADS_PER_WORKER for the started server"),
                stagger: float = typer.Option(0.7, min=0, help="Start call i after i x S seconds"),
                verbose: bool = typer.Option(False, help="Print every final's latency")) -> None:
    """Voice latency (end of speech → final) p50/p95, ASR real-time factor, and how many concurrent
    two-channel calls hold p95 <= target on this machine."""
    import asyncio
    import signal
    import tempfile

    from livecoach.settings import Settings
    from livecoach.stream.audio_replay import AudioCall, load_audio_calls, replay_audio

    settings = Settings()
    src = calls_dir or _calls_dir(settings, typer.echo)
    calls = [c for c in load_audio_calls(src, max_seconds=seconds) if c.turns]
    if not calls:
        typer.echo(f"no calls with JSON turns in {src}", err=True)
        raise typer.Exit(2)
    proc = None
    tmp = tempfile.TemporaryDirectory(prefix="lc-bench-voice-")
    try:
        if url:
            tokens = {"ingest": token, "admin": admin_token}
        else:
            env = {}
            if workers:
                env["LIVECOACH_ASR_WORKERS"] = str(workers)
            if threads:
                env["LIVECOACH_ASR_THREADS_PER_WORKER"] = str(threads)
            proc, url, tokens = _start_server(Path(tmp.name), detectors, env)
        import time

        deadline = time.monotonic() + 120
        st = _stats(url, tokens["admin"])
        while not st.get("asr_loaded") and time.monotonic() < deadline:  # the model loads after start-up
            time.sleep(0.5)
            st = _stats(url, tokens["admin"])
        typer.echo(f"server {url}: {os.cpu_count()} cores, ASR {st.get('asr_workers', '?')} workers x "
                   f"{st.get('asr_threads_per_worker', '?')} threads, model {Path(str(st.get('asr_model', '?'))).name}; "
                   f"calls from {src}, {seconds:g} s each, 2 channels, real time, starts {stagger:g} s apart")
        typer.echo("(shared machine: other work on these cores makes the figures noisy)")
        typer.echo(f"{'calls':>5} {'finals':>6} {'p50 s':>6} {'p95 s':>6} {'max s':>6} {'late':>5} {'missed':>6} "
                   f"{'RTF':>6} {'shed':>5} {'errors':>6}")
        best, single = 0, None
        for n in [int(x) for x in levels.split(",") if x.strip()]:
            batch = [AudioCall(f"bench-{n}-{i}-{c.call_id[:8]}", c.rate, c.channels, c.turns)
                     for i, c in enumerate(calls[j % len(calls)] for j in range(n))]
            before = _stats(url, tokens["admin"])
            res = asyncio.run(replay_audio(batch, url=url, token=tokens["ingest"], speed=1.0, concurrency=n,
                                           stagger_s=stagger))
            after = _stats(url, tokens["admin"])
            busy = after.get("asr_busy_ms", 0) - before.get("asr_busy_ms", 0)
            heard = after.get("audio_received_ms", 0) - before.get("audio_received_ms", 0)
            shed = after.get("asr_partials_shed", 0) - before.get("asr_partials_shed", 0)
            late = sum(1 for x in res.latencies if x > target)
            rtf = busy / heard if heard else float("nan")
            typer.echo(f"{n:5d} {len(res.latencies):6d} {res.pct(0.5):6.2f} {res.pct(0.95):6.2f} "
                       f"{max(res.latencies, default=float('nan')):6.2f} {late:5d} {res.missed_turns:6d} "
                       f"{rtf:6.3f} {shed:5d} {len(res.errors):6d}")
            if verbose:
                typer.echo("      per turn: " + " ".join(f"{x:.2f}" for x in res.latencies))
            if single is None:
                single = res
            if res.pct(0.95) <= target and not res.errors and res.latencies:
                best = n
            else:
                break
        typer.echo("")
        if single is not None:
            typer.echo(f"one call: end of speech -> final p50 {single.pct(0.5):.2f} s, p95 {single.pct(0.95):.2f} s")
        typer.echo(f"largest number of concurrent two-channel calls with p95 <= {target:g} s: {best}")
        typer.echo("RTF = ASR worker busy time per second of call audio received (all channels)")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except Exception:
                proc.kill()
        tmp.cleanup()
