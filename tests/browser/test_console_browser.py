"""The lead console in a real headless Chromium: board, actions, call view, review queue, metrics.

Screenshots of every page land in artifacts/screenshots/ (kept by CI as artefacts).
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

import pytest

from livecoach.events import EvidenceRef, Signal
from livecoach.stream.replay import load_conversations

from _console import (DEMO, HARPER, chromium, console, lead_json, page, seed_history,  # noqa: F401 (fixtures)
                      wait_notes, with_postcall)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def longest_calls(n: int) -> list[dict]:
    convs = load_conversations(HARPER)
    return sorted(convs, key=lambda c: -c.get("duration_ms", 0))[:n]


def ranks(page) -> list[str]:
    return page.eval_on_selector_all("#cards > li.card", "els => els.map(e => e.dataset.callId)")


def only_local(console) -> None:
    host = urlsplit(console.server.url).netloc
    off = [u for u in console.requests if not u.startswith("data:") and urlsplit(u).netloc != host]
    assert console.requests, "the page made no requests at all?"
    assert off == [], f"requests left the machine: {off}"


def test_board_updates_reorders_and_takes_lead_actions(console, page):
    page.goto(console.server.url + "/console")
    assert "/console/login" in page.url
    console.shot(page, "01-sign-in")
    # an agent token cannot open the console
    page.fill("#token", console.server.tokens["agent"])
    page.click("button[type=submit]")
    page.wait_for_selector("text=cannot open the console")
    console.sign_in(page)
    page.wait_for_selector("#live.on")

    convs = longest_calls(6)
    replay = console.replay_in_background(convs, speed=3)
    page.wait_for_function("document.querySelectorAll('#cards > li.card').length === 6", timeout=20_000)
    page.wait_for_function("[...document.querySelectorAll('#cards .sig.none')].some(e => /[1-9]\\d* turns?/.test(e.textContent))")

    # a churn signal on the call ranked last moves it to the top within a second
    last = ranks(page)[-1]
    churn = Signal(call_id=last, kind="churn_intent", confidence=0.93, evidence=[
        EvidenceRef(seq=3, excerpt="i want to close my account and move to another bank", t=41.0)],
        message="Customer is talking about leaving",
        details={"risk": 0.93, "route": {"action": "suggest_handoff", "desk": "save_desk",
                                         "label": "Hand off to the save desk"}})
    t0 = time.monotonic()
    console.publish_signal(churn)
    page.wait_for_function(f"document.querySelector('#cards > li.card').dataset.callId === {json.dumps(last)}",
                           timeout=5_000)
    seen_after = time.monotonic() - t0
    assert seen_after < 1.5, f"the board took {seen_after:.2f} s to show a new signal"
    top = page.locator(f"li.card[data-call-id='{last}']")
    assert "Talking about leaving" in top.inner_text()
    assert "0:41" in top.inner_text()
    assert "lvl-high" in top.get_attribute("class")

    # a complaint on another call ranks second
    second = ranks(page)[-1]
    complaint = Signal(call_id=second, kind="complaint", confidence=0.8, details={"risk": 0.56},
                       evidence=[EvidenceRef(seq=2, excerpt="this is not acceptable", t=12.0)])
    console.publish_signal(complaint)
    page.wait_for_function(f"document.querySelectorAll('#cards > li.card')[1].dataset.callId === {json.dumps(second)}")
    console.wait_stored(churn.id)
    console.wait_stored(complaint.id)
    page.wait_for_timeout(400)   # let the reorder animation settle for the screenshot
    console.shot(page, "02-board-live")

    # acknowledge the churn signal: stored as feedback, shown on the card
    top.locator("button.act-ack").click()
    page.wait_for_selector(f"li.card[data-call-id='{last}'] .state >> text=acknowledged")
    fb = console.server.get(f"/v1/signals/{churn.id}/feedback").json()["feedback"]
    assert [(f["action"], f["actor"], f["role"]) for f in fb] == [("acknowledged", "test-lead", "lead")]

    # hand off the churn call to the save desk (the suggested route)
    top.locator("button.act-handoff").click()
    page.wait_for_selector(f"li.card[data-call-id='{last}'] .state >> text=handed off")
    fb = console.server.get(f"/v1/signals/{churn.id}/feedback").json()["feedback"]
    assert fb[-1]["action"] == "handoff" and "save desk" in fb[-1]["reason"]

    # dismiss the complaint with a reason
    card2 = page.locator(f"li.card[data-call-id='{second}']")
    card2.locator("button.act-dismiss").click()
    card2.locator(".dismiss-form select").select_option("False alarm")
    card2.locator(".dismiss-form button[type=submit]").click()
    page.wait_for_selector(f"li.card[data-call-id='{second}'] .sig.st-dismissed, "
                           f"li.card[data-call-id='{second}'] .sig.none")
    fb = console.server.get(f"/v1/signals/{complaint.id}/feedback").json()["feedback"]
    assert (fb[-1]["action"], fb[-1]["reason"]) == ("dismissed", "False alarm")

    # mark joining on the top call
    top.locator("button.act-join").click()
    page.wait_for_selector(f"li.card[data-call-id='{last}'] .b-joining")
    console.shot(page, "03-board-after-actions")

    # open the call: live transcript and the signal timeline with what the leads did
    top.locator("a.agent-name").click()
    page.wait_for_selector("#transcript .turn")
    n0 = page.locator("#transcript .turn").count()
    page.wait_for_function(f"document.querySelectorAll('#transcript .turn').length > {n0}", timeout=20_000)
    tl = page.locator(f"#signals li[data-signal-id='{churn.id}']")
    assert "Talking about leaving" in tl.inner_text()
    assert "acknowledged" in tl.inner_text() and "joining" in tl.inner_text()
    assert page.locator(".customer-box dd").first.inner_text().strip() not in ("", "•••")  # a lead sees the customer
    console.shot(page, "04-call-view")

    # calls leave the board when they end
    replay.join(timeout=90)
    assert replay.result["summary"].errors == 0
    page.goto(console.server.url + "/console")
    page.wait_for_selector("#empty:not([hidden])")
    only_local(console)


def test_review_queue_approve_and_edit_real_postcall_notes_then_metrics(console, page, with_postcall):
    """Post-call drafts the notes (8 real demo calls + older history); the lead reviews them in the
    browser through postcall's API, and the metrics page shows postcall's figures."""
    history = seed_history(console)
    demo = load_conversations(DEMO)
    replay = console.replay_in_background(demo, speed=500)   # the sync browser API owns this thread's loop
    replay.join(timeout=60)
    assert replay.result["summary"].errors == 0
    wait_notes(console, [c["id"] for c in demo] + history)
    queue = lead_json(console, "/v1/review/queue")["items"]

    console.sign_in(page)
    page.goto(console.server.url + "/console/review")
    shown = page.eval_on_selector_all("#queue .qitem", "els => els.map(e => e.dataset.callId)")
    assert shown == [i["call_id"] for i in queue], "the page lists postcall's queue in postcall's order"

    # the top note opens by itself, with the rubric and why it is at the top
    top = queue[0]
    assert top["priority"] >= 40 and top["priority"] == max(i["priority"] for i in queue)
    page.wait_for_selector(f"#note[data-call-id='{top['call_id']}'] .note-status")
    note = lead_json(console, f"/v1/calls/{top['call_id']}/note")
    text = page.inner_text("#note")
    assert f"rubric {note['rubric']['id']} v{note['rubric']['version']}" in text
    flags = {"customer_risk": "customer risk", "low_confidence": "low confidence", "compliance_gap": "compliance gap"}
    assert all(label in text for f, label in flags.items() if top["flags"][f])

    # a scored note: coaching focus, next action, follow-up, criteria with evidence and minute marks
    focused = next(i for i in queue if i["focus"] and i["flags"]["customer_risk"])
    page.click(f"#queue .qitem[data-call-id='{focused['call_id']}']")
    page.wait_for_selector(f"#note[data-call-id='{focused['call_id']}'] .box-coach")
    note = lead_json(console, f"/v1/calls/{focused['call_id']}/note")
    text = page.inner_text("#note")
    assert note["coaching"]["focus"]["label"] in text and note["coaching"]["next_action"] in text
    assert "Tracked on the agent's next" in text
    for k in note["criteria"]:
        assert k["label"] in text
        for e in k["evidence"]:
            assert e["minute"] in text and e["excerpt"] in text
    console.shot(page, "05-review-queue")

    # a note with a process issue shows it apart from the agent's coaching
    proc = next(i for i in queue if i["process_issues"])
    page.click(f"#queue .qitem[data-call-id='{proc['call_id']}']")
    page.wait_for_selector(f"#note[data-call-id='{proc['call_id']}'] .box-process")
    assert "not the agent" in page.inner_text("#note .box-process")
    # and a note held back by a stop rule shows the exception's reason
    exc = next(i for i in queue if i["exception"])
    page.click(f"#queue .qitem[data-call-id='{exc['call_id']}']")
    page.wait_for_selector(f"#note[data-call-id='{exc['call_id']}'] .box-exc")
    assert exc["exception"]["reason"] in page.inner_text("#note .box-exc")

    # approve the top note
    top = focused
    page.click(f"#queue .qitem[data-call-id='{top['call_id']}']")
    page.wait_for_selector(f"#note[data-call-id='{top['call_id']}'] button[data-decision=approve]")
    page.click("#note button[data-decision=approve]")
    page.wait_for_selector(f"#note[data-call-id='{top['call_id']}'] .note-status >> text=approved")
    approved = lead_json(console, f"/v1/calls/{top['call_id']}/note")
    assert approved["status"] == "approved"
    assert [(e["action"], e["actor"]) for e in approved["review"] if e["action"] == "approved"] == [("approved", "test-lead")]

    # edit the second: new next action, a different focus and one criterion result; the diff is kept
    second = next(i for i in queue if i["focus"] and len(i["missed"]) >= 2 and i["call_id"] != top["call_id"])
    page.click(f"#queue .qitem[data-call-id='{second['call_id']}']")
    page.wait_for_selector(f"#note[data-call-id='{second['call_id']}'] button[data-decision=edit]")
    before = lead_json(console, f"/v1/calls/{second['call_id']}/note")
    page.click("#note button[data-decision=edit]")
    form = page.locator("#note .edit-form")
    new_focus = next(m for m in second["missed"] if m != second["focus"])
    form.locator("select[name=focus]").select_option(new_focus)
    form.locator("textarea[name=next_action]").fill("Ask which card is meant before ordering a new one.")
    flip = next(k for k in before["criteria"] if k["result"] == "met")
    page.select_option(f"#note select[name='crit-{flip['id']}']", "missed")
    form.locator("input[name=edit_reason]").fill("focus on the bigger miss")
    console.shot(page, "06-review-edit")
    form.locator("button[type=submit]").click()
    page.wait_for_selector(f"#note[data-call-id='{second['call_id']}'] .note-status >> text=edited")
    page.wait_for_selector("#note table.diff")
    assert "Ask which card is meant before ordering a new one." in page.inner_text("#note table.diff")
    console.shot(page, "07-review-edited-diff")
    edited = lead_json(console, f"/v1/calls/{second['call_id']}/note")
    assert edited["status"] == "edited"
    assert edited["coaching"]["next_action"] == "Ask which card is meant before ordering a new one."
    assert edited["coaching"]["focus"]["criterion"] == new_focus
    assert edited["coaching"]["follow_up"]["criterion"] == new_focus
    assert next(k for k in edited["criteria"] if k["id"] == flip["id"])["result"] == "missed"
    diff = next(e for e in edited["review"] if e["action"] == "edited")
    assert diff["reason"] == "focus on the bigger miss"
    paths = {d["path"]: d for d in diff["details"]["diff"]}
    assert paths["/coaching/next_action"] == {"path": "/coaching/next_action", "from": before["coaching"]["next_action"],
                                             "to": "Ask which card is meant before ordering a new one."}
    assert paths["/coaching/focus/criterion"]["from"] == second["focus"]
    i = next(n for n, k in enumerate(before["criteria"]) if k["id"] == flip["id"])
    assert paths[f"/criteria/{i}/result"] == {"path": f"/criteria/{i}/result", "from": "met", "to": "missed"}
    noise = [p for p in paths if "observed" in p or "improved" in p
             or (p.startswith("/criteria/") and not p.startswith(f"/criteria/{i}/"))]
    assert noise == [], f"only the lead's changes are in the diff: {sorted(paths)}"

    # reject needs a reason; the draft stays a draft without one
    third = next(i["call_id"] for i in queue if i["call_id"] not in (top["call_id"], second["call_id"]))
    page.click(f"#queue .qitem[data-call-id='{third}']")
    page.wait_for_selector(f"#note[data-call-id='{third}'] button[data-decision=reject]")
    page.click("#note button[data-decision=reject]")
    page.wait_for_selector("#toast >> text=Say why")
    assert lead_json(console, f"/v1/calls/{third}/note")["status"] == "draft"

    # the queue now holds only drafts, still in postcall's order
    page.goto(console.server.url + "/console/review")
    shown = page.eval_on_selector_all("#queue .qitem", "els => els.map(e => e.dataset.callId)")
    assert shown == [i["call_id"] for i in lead_json(console, "/v1/review/queue")["items"]]
    assert top["call_id"] not in shown and second["call_id"] not in shown

    # metrics: note figures are postcall's, console-only figures stay; charts drawn locally
    page.goto(console.server.url + "/console/metrics")
    qa = lead_json(console, "/v1/qa/metrics")
    assert qa["notes"]["approved"] == 1 and qa["notes"]["edited"] == 1 and qa["override_rate"] == 0.5
    assert page.inner_text("#kpi-reviewed") == str(qa["events"]["reviewed"])
    assert page.inner_text("#kpi-approved") == "1"
    assert page.inner_text("#kpi-override") == "50%"
    assert page.inner_text("#kpi-pilot") == f"{qa['pilot']['rate'] * 100:.0f}%"
    m = lead_json(console, "/v1/console/metrics")
    assert page.inner_text("#kpi-cues") == str(m["cues_per_call"]) and len(m["weeks"]) >= 6
    assert page.locator("svg.chart").count() >= 6
    assert page.locator("#by-agent tbody tr").count() == len(qa["trends"]["by_agent"])
    console.shot(page, "08-metrics")
    only_local(console)
