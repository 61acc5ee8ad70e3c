"""``livecoach bench load``: many live chats and voice calls at once against one server.

N chat websockets replay real conversations at their recorded pace (÷ ``--speed``) for T minutes,
M voice calls stream a two-channel clip in real time, and one lead board socket watches the signals
arrive. It prints throughput, errors, ack latency, signal latency (ack of the cited utterance → the
signal on the lead's board), voice end-of-speech → final latency, and the server's RSS and CPU.
``--ramp`` steps the chat count up stage by stage and reports the first stage that misses the
targets: the break point of this machine.

By default it starts its own ``livecoach serve`` (free port, temporary data dir, full default
settings) and stops it afterwards; ``--url`` + ``--token`` (+ ``--lead-token``) use a running one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

DEFAULT_STEPS = "25,50,100,200,400,800"


def register(app: typer.Typer) -> None:
    app.command("load")(bench_load)


def bench_load(chats: int = typer.Option(20, min=0, max=5000, help="Concurrent chat connections"),
               voice: int = typer.Option(0, min=0, max=200, help="Concurrent two-channel voice calls"),
               minutes: float = typer.Option(1.0, min=0.02, max=600, help="How long to run (each stage with --ramp)"),
               speed: float = typer.Option(1.0, min=0.01, max=1000, help="Chat replay speed (1: recorded timing)"),
               url: str = typer.Option("", help="A running server (default: start its own livecoach serve)"),
               token: str = typer.Option("", envvar="LIVECOACH_TOKEN", help="Ingest token for --url"),
               lead_token: str = typer.Option("", help="Lead token for --url (signal latency on the board)"),
               server_pid: int = typer.Option(0, help="With --url: the server's PID, for RSS and CPU"),
               calls_file: Path = typer.Option(None, help="Conversations JSONL (default: Harper Valley dev calls)"),
               voice_clip: Path = typer.Option(None, help="WAV call for the voice slots (default: the committed "
                                                          "tests/fixtures/audio two-channel call)"),
               voice_seconds: float = typer.Option(0.0, min=0, help="Stream only the clip's first S seconds (0: all)"),
               database_url: str = typer.Option("", help="For its own server: database URL (default: SQLite "
                                                         "in the temporary data dir)"),
               ramp: bool = typer.Option(False, "--ramp", help="Step the chat count up (--steps) until a target "
                                                                 "breaks"),
               steps: str = typer.Option(DEFAULT_STEPS, help="Chat counts of the --ramp stages"),
               keep_going: bool = typer.Option(False, help="With --ramp: run every step, even past the break"),
               max_ack_p99_ms: float = typer.Option(500.0, help="Target: ack latency p99 (ms)"),
               max_signal_p95_s: float = typer.Option(2.0, help="Target: signal latency p95 (s)"),
               max_voice_p95_s: float = typer.Option(0.0, help="Target: voice final latency p95 (s); 0: not judged"),
               warmup: float = typer.Option(10.0, min=0, help="Seconds of unmeasured load first (models load lazily)"),
               json_out: bool = typer.Option(False, "--json", help="Print the report as JSON")) -> None:
    """Load the server with N chats and M voice calls; print throughput, errors, ack / signal / voice
    latency percentiles, server RSS and CPU. --ramp finds the chat count where the targets break."""
    import json

    from livecoach._load_report import Targets, render

    if url and not token:
        typer.echo("livecoach bench load: --url needs --token (an ingest token)", err=True)
        raise typer.Exit(2)
    try:
        stage_chats = [int(x) for x in steps.split(",") if x.strip()] if ramp else [chats]
    except ValueError:
        typer.echo(f"livecoach bench load: --steps must be comma-separated chat counts, not {steps!r}", err=True)
        raise typer.Exit(2)
    if not stage_chats or any(n < 0 for n in stage_chats):
        typer.echo("livecoach bench load: --steps needs at least one chat count (0 or more)", err=True)
        raise typer.Exit(2)
    say = (lambda m: typer.echo(m, err=True)) if json_out else typer.echo
    try:
        report = run_load(stage_chats=stage_chats, voice=voice, seconds=minutes * 60, speed=speed, url=url,
                          token=token, lead_token=lead_token, server_pid=server_pid or None, calls_file=calls_file,
                          voice_clip=voice_clip, voice_seconds=voice_seconds, database_url=database_url, ramp=ramp,
                          keep_going=keep_going, warmup=warmup,
                          targets=Targets(max_ack_p99_ms, max_signal_p95_s, max_voice_p95_s), log=say)
    except (OSError, ValueError, RuntimeError) as exc:
        typer.echo(f"livecoach bench load: {exc}", err=True)
        raise typer.Exit(2)
    typer.echo(json.dumps(report, indent=2) if json_out else render(report))
    if not ramp and report["stages"][0]["broken"]:
        raise typer.Exit(1)


def run_load(*, stage_chats: list[int], voice: int, seconds: float, speed: float = 1.0, url: str = "",
             token: str = "", lead_token: str = "", server_pid: int | None = None, calls_file: Path | None = None,
             voice_clip: Path | None = None, voice_seconds: float = 0.0, database_url: str = "", ramp: bool = False,
             keep_going: bool = False, warmup: float = 10.0, targets=None, log=print) -> dict[str, Any]:
    """Run the stages and return the report (see ``render`` for its printed form)."""
    import asyncio
    import os

    from livecoach._load_report import Targets
    from livecoach._load_run import (SIGNAL_METHOD, Session, default_calls_file, default_voice_clip, load_clip,
                                     run_stage)
    from livecoach._load_server import OwnServer, load_average, wait_voice_ready
    from livecoach.stream.replay import load_conversations

    targets = targets or Targets()
    calls_path = Path(calls_file) if calls_file else default_calls_file()
    convs = load_conversations(calls_path)
    if not convs:
        raise ValueError(f"{calls_path}: no conversations")
    clip_path = Path(voice_clip) if voice_clip else default_voice_clip()
    clip = None
    if voice:
        if not clip_path.exists():
            raise ValueError(f"voice clip {clip_path} not found (pass --voice-clip)")
        clip = load_clip(clip_path, voice_seconds)
    own = None if url else OwnServer(database_url, log=log)
    report: dict[str, Any] = {}
    try:
        how = "given by --url"
        if own is not None:
            log(f"starting livecoach serve (full default settings, data in {own.dir}) …")
            own.start()
            url, token, lead_token, server_pid = own.url, own.tokens["ingest"], own.tokens["lead"], own.pid
            how = (f"own livecoach serve, {'SQLite' if not database_url else database_url.split('://')[0]}, "
                   "detectors + policy + post-call on")
        if voice and lead_token:
            log("waiting for the speech models to load …")
            st = wait_voice_ready(url, lead_token)
            if not st.get("asr_loaded"):
                log("the speech models are not loaded yet; voice calls will wait for them")
        report = {
            "server": {"url": url, "how": how, "pid": server_pid, "cores": os.cpu_count()},
            "calls_file": str(calls_path), "conversations": len(convs),
            "voice_clip": (f"{clip_path} ({clip.seconds:.1f} s, {len(clip.channels)} channels)" if clip else None),
            "signal_method": SIGNAL_METHOD if lead_token else "not measured (no --lead-token)",
            "targets": targets.describe(), "ramp": ramp, "load_average_start": load_average(),
            "warmup": None, "stages": [], "break_point": None, "last_good_chats": None,
        }
        sess = Session(url=url, ingest_token=token, lead_token=lead_token, convs=convs, clip=clip, speed=speed,
                       server_pid=server_pid, targets=targets)

        async def main() -> None:
            from livecoach._load_clients import BoardWatch, preflight

            await preflight(url, token, lead_token)
            stop = asyncio.Event()
            watcher = None
            if lead_token:
                sess.board = BoardWatch(url, lead_token)
                watcher = asyncio.create_task(sess.board.run(stop))
                await asyncio.sleep(0.5)
            try:
                if warmup > 0:   # models load lazily: the first calls would measure the loading
                    log(f"warming up for {warmup:g} s (not measured) …")
                    w = await run_stage(sess, 0, min(4, max(stage_chats)) or 1, 1 if voice else 0, warmup,
                                        speed=max(speed, 5.0))
                    report["warmup"] = {"seconds": w["wall_s"], "acked": w["chat"]["acked"],
                                        "errors": w["chat"]["errors"] + w["voice"]["errors"]}
                for i, n in enumerate(stage_chats, 1):
                    log(f"stage {i}: {n} chats + {voice} voice calls for {seconds:.0f} s …")
                    st = await run_stage(sess, i, n, voice, seconds)
                    report["stages"].append(st)
                    log(f"  acked {st['chat']['acked']}, errors {st['chat']['errors'] + st['voice']['errors']}, "
                        f"ack p99 {st['chat']['ack_ms']['p99']} ms, signal p95 {st['signals']['latency_s']['p95']} s"
                        f" -> {'ok' if not st['broken'] else '; '.join(st['broken'])}")
                    if st["broken"]:
                        if report["break_point"] is None:
                            report["break_point"] = {"stage": i, "chats": n, "voice_calls": voice,
                                                     "broken": st["broken"]}
                        if not keep_going:
                            break
                    elif report["break_point"] is None:
                        report["last_good_chats"] = n
            finally:
                stop.set()
                if watcher is not None:
                    await asyncio.gather(watcher, return_exceptions=True)

        asyncio.run(main())
        return report
    finally:
        if own is not None:
            errors = any(st["chat"]["errors"] or st["voice"]["errors"] for st in report.get("stages", []))
            log("stopping the server …" + (f" (its log is kept: {own.log_file})" if errors else ""))
            own.stop(keep_dir=errors)
            if errors:
                report["server"]["log"] = str(own.log_file)
