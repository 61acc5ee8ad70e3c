"""The scale-out workers: the same Stage objects as the embedded pipeline, carried by Faust on Kafka.

``livecoach worker`` builds the stage line-up with :func:`livecoach.app.build_stages`, keeps the
stages that belong in a worker (all but the gateway's own, like the live board), and runs each as
Faust agents on the topics it consumes. A stage's per-call ``state`` lives in a Faust Table
(changelog topic ``<prefix>-<role>-state-<stage>-changelog``), so when a worker dies another one
restores its calls' state and carries on from the last committed offset; see
:mod:`livecoach.stream._faust_runner` for how redelivered events are kept from counting twice.

Roles: every worker of one role (``--role``, default ``all``) shares a Kafka consumer group and
splits the partitions (that is, the calls) between them; workers of different roles
(``--stages detectors`` vs ``--stages policy,store_signals``) run side by side, each role seeing
every event of its topics once.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from livecoach.pipeline import Stage
from livecoach.stream._faust_consumer import lost_offsets, positions, reread
from livecoach.stream._faust_consumer import install as install_safe_commits
from livecoach.stream._faust_runner import StageRunner
from livecoach.stream._kafka_admin import (all_topic_names, bootstrap_servers, ensure_topics, pin_start_offsets,
                                           topic_name)

log = logging.getLogger(__name__)

GATEWAY, WORKER = "gateway", "worker"
# Stages that serve the processes browsers are connected to; a stage says so with
# ``placement = "gateway"``; these names are treated the same until their classes say it.
_GATEWAY_STAGE_NAMES = frozenset({"board"})


def placement(stage: Stage) -> str:
    """Where a stage runs with the Kafka bus: ``gateway`` (every gateway sees every event) or ``worker``."""
    if getattr(stage, "placement", WORKER) == GATEWAY or stage.name in _GATEWAY_STAGE_NAMES:
        return GATEWAY
    return WORKER


def gateway_stages(stages: Iterable[Stage]) -> list[Stage]:
    return [s for s in stages if placement(s) == GATEWAY]


def worker_stages(stages: Iterable[Stage], only: Sequence[str] | None = None) -> list[Stage]:
    out = [s for s in stages if placement(s) == WORKER]
    if only:
        names = {s.name for s in out}
        unknown = sorted(set(only) - names)
        if unknown:
            raise ValueError(f"no worker stage named {', '.join(unknown)}; the line-up is {', '.join(sorted(names))}")
        out = [s for s in out if s.name in set(only)]
    return out


def load_factory(path: str) -> Callable[..., Stage]:
    """``module:attribute`` → a callable ``(settings, store) -> Stage`` (extra stages for tests, benches)."""
    mod, _, attr = path.partition(":")
    if not mod or not attr:
        raise ValueError(f"extra stage {path!r}: expected module:attribute")
    return getattr(importlib.import_module(mod), attr)


@dataclass
class WorkerApp:
    """A configured Faust app and the runners it carries (one per stage)."""

    app: Any
    role: str
    runners: list[StageRunner] = field(default_factory=list)
    pinned: int | None = None  # partitions whose start offset this worker committed before joining

    @property
    def group(self) -> str:
        return self.app.conf.id


def app_id(settings, role: str) -> str:
    return f"{settings.kafka_topic_prefix}-{role}"


def build_app(settings, stages: Sequence[Stage], *, role: str = "all", web_port: int | None = None,
              commit_interval_s: float = 1.0, store=None) -> WorkerApp:
    """A Faust app whose agents run ``stages`` (no Kafka traffic until a faust Worker starts it)."""
    import faust

    servers = bootstrap_servers(settings.bus)
    session = float(settings.kafka_session_timeout_s)
    datadir = Path(settings.data_dir) / "faust" / app_id(settings, role)
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id(settings, role),
        broker=[f"kafka://{h}" for h in servers.split(",")],
        store="memory://",
        datadir=str(datadir),
        autodiscover=False,
        topic_partitions=settings.kafka_partitions,
        topic_replication_factor=1,
        table_standby_replicas=1,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=session,
        broker_heartbeat_interval=max(0.5, session / 6),
        broker_rebalance_timeout=max(10.0, session * 2),
        broker_commit_interval=commit_interval_s,
        stream_wait_empty=False,
        web_enabled=web_port is not None,
        web_port=web_port or 6066,
        web_bind="0.0.0.0" if web_port else "127.0.0.1",
    )
    install_safe_commits(app)  # commits never pass a record no stage handled (see _faust_consumer)
    topics = {t: app.topic(topic_name(settings.kafka_topic_prefix, t), key_serializer="raw", value_serializer="raw",
                           partitions=settings.kafka_partitions)
              for t in {t for s in stages for t in s.consumes} | {s.produces for s in stages if s.produces}}
    wa = WorkerApp(app, role)
    for stage in stages:
        table = app.Table(f"state-{stage.name}", default=None, partitions=settings.kafka_partitions,
                          schema=faust.Schema(key_serializer="json", value_serializer="json"))
        runner = StageRunner(stage, table, topics[stage.produces] if stage.produces else None,
                             fetch_missing=_store_reader(store) if store is not None else None)
        wa.runners.append(runner)
        bind = getattr(stage, "bind_publisher", None)
        if callable(bind) and stage.produces:
            bind(runner.publish_between_events)
        for t in stage.consumes:
            app.agent(topics[t], name=f"{stage.name}.{t}")(_agent_fn(runner, t))

    @app.on_partitions_revoked.connect
    async def _revoked(sender, revoked, **kwargs) -> None:
        for r in wa.runners:
            r.forget()

    @app.on_partitions_assigned.connect
    async def _assigned(sender, assigned, **kwargs) -> None:
        for r in wa.runners:
            r.forget()

    @app.on_before_shutdown.connect
    async def _stop_stages(sender, **kwargs) -> None:
        for r in reversed(wa.runners):
            try:
                await r.stop()
            except Exception:
                log.exception("stage %s failed to stop", r.stage.name)

    lost_watch = _LostWatch()

    @app.timer(2.5)
    async def _watchdog() -> None:
        now = asyncio.get_running_loop().time()
        for r in wa.runners:
            if r.busy and now - r.busy[2] > 10:
                log.warning("stage %s stuck in %s for call %s for %.0f s", r.stage.name, r.busy[0], r.busy[1],
                            now - r.busy[2])
        await _reread_lost_offsets(app, wa.runners, lost_watch)

    @app.task
    async def _start_stages() -> None:  # load models before the first event, not during it
        for r in wa.runners:
            await r.ensure_started()
        log.info("livecoach worker %s ready: stages %s", role, ", ".join(r.stage.name for r in wa.runners))
        if wa.pinned:
            log.info("pinned the start offsets of %d partitions for group %s", wa.pinned, wa.group)

    return wa


@dataclass
class _LostWatch:
    """What the watchdog saw at its previous check."""

    progress: int | None = None  # events the stages had handled, skipped or failed on
    lost: dict[Any, tuple[int, int]] = field(default_factory=dict)  # tp -> (committed, first)
    warned: bool = False


async def _reread_lost_offsets(app, runners: Sequence[StageRunner], watch: _LostWatch) -> None:
    """Seek partitions with lost offsets back to their committed offset (seen twice, 2.5 s apart), so
    the lost records are fetched and handled again; StageRunner skips whatever was already applied."""
    if app.in_recovery or not app.flow_control.is_active():
        watch.lost.clear()
        watch.progress = None
        return
    progress = sum(r.handled + r.skipped + r.errors for r in runners)
    idle = watch.progress == progress and not any(r.busy for r in runners)
    watch.progress = progress
    try:
        lost = lost_offsets(app.consumer, positions(app.consumer), idle=idle)
    except Exception:  # a Faust upgrade moved its internals: say so once, never stop the worker
        if not watch.warned:
            watch.warned = True
            log.warning("cannot check Faust's commit progress (internals changed?)", exc_info=True)
        return
    for tp, span in list(lost.items()):
        if watch.lost.get(tp) == span:
            log.warning("partition %s/%s: offsets %d-%d were fetched around a rebalance and never handled; "
                        "reading them again", tp.topic, tp.partition, span[0], span[1] - 1)
            await reread(app.consumer, tp, span[0])
            del lost[tp]
    watch.lost = lost  # what is still to be confirmed at the next check


def _store_reader(store):
    def fetch_missing(call_id: str, seqs: list[int]):
        wanted = set(seqs)
        return [e for e in store.call_events(call_id) if getattr(e, "seq", None) in wanted]

    return fetch_missing


def _agent_fn(runner: StageRunner, topic: str):
    async def agent(stream):
        async for fevent in stream.events():
            await runner.on_message(fevent, topic)

    agent.__name__ = agent.__qualname__ = f"{runner.stage.name}_{topic}"
    return agent


def run_worker(settings, *, role: str = "all", only: Sequence[str] | None = None,
               extra: Sequence[str] = (), web_port: int | None = None, loglevel: str = "info",
               commit_interval_s: float = 1.0) -> None:
    """Run one worker process until SIGTERM/SIGINT (what ``livecoach worker`` does)."""
    import faust

    from livecoach.app import build_stages
    from livecoach.store import Store

    logging.getLogger("livecoach.trace").setLevel(logging.INFO if settings.worker_trace else logging.WARNING)
    # until Faust sets up logging (it replaces the root handlers), start-up warnings go to stderr
    logging.basicConfig(level=getattr(logging, loglevel.upper(), logging.INFO),
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")
    servers = bootstrap_servers(settings.bus)
    asyncio.run(ensure_topics(servers, all_topic_names(settings.kafka_topic_prefix), settings.kafka_partitions))
    settings.ensure_dirs()
    store = Store(settings.database_url, batch_max=settings.write_batch_max)
    try:
        stages = worker_stages(build_stages(settings, store), only)
        stages += [load_factory(p)(settings, store) for p in extra]
        if not stages:
            raise ValueError("this worker has no stage to run")
        wa = build_app(settings, stages, role=role, web_port=web_port, commit_interval_s=commit_interval_s,
                       store=store)
        consumed = {topic_name(settings.kafka_topic_prefix, t) for s in stages for t in s.consumes}
        wa.pinned = asyncio.run(pin_start_offsets(servers, wa.group, sorted(consumed)))
        worker = faust.Worker(wa.app, loglevel=loglevel, quiet=True)
        try:
            worker.execute_from_commandline()
        except SystemExit:
            pass
    finally:
        store.close()
