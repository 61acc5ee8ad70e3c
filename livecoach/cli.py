"""The ``livecoach`` command.

Sub-commands that belong to a package (``models …``, ``bench …``, ``qa …``) are registered by that
package: a module listed below defines ``register(app: typer.Typer)`` and keeps heavy imports
(torch, onnxruntime, faster-whisper) inside its command bodies so ``livecoach --help`` stays fast.
"""

from __future__ import annotations

import importlib
import json
import sys

import typer

app = typer.Typer(help="livecoach: real-time coaching signals for support chat and calls.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (stored hashed).", no_args_is_help=True)
models_app = typer.Typer(help="Train, evaluate and run the models.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks: print latency percentiles and throughput.", no_args_is_help=True)
qa_app = typer.Typer(help="Post-call QA notes.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
app.add_typer(models_app, name="models")
app.add_typer(bench_app, name="bench")
app.add_typer(qa_app, name="qa")

# package modules that add commands to a sub-app
_PLUGINS: dict[str, tuple[typer.Typer, tuple[str, ...]]] = {
    "models": (models_app, ("livecoach.models.cli", "livecoach.models.asr_cli")),
    "bench": (bench_app, ("livecoach.bench_ingest", "livecoach.bench_load", "livecoach.signals.bench", "livecoach.stream.bench", "livecoach.postcall.bench",
                           "livecoach.lead_console.bench", "livecoach.stream.bench_pipeline",
                           "livecoach.signals.bench_tier1")),
    "qa": (qa_app, ("livecoach.postcall.cli",)),
    "root": (app, ("livecoach.stream.cli", "livecoach.postcall.root_cli")),
}


def _load_plugins() -> None:
    for _name, (sub, modules) in _PLUGINS.items():
        for mod in modules:
            try:
                m = importlib.import_module(mod)
            except ModuleNotFoundError as exc:
                if exc.name == mod:  # the package has not added that module (yet)
                    continue
                raise
            m.register(sub)


def _settings():
    from livecoach.settings import Settings

    try:
        return Settings()
    except Exception as exc:  # pydantic ValidationError: name the setting that is wrong
        typer.echo(f"livecoach: invalid settings: {exc}", err=True)
        raise typer.Exit(2)


@app.command()
def serve(host: str = typer.Option(None, help="Bind address (default from settings: 127.0.0.1)"),
          port: int = typer.Option(None, help="Port (default from settings: 8000)"),
          bus: str = typer.Option(None, help="'memory' or kafka://host:port")) -> None:
    """Run the server: ingest, pipeline, console and API in one process."""
    import uvicorn

    from livecoach.app import create_app

    s = _settings()
    updates = {k: v for k, v in {"host": host, "port": port, "bus": bus}.items() if v is not None}
    if updates:
        s = s.model_copy(update=updates)
        from livecoach.settings import Settings
        s = Settings.model_validate(s.model_dump())
    from livecoach.limits import ws_max_size

    uvicorn.run(create_app(s), host=s.host, port=s.port, log_level=s.log_level, ws_max_size=ws_max_size(s),
                lifespan="on")


@app.command()
def schema() -> None:
    """Print the JSON schema of every event."""
    from livecoach.events import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


@app.command()
def config() -> None:
    """Print the effective settings (environment LIVECOACH_* applied)."""
    s = _settings()
    typer.echo(json.dumps(s.model_dump(mode="json"), indent=2))


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply the migrations up to REVISION (default: head)."""
    from livecoach.store import current_revision, make_engine, upgrade

    s = _settings()
    s.ensure_dirs()
    engine = make_engine(s.database_url)
    upgrade(engine, revision)
    typer.echo(f"database at revision {current_revision(engine)}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's migration revision."""
    from livecoach.store import current_revision, make_engine

    s = _settings()
    typer.echo(current_revision(make_engine(s.database_url)) or "(empty)")


@token_app.command("create")
def token_create(role: str = typer.Option(..., help="ingest | lead | agent | admin"),
                 name: str = typer.Option(..., help="Who holds it (a person or a system)"),
                 agent_id: str = typer.Option(None, help="For agent tokens: the agent_id whose calls it may see "
                                                         "(default: the name)"),
                 expires_days: float = typer.Option(None, help="Days until it expires (default: never)")) -> None:
    """Create a token and print it (last line). Only its hash is stored."""
    from livecoach.auth import ROLES, TokenStore

    if role not in ROLES:
        typer.echo(f"livecoach: unknown role {role!r}; choose one of {', '.join(ROLES)}", err=True)
        raise typer.Exit(2)
    s = _settings()
    s.ensure_dirs()
    ts = TokenStore.from_settings(s)
    token = ts.create(role=role, name=name, agent_id=agent_id, expires_days=expires_days)
    typer.echo(f"created {role} token for {name} (shown once; only its hash is stored):", err=True)
    typer.echo(token)


@token_app.command("list")
def token_list() -> None:
    """List tokens (never the tokens themselves)."""
    from livecoach.auth import TokenStore

    for t in TokenStore.from_settings(_settings()).list():
        typer.echo(json.dumps(t, default=str))


@token_app.command("revoke")
def token_revoke(token_id: int = typer.Argument(..., help="The id shown by 'token list'")) -> None:
    """Revoke a token at once."""
    from livecoach.auth import TokenStore

    if not TokenStore.from_settings(_settings()).revoke(token_id):
        typer.echo(f"livecoach: no active token with id {token_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked token {token_id}")


@app.command()
def replay(file: str = typer.Argument(..., help="JSONL conversations (one a line: id, turns, optional actions)"),
           url: str = typer.Option("http://127.0.0.1:8000", help="Server base URL"),
           token: str = typer.Option(..., envvar="LIVECOACH_TOKEN", help="An ingest token"),
           speed: float = typer.Option(1.0, min=0.01, help="Replay N times faster than real time"),
           concurrency: int = typer.Option(10, min=1, max=2000, help="Calls in flight at once"),
           limit: int = typer.Option(0, min=0, help="Replay only the first N conversations (0: all)"),
           audio: bool = typer.Option(False, "--audio", help="FILE is a directory of WAV calls (see docs)")) -> None:
    """Stream recorded conversations as live calls and print a summary."""
    import asyncio

    if audio:
        from livecoach.stream.audio_replay import replay_audio_cli

        raise typer.Exit(replay_audio_cli(file, url=url, token=token, speed=speed, concurrency=concurrency))
    from livecoach.stream.replay import load_conversations, replay_conversations

    try:
        convs = load_conversations(file)
    except (OSError, ValueError) as exc:
        typer.echo(f"livecoach replay: {exc}", err=True)
        raise typer.Exit(2)
    if limit:
        convs = convs[:limit]
    summary = asyncio.run(replay_conversations(convs, url=url, token=token, speed=speed, concurrency=concurrency))
    typer.echo(summary.render())
    raise typer.Exit(0 if summary.errors == 0 and summary.acked == summary.sent else 1)


@app.command()
def demo(port: int = typer.Option(0, help="Port (0: a free one)"),
         speed: float = typer.Option(20.0, help="Replay speed"),
         once: bool = typer.Option(False, "--once", help="Exit after the replay instead of serving on"),
         data_dir: str = typer.Option(None, help="Where to keep the demo database (default: a new temp dir)")) -> None:
    """Start a server on embedded defaults, replay a few real calls, print where to look."""
    from livecoach.demo import run_demo

    raise typer.Exit(run_demo(port=port, speed=speed, once=once, data_dir=data_dir))


def main() -> None:
    _load_plugins()
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
