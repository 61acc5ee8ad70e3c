"""App assembly: settings → store, bus, stages, routes. ``create_app(Settings())`` is the server."""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections import Counter
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from livecoach.auth import TokenStore
from livecoach.pipeline import Pipeline, Stage
from livecoach.settings import Settings, get_settings
from livecoach.stages import LeadsOnly, StoreNotes, StoreSignals
from livecoach.store import Store

log = logging.getLogger("livecoach")

# Routers other packages contribute, as "module:attribute"; a module not written yet is skipped.
ROUTERS = (
    "livecoach.stream.ingest:router",
    "livecoach.stream.audio:router",
    "livecoach.lead_console.api:router",
    "livecoach.lead_console.pages:router",
    "livecoach.lead_console.live:router",
    "livecoach.signals.routes:router",
    "livecoach.postcall.routes:router",
    "livecoach.audit:router",
)


def _optional(path: str) -> Any | None:
    mod, _, attr = path.partition(":")
    try:
        m = importlib.import_module(mod)
    except ModuleNotFoundError as exc:
        if exc.name == mod:
            return None
        raise
    return getattr(m, attr, None)


def make_bus(settings: Settings):
    if settings.bus == "memory":
        from livecoach.stream.local_bus import LocalBus

        return LocalBus()
    from livecoach.stream.kafka_bus import KafkaBus  # scale-out (see stream/)

    return KafkaBus(settings)


def build_stages(settings: Settings, store: Store) -> list[Stage]:
    """The stage line-up, the same for the embedded and the Kafka bus."""
    stages: list[Stage] = []
    if settings.detectors:
        tier0 = _optional("livecoach.signals:Tier0Detectors")
        if tier0 is not None:
            stages.append(tier0(settings))
    policy_cls = _optional("livecoach.signals.policy:SignalPolicy")
    policy = policy_cls(settings) if policy_cls is not None else LeadsOnly()
    stages.append(policy)
    stages.append(StoreSignals(store))
    if settings.postcall:
        drafter = _optional("livecoach.postcall:NoteDrafter")
        if drafter is not None:
            # one tier-1 model per process: the drafter reuses the policy's
            tier1 = getattr(getattr(policy, "tier1", None), "backend", None)
            stages.append(drafter(settings, store, tier1_backend=tier1))
    stages.append(StoreNotes(store))
    for extra in ("livecoach.lead_console.live:BoardFeed",):
        cls = _optional(extra)
        if cls is not None:
            stages.append(cls(settings))
    return stages


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    from livecoach import logs

    logs.install()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.ensure_dirs()
        store = Store(settings.database_url, batch_max=settings.write_batch_max)
        bus = make_bus(settings)
        app.state.store = store
        app.state.tokens = TokenStore.for_store(store)
        app.state.bus = bus
        stages = build_stages(settings, store)
        if settings.bus != "memory":  # Kafka: the workers run the pipeline; the gateway keeps its own stages
            from livecoach.stream.faust_app import gateway_stages

            pipeline = Pipeline(bus, gateway_stages(stages))
        else:
            pipeline = Pipeline(bus, stages)
        app.state.pipeline = pipeline
        app.state.stages = {s.name: s for s in stages}
        await pipeline.start()
        await bus.start()
        app.state.ready = True
        log.info("livecoach ready: %s, bus %s, stages %s", store.dialect, settings.bus,
                 ", ".join(s.name for s in stages))
        from livecoach import _catchup  # notes for calls that ended while the server was down

        app.state.catch_up = _catchup.start(settings, store, bus, stages)
        try:
            yield
        finally:
            app.state.ready = False
            await _catchup.stop(app.state.catch_up)
            try:
                await asyncio.wait_for(bus.drain(), timeout=30)
            except asyncio.TimeoutError:
                log.warning("bus did not drain in 30 s; stopping anyway")
            await bus.stop()
            await pipeline.stop()
            store.close()

    app = FastAPI(title="livecoach", version="0.1.0", lifespan=lifespan,
                  description="Real-time coaching signals for customer-support chat and calls.")
    app.state.settings = settings
    app.state.ready = False
    app.state.metrics = Counter()

    @app.get("/healthz", tags=["ops"], summary="200 once the server is ready to take calls")
    async def healthz(request: Request):
        if not request.app.state.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        storage = await request.app.state.store.health()
        if storage["status"] != "ok":  # e.g. {"status": "storage_unavailable", "reason": "disk_full", ...}
            return JSONResponse(storage, status_code=503)
        return {"status": "ok"}

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_req: Request, exc: RequestValidationError):
        errs = [{"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()]
        return JSONResponse({"detail": "invalid request", "errors": errs}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_req: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    for path in ROUTERS:
        router = _optional(path)
        if router is not None:
            app.include_router(router)
    from livecoach.limits import RefuseUnstorableText  # NUL in a path, query or body: 422, never a 500

    app.add_middleware(RefuseUnstorableText)
    return app
