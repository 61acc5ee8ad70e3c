"""``livecoach import FILE.jsonl``: closed help-desk tickets (one JSON object a line; the format is
in ``livecoach.postcall.tickets``) posted to a running server, which drafts their QA notes."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    @app.command("import")
    def import_tickets(file: str = typer.Argument(..., help="Tickets, one JSON object a line"),
                       url: str = typer.Option("http://127.0.0.1:8000", help="Server base URL"),
                       token: str = typer.Option(..., envvar="LIVECOACH_TOKEN", help="An ingest or lead token")) -> None:
        """Import closed help-desk tickets; each gets a draft QA note like a call."""
        import httpx

        ok = dup = bad = 0
        with open(file, encoding="utf-8") as fh, httpx.Client(base_url=url.rstrip("/"), timeout=60,
                                                               headers={"Authorization": f"Bearer {token}"}) as http:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    ticket = json.loads(line)
                except ValueError as exc:
                    typer.echo(f"{file}:{n}: not JSON: {exc}", err=True)
                    bad += 1
                    continue
                r = http.post("/v1/tickets", json=ticket)
                if r.status_code == 200:
                    if r.json().get("status") == "duplicate":
                        dup += 1
                    else:
                        ok += 1
                else:
                    bad += 1
                    typer.echo(f"{file}:{n}: {r.status_code} {r.text[:300]}", err=True)
        typer.echo(f"tickets imported {ok}, already there {dup}, failed {bad}")
        raise typer.Exit(1 if bad else 0)
