"""Repeat issue themes are clustered by meaning (MiniLM), labelled by their most central excerpt."""

from __future__ import annotations

import json

import pytest

from livecoach.postcall import _themes
from livecoach.settings import Settings

from conftest import HARPER_DEV, make_settings

# real Harper Valley customer lines: three problems said in different words, plus one unrelated line
GROUPS = {
    "closing": ["no that'll be all for today", "no that was all thank you", "um no that will be all thank you"],
    "lost_card": ["i lost my credit card", "i lost my debit card"],
    "transfer": ["yes i would like to transfer money between my accounts",
                 "i would like to transfer money between my accounts"],
    "password": ["i would like to reset my password"],
}


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    enc = _themes.encoder_for(make_settings(tmp_path_factory.mktemp("themes")))
    assert enc is not None, "neither the ONNX encoder nor all-MiniLM-L6-v2 in torch loaded"
    return enc


def test_the_lines_are_real_harper_valley_lines():
    lines = {t["text"] for line in open(HARPER_DEV) if line.strip() for t in json.loads(line)["turns"]}
    assert {x for g in GROUPS.values() for x in g} <= lines


def test_paraphrased_excerpts_cluster_together_and_unrelated_ones_stay_apart(encoder):
    items = [{"text": t, "criterion": g, "kind": "agent", "call_id": f"{g}-{i}"}
             for g, ts in GROUPS.items() for i, t in enumerate(ts)]
    out = _themes.cluster(items, encoder)
    assert out["method"] == "minilm" and out["items"] == len(items)
    by_group = {}
    for c in out["clusters"]:
        for g, n in c["criteria"].items():
            by_group.setdefault(g, []).append(c)
    for g, ts in GROUPS.items():
        assert len(by_group[g]) == 1, f"{g} split over {len(by_group[g])} clusters"
        c = by_group[g][0]
        assert c["criteria"] == {g: len(ts)}, f"{g} merged with {c['criteria']}"
        assert c["criterion"] == g and c["label"] in ts and c["count"] == len(ts)
    assert out["clusters"][0]["criterion"] == "closing"  # largest first


def test_cluster_labels_are_redacted_and_the_cache_holds_no_text(encoder):
    items = [{"text": "my email is dana.reyes@example.com and my card is 4111 1111 1111 1111",
              "criterion": "x", "kind": "agent", "call_id": "c"}]
    out = _themes.cluster(items, encoder)
    label = out["clusters"][0]["label"]
    assert "example.com" not in label and "4111" not in label
    assert all(isinstance(k, str) and len(k) == 40 for k in _themes._cache)  # sha1 keys, embeddings only


def test_without_the_encoder_themes_cluster_by_words():
    items = [{"text": t, "criterion": g, "kind": "agent", "call_id": g} for g, ts in GROUPS.items() for t in ts]
    out = _themes.cluster(items, None)
    assert out["method"] == "lexical"
    assert sum(c["count"] for c in out["clusters"]) == len(items)
