"""Fan-out of agent cues from the SIGNALS topic to the agents' prompt sockets.

One subscription per app (group ``agent_prompts``). A cue is delivered to an agent's sockets only
when the stored call belongs to that agent (the call row is checked, not just the cue's details).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from livecoach.bus import SIGNALS
from livecoach.events import Signal

log = logging.getLogger(__name__)


class PromptHub:
    def __init__(self, app):
        self.app = app
        self.sockets: dict[str, set[asyncio.Queue]] = {}
        self._owner: dict[str, str | None] = {}

    @classmethod
    def for_app(cls, app) -> "PromptHub":
        hub = getattr(app.state, "prompt_hub", None)
        if hub is None:
            hub = app.state.prompt_hub = cls(app)
            app.state.bus.subscribe(SIGNALS, hub._on_signal, group="agent_prompts")
        return hub

    def connect(self, agent_id: str) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(256)
        self.sockets.setdefault(agent_id, set()).add(q)
        return q

    def disconnect(self, agent_id: str, q: asyncio.Queue) -> None:
        qs = self.sockets.get(agent_id)
        if qs:
            qs.discard(q)
            if not qs:
                self.sockets.pop(agent_id, None)

    async def call_owner(self, call_id: str) -> str | None:
        if call_id not in self._owner:
            header = await asyncio.to_thread(self.app.state.store.get_call_header, call_id)
            if len(self._owner) > 20_000:
                self._owner.clear()
            self._owner[call_id] = header["agent_id"] if header else None
            if header is None:
                return self._owner.pop(call_id)
        return self._owner[call_id]

    async def _on_signal(self, event: Any) -> None:
        if not isinstance(event, Signal) or event.audience != "agent" or not self.sockets:
            return
        owner = await self.call_owner(event.call_id)
        if owner is None or owner != event.details.get("agent_id"):
            return
        if self.sockets.get(owner):
            # stored before it is shown, so an instant response finds it (saving is idempotent by id)
            await self.app.state.store.save_signal(event)
        for q in list(self.sockets.get(owner, ())):
            try:
                q.put_nowait(cue_frame(event))
            except asyncio.QueueFull:
                log.warning("agent %s is not reading cues; one dropped", owner)


def cue_frame(sig: Signal | dict[str, Any]) -> dict[str, Any]:
    """What an agent's screen gets: the observation/nudge and where in the call it came from."""
    s = sig.model_dump(mode="json") if isinstance(sig, Signal) else dict(sig)
    ev = s.get("evidence") or []
    t = max((e.get("t") for e in ev if e.get("t") is not None), default=None)
    from livecoach.events import minute_mark

    return {"type": "cue", "signal_id": s["id"], "call_id": s["call_id"], "kind": s["kind"],
            "message": s["message"], "minute": minute_mark(t),
            "evidence": [{"seq": e.get("seq"), "excerpt": e.get("excerpt", "")} for e in ev],
            "created_at": s.get("created_at") if isinstance(s.get("created_at"), str) else str(s.get("created_at")),
            "respond_with": ["accepted", "dismissed", "ignored"]}
