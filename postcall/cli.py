"""``livecoach qa …``: lead-run samples and measurement of the note drafter."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    @app.command("sample")
    def sample(queue: str = typer.Option(None, "--queue", help="Queue to sample (default: all queues)"),
               n: int = typer.Option(100, "--n", min=1, max=100_000, help="How many ended conversations"),
               by: str = typer.Option("lead", help="Who asked for the sample"),
               seed: int = typer.Option(None, help="Random seed (repeatable samples)"),
               draft_missing: bool = typer.Option(True, help="Draft notes for sampled calls that have none")) -> None:
        """Pick N ended conversations of a queue for lead review; print the pilot metric over them."""
        import asyncio

        from livecoach.cli import _settings
        from livecoach.postcall import records
        from livecoach.postcall.drafter import draft_for_call, note_event
        from livecoach.postcall.rubric import load_rubric
        from livecoach.store import Store

        s = _settings()
        s.ensure_dirs()
        store = Store(s.database_url)
        try:
            async def run():
                res = await store.run_write(lambda c: records.sample(c, queue, n, by, seed))
                drafted = 0
                if draft_missing:
                    rubric = load_rubric(s.rubric_file)
                    for cid in res["picked"]:
                        if store.get_note(cid) is None:
                            body = draft_for_call(store, rubric, cid, use_detectors=False,
                                                  low_csat=s.postcall_low_csat)
                            if body is not None:
                                await store.run_write(lambda c, b=body: records.after_draft(c, b))
                                await store.save_note(note_event(body))
                                drafted += 1
                notes = [store.get_note(c) for c in res["picked"]]
                covered = sum(1 for x in notes if x and records.covered(records._body(x["body"])))
                return res, drafted, covered

            res, drafted, covered = asyncio.run(run())
        finally:
            store.close()
        k = len(res["picked"])
        typer.echo(f"sample {res['sample_id']}: {k} of {res['available']} ended conversations"
                   f"{' in queue ' + queue if queue else ''} (asked for {n}); {drafted} notes drafted now")
        typer.echo(f"pilot metric over the sample: {covered}/{k} = {covered / k:.0%}" if k else "pilot metric: no calls")
        typer.echo(json.dumps(res["picked"]))

    @app.command("eval")
    def evaluate_cmd(file: str = typer.Argument("../shared/data/harper_valley/calls_dev.jsonl",
                                                help="Conversations (JSONL, Harper Valley format)"),
                     detectors: bool = typer.Option(False, help="Use tier-0 detector scores (loads the encoder)"),
                     known_fields: bool = typer.Option(True, help="Give the redactor the caller's name as a known "
                                                       "customer field (off: cue-based name detection only)")) -> None:
        """Draft notes offline and print coverage, verbatim excerpts and the redaction leak rate."""
        from livecoach.postcall.evaluate import evaluate, load_jsonl

        typer.echo(evaluate(load_jsonl(file), use_detectors=detectors, known_fields=known_fields).render())

    @app.command("rubric")
    def rubric_cmd(path: str = typer.Argument(None, help="Rubric YAML (default: the packaged one)")) -> None:
        """Validate a rubric and print its id, version, approval state and criteria."""
        from livecoach.postcall.rubric import RubricError, load_rubric

        try:
            r = load_rubric(path)
        except RubricError as exc:
            typer.echo(f"livecoach: {exc}", err=True)
            raise typer.Exit(2)
        typer.echo(f"{r.id} v{r.version}: {r.approval.state}"
                   f"{' by ' + r.approval.approved_by if r.approval.approved_by else ''}")
        for c in r.ordered():
            typer.echo(f"  tier {c.tier}: {c.id} — {c.label}")
        if not r.approved:
            typer.echo("not approved: notes scored with it carry an exception instead of a score", err=True)
            raise typer.Exit(1)
