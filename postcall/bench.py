"""``livecoach bench notes``: how long drafting a QA note takes for a 10-minute call."""

from __future__ import annotations

import typer


def _ten_minute_call(minutes: float = 10.0):
    """A call built from real Harper Valley turns (or the demo calls), repeated to ``minutes``."""
    import json
    from pathlib import Path

    from livecoach.postcall.evaluate import conversation_to_call

    root = Path(__file__).resolve().parents[1]
    src = root.parent / "shared" / "data" / "harper_valley" / "calls_dev.jsonl"
    if not src.exists():
        src = root / "livecoach" / "demo_calls.jsonl"
    convs = [json.loads(x) for x in open(src, encoding="utf-8") if x.strip()]
    turns, offset = [], 0
    while offset < minutes * 60_000:
        for c in convs:
            for t in c["turns"]:
                if "start_ms" not in t:
                    continue
                turns.append({**t, "start_ms": t["start_ms"] + offset, "end_ms": t.get("end_ms", t["start_ms"]) + offset})
            offset = turns[-1]["end_ms"] + 2000 if turns else offset + 60_000
            if offset >= minutes * 60_000:
                break
    conv = {"id": "bench-10min", "caller_name": convs[0].get("caller_name"), "agent_name": "bench",
            "partner_rating": 7, "duration_ms": offset, "turns": turns}
    return conversation_to_call(conv)


def register(app: typer.Typer) -> None:
    @app.command("notes")
    def bench_notes(n: int = typer.Option(30, min=1, help="Notes to draft"),
                    minutes: float = typer.Option(10.0, help="Length of the synthetic call"),
                    detectors: bool = typer.Option(False, help="Include tier-0 detector scores (loads the encoder)"),
                    tier1: bool = typer.Option(True, help="Include the tier-1 context judgements (loads the window "
                                               "classifier; --no-tier1 = rules, as with tier1_backend=off)"),
                    store: bool = typer.Option(True, help="Read the call from a fresh SQLite store each time, "
                                               "as the stage does")) -> None:
        """Draft the note of a 10-minute call N times; print latency percentiles and notes/s."""
        import asyncio
        import tempfile
        import time
        from pathlib import Path

        from livecoach.events import CallEnded, CallStarted, Utterance
        from livecoach.postcall import _detectors
        from livecoach.postcall._scoring import draft_note
        from livecoach.postcall.drafter import draft_for_call
        from livecoach.postcall.rubric import load_rubric

        from livecoach.postcall import _tier1
        from livecoach.settings import Settings

        call = _ten_minute_call(minutes)
        rubric = load_rubric()
        reader = None
        if tier1:
            reader = _tier1.reader_for(Settings())
            t_load = time.perf_counter()
            ok = reader.warm_up()
            typer.echo(f"tier-1: {'ready' if ok else reader.status + ' (rules only)'} "
                       f"(load {time.perf_counter() - t_load:.1f} s, once per process)")
        if detectors:
            typer.echo(f"detectors: {'ready' if _detectors.warm_up() else 'unavailable (rules only)'}")
        typer.echo(f"call: {len(call['utterances'])} utterances over {minutes:g} min")
        times = []
        if store:
            from livecoach.store import Store

            tmp = tempfile.mkdtemp()
            st = Store(f"sqlite:///{Path(tmp) / 'bench.db'}", sqlite_synchronous="OFF")

            async def load():
                await st.append(CallStarted(call_id=call["call_id"], seq=1, agent_id="bench", customer=call["customer"]))
                for u in call["utterances"]:
                    await st.append(Utterance(call_id=call["call_id"], seq=u["seq"], speaker=u["speaker"],
                                              text=u["text"], t_start=u["t_start"], t_end=u["t_end"]))
                await st.append(CallEnded(call_id=call["call_id"], seq=call["utterances"][-1]["seq"] + 1))

            asyncio.run(load())
            for _ in range(n):
                t0 = time.perf_counter()
                body = draft_for_call(st, rubric, call["call_id"], use_detectors=detectors, tier1=reader)
                times.append((time.perf_counter() - t0) * 1000)
            st.close()
        else:
            for _ in range(n):
                t0 = time.perf_counter()
                body = draft_note(call, rubric, use_detectors=detectors, tier1=reader)
                times.append((time.perf_counter() - t0) * 1000)
        xs = sorted(times)
        typer.echo(f"scorer: {body['scorer']}; tier-1 {body['tier1']['status']} "
                   f"({body['tier1']['windows_read']} windows, {body['tier1']['elapsed_ms']} ms in the last note)")

        def pct(q):
            return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]

        typer.echo(f"draft ms: p50 {pct(50):.1f}  p95 {pct(95):.1f}  p99 {pct(99):.1f}  max {xs[-1]:.1f}")
        typer.echo(f"throughput {1000 * len(xs) / sum(xs):.1f} notes/s (one thread; machine shared, figures noisy)")
        typer.echo(f"budget 2000 ms: {'OK' if pct(99) < 2000 else 'OVER'}")
