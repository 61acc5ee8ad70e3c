"""``livecoach bench tier1`` (tier-0 vs tier-1 on the escalated slice), ``bench tier1-train`` (fit the
tier-1 window classifier) and ``bench policy`` (the policy stage's hot path: percentiles, throughput).

Register: add ``"livecoach.signals.bench_tier1"`` to the ``bench`` plugin list in livecoach/cli.py.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("tier1-train")
    def tier1_train(encoder: str = typer.Option("mpnet", help="mpnet (all-mpnet-base-v2 from the PyPI parts, "
                                                              "the tier-1 model) or minilm (the fallback)"),
                    precision: str = typer.Option("int8", help="mpnet graph: int8 (run time) or fp32"),
                    per_label: int = typer.Option(500, help="Inserted messages per label"),
                    threads: int = typer.Option(2, help="Encoder threads")) -> None:
        """Fit the tier-1 window classifier on dialogues built from Harper Valley + Banking77/Bitext."""
        from livecoach.settings import Settings
        from livecoach.signals._tier1_backends import model_files
        from livecoach.signals._tier1_train import train

        meta = train(encoder, Settings().cache_dir, threads=threads, per_label=per_label, precision=precision)
        typer.echo(f"tier-1 model trained on {meta['train_dialogues']} dialogues with {encoder} "
                   f"(encoding {meta['train_encode_seconds']} s); counts {meta['train_counts']}; "
                   f"written to {model_files(encoder)[0].name}")

    @app.command("tier1")
    def tier1_eval(encoder: str = typer.Option("both", help="mpnet, minilm or both"),
                   per_label: int = typer.Option(200, help="Inserted dev messages per label"),
                   threads: int = typer.Option(2, help="Encoder threads for the evaluation set"),
                   latency_cases: int = typer.Option(200, help="Cases timed one at a time (runtime backend)"),
                   latency_threads: str = typer.Option("1,2", help="Thread counts to time the runtime with"),
                   latency_only: bool = typer.Option(False, help="Only time the runtime (skip the evaluation)")) -> None:
        """Tier-0 vs tier-1 precision and recall on the escalated slice of built dev dialogues, per
        tier-1 encoder, and the runtime per case."""
        import time

        from livecoach.settings import Settings
        from livecoach.signals._policy_config import default_policy_path, load_policy
        from livecoach.signals._tier1_backends import WindowClassifierBackend, model_files
        from livecoach.signals._tier1_train import build_dialogues, compare, tier0_scores, tier1_probs
        from livecoach.signals.tier1 import Tier1Case

        s = Settings()
        policy = load_policy(s.policy_file or default_policy_path())
        encoders = ["mpnet", "minilm"] if encoder == "both" else [encoder]
        dev = build_dialogues("dev", per_label=per_label, natural=300)
        typer.echo(f"dev dialogues: {len(dev)} (dev Banking77/Bitext messages and the 52 hand-written hard "
                   f"cases inserted into 20 held-out Harper Valley calls, plus 300 untouched customer turns)")
        if not latency_only:
            p0, what0 = tier0_scores(dev, s.cache_dir)
            typer.echo(f"tier-0: {what0}")
        lo, hi = policy.tier1.uncertainty_band

        def _time_runtime(enc: str, dev) -> None:
            import os

            load = os.getloadavg()[0]
            for th in [int(x) for x in latency_threads.split(",") if x.strip()]:
                be = WindowClassifierBackend(s.cache_dir, threads=th, encoder=enc)
                t1 = time.perf_counter()
                be.warm_up()
                load_s = time.perf_counter() - t1
                lat = []
                for d in dev[:latency_cases]:
                    t1 = time.perf_counter()
                    be.score(Tier1Case("bench", "churn_intent", 0.6, d.window, d.target))
                    lat.append(time.perf_counter() - t1)
                lat.sort()
                pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
                typer.echo(f"[{enc}] runtime ({be.name}), one case at a time, {th} thread(s): p50 {pct(0.5):.0f} ms  "
                           f"p95 {pct(0.95):.0f} ms  p99 {pct(0.99):.0f} ms  max {lat[-1] * 1000:.0f} ms; "
                           f"{len(lat) / sum(lat):.1f} cases/s; model load {load_s:.1f} s; machine load average "
                           f"{load:.1f} on {os.cpu_count()} cores")

        for enc in encoders:
            if not model_files(enc)[0].exists():
                typer.echo(f"[{enc}] no artefact ({model_files(enc)[0].name}): run `livecoach bench tier1-train "
                           f"--encoder {enc}`")
                continue
            if latency_only:
                _time_runtime(enc, dev)
                continue
            t0 = time.monotonic()
            p1, meta = tier1_probs(dev, s.cache_dir, threads, encoder=enc)
            r = compare(dev, p0, p1, policy)
            typer.echo(f"[{enc}] tier-1: window classifier on {meta.get('encoder')} "
                       f"({meta.get('precision', 'fp32')}, {meta.get('runtime', '')}), trained {meta.get('trained')}, "
                       f"{policy.tier1.context_turns} turns; confirm at p >= {policy.tier1.confirm_at}; "
                       f"dev set scored in {time.monotonic() - t0:.0f} s")
            typer.echo(f"[{enc}] escalated slice (tier-0 p in [{lo}, {hi}) or high-stakes >= {lo}): "
                       f"{r['slice']} cases, {r['positives']} true")
            for name in ("tier0", "tier1"):
                p, rc, npred, _ = r[name]
                typer.echo(f"[{enc}]   {name}: precision {p:.3f}  recall {rc:.3f}  ({npred} raised)")
            for k, v in r["per_kind"].items():
                typer.echo(f"[{enc}]   {k:20s} slice {v['slice']:4d}  tier0 P {v['tier0'][0]:.3f} R {v['tier0'][1]:.3f}"
                           f"  | tier1 P {v['tier1'][0]:.3f} R {v['tier1'][1]:.3f}")
            curve = []
            for c in (0.1, 0.2, 0.3, 0.4, 0.5):
                rc = compare(dev, p0, p1, policy.model_copy(
                    update={"tier1": policy.tier1.model_copy(update={"confirm_at": c})}))
                curve.append(f"{c}: P {rc['tier1'][0]:.3f} R {rc['tier1'][1]:.3f}")
            typer.echo(f"[{enc}] tier-1 at other confirm_at values: " + "; ".join(curve))
            _time_runtime(enc, dev)

    @app.command("policy")
    def policy_bench(n: int = typer.Option(20000, help="Detections to push through"),
                     calls: int = typer.Option(200, help="Distinct calls")) -> None:
        """Latency of one policy decision (tier-1 off) and throughput, in-process."""
        import asyncio
        import random
        import tempfile
        import time

        from livecoach.events import CallStarted, EvidenceRef, Signal, Utterance
        from livecoach.settings import Settings
        from livecoach.signals.policy import SignalPolicy

        kinds = ["frustration_spike", "churn_intent", "complaint", "identity_not_verified", "upgrade_interest"]

        async def run() -> list[float]:
            pol = SignalPolicy(Settings(data_dir=tempfile.mkdtemp(), phase=3, tier1_backend="off"))
            await pol.start()
            states = {f"c{i}": {} for i in range(calls)}
            for cid, st in states.items():
                await pol.handle(CallStarted(call_id=cid, seq=1, agent_id="a"), st)
            rng = random.Random(1)
            lat = []
            for i in range(n):
                cid = f"c{rng.randrange(calls)}"
                t = i * 0.5
                await pol.handle(Utterance(call_id=cid, seq=2 + i, speaker="customer", text="hello there", t_start=t),
                                 states[cid])
                sig = Signal(call_id=cid, kind=rng.choice(kinds), confidence=rng.random(),
                             evidence=[EvidenceRef(seq=2 + i, excerpt="hello there", t=t)], detector="bench")
                t0 = time.perf_counter()
                await pol.handle(sig, states[cid])
                lat.append(time.perf_counter() - t0)
            await pol.stop()
            return lat

        lat = sorted(asyncio.run(run()))
        pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e6  # noqa: E731
        typer.echo(f"policy decisions: {len(lat)}; p50 {pct(0.5):.0f} us  p95 {pct(0.95):.0f} us  "
                   f"p99 {pct(0.99):.0f} us; throughput {len(lat) / sum(lat):.0f}/s (one core, shared machine)")

    @app.command("cues")
    def cues_bench(calls_file: str = typer.Option("", help="Conversations JSONL (default: Harper Valley dev)"),
                   limit: int = typer.Option(0, help="First N calls only (0: all)"),
                   phase: int = typer.Option(3, help="Rollout phase to measure"),
                   constructed: int = typer.Option(30, help="Constructed calls per label (labelled dev messages "
                                                            "inserted into real calls; 0: skip)"),
                   show: bool = typer.Option(False, help="List every signal")) -> None:
        """Replay calls through tier-0 + policy + tier-1 in-process: agent cues per call against the
        cap, lead-feed precision (and recall) against hand labels; real calls and constructed ones apart."""
        import asyncio
        import json
        import tempfile
        import time
        from collections import Counter
        from pathlib import Path

        from livecoach.models.data import shared_data_dir
        from livecoach.settings import Settings
        from livecoach.signals._cues_eval import CONSTRUCTED_KINDS, constructed_calls, replay_calls, summarise
        from livecoach.signals._policy_config import AGENT_CAP_CEILING, default_policy_path, load_policy
        from livecoach.stream.replay import load_conversations

        path = Path(calls_file) if calls_file else shared_data_dir() / "harper_valley" / "calls_dev.jsonl"
        convs = load_conversations(path)
        convs = convs[:limit] if limit else convs
        s = Settings(data_dir=Path(tempfile.mkdtemp()), phase=phase)
        pol = load_policy(s.policy_file or default_policy_path())
        cap = min(pol.agent.cap_per_call, AGENT_CAP_CEILING)

        def judged_line(c: dict) -> str:
            parts = [f"{k} {v['right']}/{v['raised']} right"
                     + (f", found {v['found']}/{v['labelled']} (recall {v['recall']})" if v["labelled"] else "")
                     for k, v in c["per_kind"].items()]
            return "; ".join(parts) or "nothing raised, nothing labelled"

        def report(title: str, cs: list[dict], got: dict, r: dict, took: float) -> None:
            a = r["agent_cues"]
            c = r["customer_side"]
            typer.echo(f"== {title}: {r['calls']} calls, phase {phase}, in {took:.0f} s")
            typer.echo(f"  agent cues per call: median {a['median']}, mean {a['mean']}, max {a['max']} (cap {cap}: "
                       f"{'no call over it' if a['max'] <= cap else 'EXCEEDED'}), share with none "
                       f"{a['share_with_none']}, distribution {a['distribution']}")
            typer.echo(f"  lead signals raised by tier-0: {r['lead_signals_raised_by_tier0']}")
            typer.echo(f"  lead feed after tier-1 (withdrawn ones struck out): {r['lead_signals_by_kind']}")
            c0 = r["customer_side_tier0"]
            typer.echo(f"  customer side vs hand labels ({c['calls_judged']} labelled calls, {c['labelled']} "
                       f"positive turns):")
            typer.echo(f"    as tier-0 raised it:  precision {c0['precision']} ({c0['right']}/{c0['raised']}), recall "
                       f"{c0['recall']} ({c0['found']}/{c0['labelled']}); {judged_line(c0)}")
            typer.echo(f"    lead feed (tier-1 in): precision {c['precision']} ({c['right']}/{c['raised']}), recall "
                       f"{c['recall']} ({c['found']}/{c['labelled']}); {judged_line(c)}")
            typer.echo(f"  compliance kinds vs agent-behaviour labels: {r['lead_precision_judged']} -> "
                       f"{r['lead_precision_overall']}")
            typer.echo(f"  lead-feed precision, every judged signal: {r['lead_precision_all_judged']} "
                       f"({r['lead_judged_all']}); unjudged: {r['unjudged_lead_signals']}")
            typer.echo(f"  tier-1: {json.dumps(r['tier1'])}")
            if show:
                for conv in cs:
                    for sig in got.get(conv["id"], []):
                        ex = " / ".join(e.excerpt for e in sig.evidence)[:90]
                        typer.echo(f"    {conv['id']} {sig.audience:5s} t{sig.tier} {sig.kind:22s} "
                                   f"{sig.confidence:.2f} {sig.details.get('verdict', ''):14s} {ex}")

        t0 = time.monotonic()
        got = asyncio.run(replay_calls(convs, s))
        report(f"REAL calls ({path.name}, hand labels: tests/fixtures/customer_lead_labels.jsonl + "
               f"agent_behaviours.jsonl)", convs, got, summarise(convs, got), time.monotonic() - t0)
        if constructed:
            built, labels = constructed_calls(per_label=constructed)
            counts = Counter(c["inserted"]["label"] for c in built)
            t0 = time.monotonic()
            s2 = Settings(data_dir=Path(tempfile.mkdtemp()), phase=phase)
            got2 = asyncio.run(replay_calls(built, s2))
            report(f"CONSTRUCTED calls (one labelled message inserted into one of the 20 Harper Valley calls tier-1 "
                   f"did not train on: {constructed} Banking77/Bitext dev messages per label + the 52 hand-written "
                   f"hard cases; inserted labels {dict(counts)})", built, got2,
                   summarise(built, got2, customer=labels, customer_kinds=CONSTRUCTED_KINDS), time.monotonic() - t0)
