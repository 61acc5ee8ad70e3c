"""Word error rate with Whisper-style English text normalisation (a compact version of Whisper's
``EnglishTextNormalizer``: case, punctuation, bracketed markers, titles such as MR/MISTER,
contractions, British spellings seen in call transcripts, and numbers spelled as words)."""

from __future__ import annotations

import re

_TITLES = {"mr": "mister", "mrs": "missus", "ms": "miss", "dr": "doctor", "st": "saint", "jr": "junior",
           "sr": "senior", "prof": "professor", "mister": "mister"}
_CONTRACTIONS = [
    (r"\bwon't\b", "will not"), (r"\bcan't\b", "can not"), (r"\bcannot\b", "can not"), (r"\blet's\b", "let us"),
    (r"n't\b", " not"), (r"'re\b", " are"), (r"'ll\b", " will"), (r"'ve\b", " have"), (r"'m\b", " am"),
    (r"'d\b", " would"),
]
_SPELLINGS = {"okay": "ok", "o.k.": "ok", "alright": "all right", "cheque": "check", "cheques": "checks",
              "colour": "color", "favourite": "favorite", "centre": "center", "cancelled": "canceled",
              "yeah": "yes", "yep": "yes", "uh-huh": "uh huh", "mm-hmm": "mhm", "mmhmm": "mhm"}
_FILLERS = {"um", "uh", "hmm", "mm", "er", "ah", "oh", "mhm"}
_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen " \
        "sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def _number_words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + _number_words(n % 100))
    for size, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand")):
        if n >= size:
            return _number_words(n // size) + " " + name + ("" if n % size == 0 else " " + _number_words(n % size))
    return str(n)


def _digits(m: re.Match) -> str:
    s = m.group(0).replace(",", "")
    if len(s) > 4 and s.startswith("0") or len(s) > 9:
        return " ".join(_ONES[int(c)] for c in s)  # account numbers, read digit by digit
    return _number_words(int(s))


def normalise(text: str) -> str:
    """Lower-case words with Whisper-like normalisation, for scoring."""
    s = text.lower()
    s = re.sub(r"[\[<(][^\]>)]*[\]>)]", " ", s)  # [noise], <unk>, (laughs)
    s = s.replace("’", "'")
    s = re.sub(r"\$(\d[\d,]*)(?:\.(\d\d))?", lambda m: f"{m.group(1)} dollars" + (f" {m.group(2)} cents" if m.group(2) else ""), s)
    s = s.replace("%", " percent")
    s = s.replace("&", " and ")
    for pat, rep in _CONTRACTIONS:
        s = re.sub(pat, rep, s)
    s = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", s)
    s = re.sub(r"\d[\d,]*", _digits, s)
    s = re.sub(r"\b(mr|mrs|ms|dr|st|jr|sr|prof)\b\.?", lambda m: _TITLES[m.group(1)], s)
    s = re.sub(r"(\w)'s\b", r"\1s", s)
    s = re.sub(r"[^a-z0-9' ]+", " ", s)
    s = s.replace("'", " ")
    words = []
    for w in s.split():
        w = _SPELLINGS.get(w, w)
        words.extend(x for x in w.split() if x not in _FILLERS)
    return " ".join(words)


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    d = list(range(len(hyp) + 1))
    for i, rw in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, hw in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (rw != hw))
    return d[len(hyp)]


def wer(ref: str, hyp: str) -> float:
    r, h = normalise(ref).split(), normalise(hyp).split()
    return edit_distance(r, h) / max(len(r), 1)


def corpus_wer(pairs: list[tuple[str, str]]) -> float:
    """Errors over all reference words (not the mean of per-file rates)."""
    errs = words = 0
    for ref, hyp in pairs:
        r, h = normalise(ref).split(), normalise(hyp).split()
        errs += edit_distance(r, h)
        words += len(r)
    return errs / max(words, 1)
