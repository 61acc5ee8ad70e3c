"""Top-level commands from stream/: ``livecoach worker`` (scale-out pipeline workers)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def worker(
        bus: str = typer.Option(None, help="kafka://host:port[,host:port] (default: LIVECOACH_BUS)"),
        role: str = typer.Option("all", help="Workers of one role share the calls between them; "
                                             "use one role per --stages selection"),
        stages: str = typer.Option("", help="Comma-separated stage names this worker runs "
                                            "(default: every worker stage of the line-up)"),
        extra_stage: list[str] = typer.Option([], "--extra-stage",
                                              help="module:factory called with (settings, store) returning "
                                                   "one more Stage (tests, benches)"),
        web_port: int = typer.Option(0, help="Serve Faust's health/metrics web page on this port (0: off)"),
        commit_interval: float = typer.Option(1.0, help="Seconds between offset commits"),
        loglevel: str = typer.Option("info", help="critical, error, warning, info or debug"),
    ) -> None:
        """Run a pipeline worker on Kafka (scale-out; pair with `livecoach serve --bus kafka://…`).

        Each worker runs the same stages as the embedded server on the calls of the partitions it
        is given; state per call lives in Faust tables, so a worker that dies is replaced by the
        others without losing a call. Storage is LIVECOACH_DATABASE_URL (PostgreSQL in production).
        """
        from livecoach.settings import Settings
        from livecoach.stream.faust_app import run_worker

        try:
            s = Settings(**({"bus": bus} if bus else {}))
        except Exception as exc:
            typer.echo(f"livecoach worker: invalid settings: {exc}", err=True)
            raise typer.Exit(2)
        if not s.bus.startswith("kafka://"):
            typer.echo("livecoach worker: needs a Kafka bus: --bus kafka://host:port or LIVECOACH_BUS", err=True)
            raise typer.Exit(2)
        if loglevel.lower() not in {"critical", "error", "warning", "info", "debug"}:
            typer.echo("livecoach worker: --loglevel must be critical, error, warning, info or debug", err=True)
            raise typer.Exit(2)
        only = [x.strip() for x in stages.split(",") if x.strip()] or None
        try:
            run_worker(s, role=role, only=only, extra=extra_stage, web_port=web_port or None,
                       loglevel=loglevel.lower(), commit_interval_s=commit_interval)
        except (ValueError, ConnectionError) as exc:
            typer.echo(f"livecoach worker: {exc}", err=True)
            raise typer.Exit(2)
