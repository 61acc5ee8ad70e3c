"""Routing: what a signal suggests doing, in a support lead's words.

- churn intent        -> suggest a hand-off to the save desk (one click for the lead)
- escalation request  -> alert the lead (the lead decides: join, take over, or hand off)
- upgrade interest    -> suggest the sales desk (one click for the lead)

A policy file may name another desk for a kind with ``route: <desk>``.
"""

from __future__ import annotations

from typing import Any

DESKS: dict[str, str] = {
    "save_desk": "Save desk (retention)",
    "sales_desk": "Sales desk",
    "supervisor": "Supervisor",
    "complaints_desk": "Complaints desk",
}

_DEFAULTS: dict[str, dict[str, Any]] = {
    "churn_intent": {"action": "suggest_handoff", "desk": "save_desk",
                     "label": "Hand off to the save desk"},
    "escalation_request": {"action": "alert_lead", "desk": "supervisor",
                           "label": "Customer asked for a supervisor: join or take over"},
    "upgrade_interest": {"action": "suggest_handoff", "desk": "sales_desk",
                         "label": "Hand off to the sales desk"},
}


def route_for(kind: str, desk_override: str | None = None) -> dict[str, Any] | None:
    """The suggested action for ``kind`` (None when there is nothing to route)."""
    if desk_override:
        return {"action": "suggest_handoff", "desk": desk_override,
                "label": f"Hand off to the {DESKS.get(desk_override, desk_override.replace('_', ' '))}"}
    r = _DEFAULTS.get(kind)
    return dict(r) if r else None


def is_alert(route: dict[str, Any] | None) -> bool:
    """An alert asks for the lead's attention now (it ranks above everything else of equal risk)."""
    return bool(route) and route.get("action") == "alert_lead"
