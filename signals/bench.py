"""``livecoach bench detectors``: tier-0 latency and throughput on this machine (a benchmark, not a test).

Prints the load average (other processes on the machine move every figure), p50/p99 per utterance
at batch 1 (tokenizer alone, the encoder branch the speaker needs, then everything: encoder + every
head + agent behaviours), then the full stage (Tier0Detectors with its micro-batcher) under N
concurrent calls replaying real Harper Valley turns back to back, and utterances/s.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("detectors")
    def detectors(calls: int = typer.Option(200, help="Concurrent calls for the load test"),
                  utterances: int = typer.Option(400, help="Utterances timed at batch 1"),
                  seconds: float = typer.Option(15.0, help="Length of each load test"),
                  speed: float = typer.Option(5.0, help="Paced test: replay the calls' real timing N times faster"),
                  threads: int = typer.Option(None, help="onnxruntime threads (default: settings.onnx_threads)"),
                  precision: str = typer.Option(None, help="int8 | fp32 (default: settings.encoder_precision)"),
                  min_tokens: int = typer.Option(0, help="Only utterances of at least this many tokens (e.g. 15 for "
                                                 "the issue's 20-token reference)")) -> None:
        """p50/p99 per utterance at batch 1 and under concurrent calls; utterances/s."""
        import asyncio
        import os
        import time

        import numpy as np

        from livecoach.events import CallStarted, Utterance
        from livecoach.models.data import harper_valley_calls
        from livecoach.settings import Settings
        from livecoach.signals._behaviours import clean_text
        from livecoach.signals._scoring import Scorer
        from livecoach.signals.detectors import Tier0Detectors

        upd = {k: v for k, v in {"onnx_threads": threads, "encoder_precision": precision}.items() if v}
        s = Settings(**upd) if upd else Settings()
        s.ensure_dirs()
        t0 = time.perf_counter()
        scorer = Scorer.from_settings(s)
        typer.echo(f"encoder {scorer.encoder.precision} ({scorer.encoder.path.name}), "
                   f"{s.onnx_threads} parallel single-threaded runs (length-bucketed), "
                   f"{os.cpu_count()} cores; loaded in {time.perf_counter() - t0:.2f} s")
        hv = harper_valley_calls()
        turns = [(t["text"], t["speaker"]) for c in hv for t in c["turns"] if clean_text(t["text"])]
        ntoks = [len(scorer.encoder.tokenizer.encode(clean_text(t)).ids) for t, _ in turns]
        turns = [tu for tu, n in zip(turns, ntoks) if n >= min_tokens]
        if not turns:
            raise typer.BadParameter(f"no Harper Valley dev utterance has {min_tokens} tokens or more")
        ntok = np.mean([n for n in ntoks if n >= min_tokens])
        typer.echo(f"{len(turns)} real utterances (Harper Valley dev{f', >= {min_tokens} tokens' if min_tokens else ''}), "
                   f"mean {ntok:.1f} tokens")

        def load_average() -> str:
            try:
                return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" ({os.cpu_count()} cores)"
            except OSError:
                return "load average unknown"

        typer.echo(load_average())

        def pct(xs):
            a = np.asarray(xs) * 1000
            return f"p50 {np.percentile(a, 50):.2f} ms  p99 {np.percentile(a, 99):.2f} ms  mean {a.mean():.2f} ms"

        for w in turns[:30]:
            scorer.score([w])
        tok_t, enc_t, all_t, cpu_t = [], [], [], []
        tok = scorer.encoder.tokenizer
        for i in range(utterances):
            text, sp = turns[i % len(turns)]
            clean = clean_text(text)
            branches = ("emb",) if sp == "agent" else tuple(scorer.customer_inputs)
            a = time.perf_counter()
            tok.encode(clean)
            b = time.perf_counter()
            scorer.encoder.encode([clean], outputs=branches)
            c = time.perf_counter()
            c_cpu = time.thread_time()  # batch 1 runs on this thread: its CPU time is the work itself
            scorer.score([(text, sp)])
            d = time.perf_counter()
            cpu_t.append(time.thread_time() - c_cpu)
            tok_t.append(b - a)
            enc_t.append(c - b)
            all_t.append(d - c)
        typer.echo(f"batch 1, tokenizer only:               {pct(tok_t)}")
        typer.echo(f"batch 1, encoder (speaker's branch):   {pct(enc_t)}")
        typer.echo(f"batch 1, encoder + heads + behaviours: {pct(all_t)}")
        typer.echo(f"  the same, CPU time of this thread:   {pct(cpu_t)}  (wall minus this = waiting for a core)")
        for bs in (8, 32, 64):
            n = 0
            a, a_cpu = time.perf_counter(), time.process_time()
            while time.perf_counter() - a < 3.0:
                k = (n // bs) % max(1, len(turns) // bs)
                scorer.score(turns[k * bs:(k + 1) * bs])
                n += bs
            cpu_ms = (time.process_time() - a_cpu) / n * 1000  # every thread of this process
            alone = os.cpu_count() * 1000 / cpu_ms
            typer.echo(f"batch {bs:>2} (direct): {n / (time.perf_counter() - a):7.0f} utterances/s  "
                       f"({cpu_ms:.2f} CPU ms each: {alone:.0f}/s if the cores were ours alone)")

        stage = Tier0Detectors(s, scorer=scorer)

        async def load(paced: bool) -> tuple[list[float], int, float, int]:
            await stage.start()
            lat: list[float] = []
            stop_at = time.perf_counter() + seconds
            count = 0

            async def one_call(k: int) -> None:
                nonlocal count
                c = hv[k % len(hv)]
                if paced:  # calls start spread over the first call length
                    await asyncio.sleep((k / calls) * c["duration_ms"] / 1000 / speed)
                start = time.perf_counter()
                cid = f"bench-{k}"
                st: dict = {}
                await stage.handle(CallStarted(call_id=cid, seq=1, agent_id="a"), st)
                seq = 1
                while time.perf_counter() < stop_at:
                    for t in c["turns"]:
                        if time.perf_counter() >= stop_at:
                            return
                        seq += 1
                        if paced:
                            due = start + t["start_ms"] / 1000 / speed
                            if due > time.perf_counter():
                                await asyncio.sleep(due - time.perf_counter())
                        u = Utterance(call_id=cid, seq=seq, speaker=t["speaker"], text=t["text"],
                                      t_start=t["start_ms"] / 1000)
                        a = time.perf_counter()
                        await stage.handle(u, st)
                        lat.append(time.perf_counter() - a)
                        count += 1
                    start = time.perf_counter()

            a = time.perf_counter()
            await asyncio.gather(*(one_call(k) for k in range(calls)))
            el = time.perf_counter() - a
            b = stage.batcher
            batches, items = (b.batches, b.items) if b else (0, 0)
            await stage.stop()
            return lat, count, el, items / max(1, batches)

        for paced in (False, True):
            lat, count, el, mean_batch = asyncio.run(load(paced))
            how = (f"paced at {speed:g}x real time" if paced else "back to back (saturating)")
            typer.echo(f"{calls} concurrent calls through Tier0Detectors, {how} (batch max {s.detector_batch_max}, "
                       f"wait {s.detector_batch_wait_ms} ms): {count / el:.0f} utterances/s, mean encoder batch "
                       f"{mean_batch:.1f}")
            typer.echo(f"  per-utterance latency: {pct(lat)}")
        typer.echo(load_average())
