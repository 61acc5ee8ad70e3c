"""PII redaction for notes and evidence excerpts: patterns + the call's known customer fields.

An equivalent of presidio's pattern recognizers, measured on the Harper Valley dev calls
(``livecoach qa redaction-eval``). Transcripts there are lower-case ASR-like text without
punctuation, so besides written patterns (emails, phone/card/account digits) it removes:

- the call's known customer fields (``CallStarted.customer``): whole values and, for name fields,
  every name part, wherever they occur;
- names introduced by cues ("my name is …", "this is … from", "speaking with …", "mr …"), learned
  once from the whole transcript and then removed everywhere in the call;
- spoken digit sequences ("eight eight four five nine …", "zero five four"), except amounts and
  times ("one hundred and ten dollars", "nine thirty am");
- addresses ("nine ten first street", "my address is …"), spelled-out letters ("m a i n") and US
  state names.

Redacted spans become ``[name]``, ``[number]``, ``[email]``, ``[address]``, ``[spelled]``,
``[location]``. In evidence excerpts each placeholder is set off with "…" (``my name is …[name]…``)
so a reader sees that words were removed and the rest of the excerpt stays verbatim.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

NUMBER_WORDS = {
    "zero", "oh", "o", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    "hundred", "thousand", "double", "triple", "niner",
}
UNIT_WORDS = {"dollars", "dollar", "cents", "cent", "bucks", "percent", "days", "day", "business", "minutes",
              "minute", "hours", "hour", "weeks", "week", "months", "month", "years", "year", "am", "pm",
              "o'clock", "oclock", "seconds", "second", "times", "a.m.", "p.m.", "checks", "business-days"}
NUMBER_CUES = re.compile(
    r"\b(number|zip|zip code|postal code|pin|code|account|card|digits|ssn|social|last four|routing|"
    r"phone|cell|extension|number is|it'?s|is)\s*$")
STREET = r"(street|st|avenue|ave|road|rd|drive|dr|lane|ln|boulevard|blvd|court|ct|way|place|pl|circle|parkway|pkwy|highway|hwy|terrace|trail)"
US_STATES = (
    "alabama alaska arizona arkansas california colorado connecticut delaware florida georgia hawaii idaho "
    "illinois indiana iowa kansas kentucky louisiana maine maryland massachusetts michigan minnesota "
    "mississippi missouri montana nebraska nevada ohio oklahoma oregon pennsylvania tennessee texas utah "
    "vermont virginia washington wisconsin wyoming").split() + [
    "new hampshire", "new jersey", "new mexico", "new york", "north carolina", "north dakota",
    "rhode island", "south carolina", "south dakota", "west virginia"]

# words that follow a name cue but are not names (lower-case ASR text has no capitals to help)
NOT_NAMES = set("""
a an the and or but so of to in on at for from with by about as is are was were be been am i i'm im me my
mine you your you're we our us they them their he him his she her it its it's this that these those there
here what which who whom whose why how when where also just really very um uh uhm er ah oh hmm mm hi hello
hey yes yeah yep no nope okay ok alright sure well good great fine calling call speaking trying going gonna
wanna want need would like can could will shall should may might must do does did have has had not
don't can't cannot won't isn't calling regarding customer service support bank banking national harper
valley account checking savings card credit debit agent representative rep manager supervisor please thank
thanks sorry today now currently actually again still here's there's that's what's going name names
new old your mr mrs ms miss sir madam maam ma'am one two three four five six seven eight nine ten zero
""".split())
FILLERS = {"uh", "um", "uhm", "er", "ah", "also", "actually", "mister", "mr", "mrs", "ms", "miss"}
NAME_CUES = [
    (re.compile(r"\b(my name is|my name's|name is|name's|call me|you can call me)\s+"), False),
    (re.compile(r"\b(speaking with|talking to|talking with|you'?ve reached|you have reached|ask for)\s+"), False),
    (re.compile(r"\b(mr|mrs|ms|miss|mister|missus|doctor|dr)\.?\s+"), False),
    (re.compile(r"\b(this is|i'?m|it'?s|i am)\s+"), True),  # needs a confirming word after the name
]
AFTER_NAME = {"from", "with", "at", "speaking", "calling", "here", "and", "how", "i", "i'm", "on", "over"}

_MARKER = re.compile(r"\[[^\]]*\]|<[^>]*>")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+|\b[\w.+-]+ at [\w-]+ dot (com|net|org|edu|gov|io|co)\b", re.I)
_DIGITS = re.compile(r"(?<![\w])(\+?\d[\d\s().-]{2,}\d)(?![\w])")
_ALNUM_ID = re.compile(r"\b(?=[a-z]*\d)(?=\d*[a-z])[a-z0-9-]{5,}\b", re.I)
_ADDRESS = re.compile(rf"\b((\d+|(?:(?:{'|'.join(sorted(NUMBER_WORDS))})\s+){{1,6}})\s*(\w+\s+){{0,3}}{STREET})\b", re.I)
_ADDRESS_CUE = re.compile(r"\b(my address is|address is|i live (at|on)|live at)\s+", re.I)
_SPELLED = re.compile(r"(?<![\w'])(?:[a-z]\s+){2,}[a-z](?![\w'])", re.I)
_STATES = re.compile(r"\b(" + "|".join(sorted(US_STATES, key=len, reverse=True)) + r")\b", re.I)
_WORD = re.compile(r"[a-z0-9'~-]+", re.I)


def _word_spans(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), m.group(0).lower()) for m in _WORD.finditer(text)]


def learn_names(texts: Iterable[str]) -> set[str]:
    """Name parts introduced by cues anywhere in the transcript ("my name is linda johnson")."""
    names: set[str] = set()
    for text in texts:
        low = _MARKER.sub(" ", text.lower())
        for rx, needs_confirm in NAME_CUES:
            for m in rx.finditer(low):
                words = _word_spans(low[m.end():])[:6]
                while words and words[0][2] in FILLERS:
                    words.pop(0)
                got: list[str] = []
                for _, _, w in words:
                    if w in NOT_NAMES or w in FILLERS or not w.isalpha() or len(w) < 2 or len(got) == 3:
                        break
                    got.append(w)
                if not got:
                    continue
                if needs_confirm:
                    nxt = words[len(got)][2] if len(words) > len(got) else None
                    if nxt not in AFTER_NAME or len(got) > 2:
                        continue
                names.update(got)
    return names


class Redactor:
    """Removes PII from text. Build one per call with :meth:`for_call`."""

    def __init__(self, names: Iterable[str] = (), values: Iterable[str] = ()):
        self.names = {n.lower() for n in names if n and len(n) >= 2}
        self.values = sorted({v.lower().strip() for v in values if v and len(v.strip()) >= 3}, key=len, reverse=True)
        parts = sorted(self.names, key=len, reverse=True)
        self._names_rx = re.compile(r"\b(" + "|".join(map(re.escape, parts)) + r")\b", re.I) if parts else None
        self._values_rx = (re.compile("|".join(re.escape(v) for v in self.values), re.I) if self.values else None)

    @classmethod
    def for_call(cls, customer: Mapping[str, str] | None = None, texts: Iterable[str] = (),
                 extra_names: Iterable[str] = ()) -> "Redactor":
        """Known customer fields + names learned from the transcript's cues + ``extra_names``."""
        names: set[str] = set()
        values: list[str] = []
        for key, val in (customer or {}).items():
            val = str(val or "").strip()
            if not val:
                continue
            values.append(val)
            if "name" in key.lower() or key.lower() in {"first", "last", "surname", "given"}:
                names.update(p for p in re.split(r"[^a-z'-]+", val.lower()) if len(p) >= 2)
            digits = re.sub(r"\D", "", val)
            if len(digits) >= 4:
                values.append(digits)
        names |= learn_names(texts)
        for n in extra_names:
            names.update(p for p in re.split(r"[^a-z'-]+", str(n).lower()) if len(p) >= 2)
        return cls(names, values)

    # ------------------------------------------------------------------ detection
    def spans(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, label) of every PII span in ``text``, merged and sorted."""
        found: list[tuple[int, int, str]] = []
        if self._values_rx:
            found += [(m.start(), m.end(), "name" if _alpha(m.group(0)) else "number")
                      for m in self._values_rx.finditer(text)]
        if self._names_rx:
            found += [(m.start(), m.end(), "name") for m in self._names_rx.finditer(text)]
        found += [(m.start(), m.end(), "email") for m in _EMAIL.finditer(text)]
        found += [(m.start(1), m.end(1), "number") for m in _DIGITS.finditer(text)
                  if len(re.sub(r"\D", "", m.group(1))) >= 4 and not _unit_follows(text, m.end(1))]
        found += [(m.start(), m.end(), "number") for m in _ALNUM_ID.finditer(text)]
        found += [(m.start(), m.end(), "address") for m in _ADDRESS.finditer(text)]
        for m in _ADDRESS_CUE.finditer(text):
            words = _word_spans(text[m.end():])[:10]
            if words:
                found.append((m.end(), m.end() + words[-1][1], "address"))
        found += [(m.start(), m.end(), "spelled") for m in _SPELLED.finditer(text)
                  if not re.fullmatch(r"[ap]\s+m", m.group(0).lower())]
        found += [(m.start(), m.end(), "location") for m in _STATES.finditer(text)]
        found += self._spoken_numbers(text)
        return _merge(found)

    def _spoken_numbers(self, text: str) -> list[tuple[int, int, str]]:
        words = _word_spans(text)
        out: list[tuple[int, int, str]] = []
        i = 0
        while i < len(words):
            if words[i][2] not in NUMBER_WORDS or words[i][2] in {"oh", "o"}:
                i += 1
                continue
            j = i
            while j + 1 < len(words) and (words[j + 1][2] in NUMBER_WORDS or
                                          (words[j + 1][2] == "and" and j + 2 < len(words)
                                           and words[j + 2][2] in NUMBER_WORDS)):
                j += 1
            run = [w for w in words[i:j + 1] if w[2] != "and"]
            unit = j + 1 < len(words) and words[j + 1][2] in UNIT_WORDS
            unit = unit or (j + 2 < len(words) and f"{words[j + 1][2]} {words[j + 2][2]}" in {"a m", "p m"})
            cue = bool(NUMBER_CUES.search(text[:words[i][0]].lower()))
            is_amount = any(w[2] in {"hundred", "thousand"} for w in run) and not cue
            if not unit and not is_amount and (len(run) >= 3 or (cue and len(run) >= 1 and _digit_cue(text[:words[i][0]]))):
                out.append((words[i][0], words[j][1], "number"))
            i = j + 1
        return out

    # ------------------------------------------------------------------ output
    def redact(self, text: str) -> str:
        """``text`` with every PII span replaced by ``[label]``."""
        out, last = [], 0
        for s, e, label in self.spans(text):
            out.append(text[last:s])
            out.append(f"[{label}]")
            last = e
        out.append(text[last:])
        return "".join(out)

    def excerpt(self, text: str) -> str:
        """An evidence excerpt: verbatim apart from "…[label]…" for PII and "…" for transcript markers
        such as ``[noise]`` or ``<unk>``. Every piece between the "…" is a substring of ``text``."""
        spans = [(m.start(), m.end(), None) for m in _MARKER.finditer(text)]
        spans = _merge(spans + self.spans(_MARKER.sub(lambda m: " " * len(m.group(0)), text)), text)
        pieces, last = [], 0
        for s, e, label in spans:
            pieces.append(text[last:s].strip())
            pieces.append(f"…[{label}]…" if label else "…")
            last = e
        pieces.append(text[last:].strip())
        out = " ".join(p for p in pieces if p)
        return re.sub(r"…( …)+", "…", out)

    def leaks(self, text: str) -> list[str]:
        """Known names or values still present in ``text`` (for tests and the leak measurement)."""
        hits = []
        if self._names_rx:
            hits += [m.group(0) for m in self._names_rx.finditer(text)]
        if self._values_rx:
            hits += [m.group(0) for m in self._values_rx.finditer(text)]
        return hits


def _alpha(s: str) -> bool:
    return bool(re.fullmatch(r"[a-z' .-]+", s.lower()))


def _unit_follows(text: str, end: int) -> bool:
    nxt = _word_spans(text[end:end + 20])
    return bool(nxt) and nxt[0][2] in UNIT_WORDS


def _digit_cue(before: str) -> bool:
    return bool(re.search(r"\b(number|zip( code)?|pin|code|digits|ssn|social|last four|routing|extension)"
                          r"( is| it'?s| was)?\s*$", before.lower()))


def _merge(spans: list[tuple[int, int, str | None]], text: str | None = None) -> list[tuple[int, int, str | None]]:
    """Sorted, non-overlapping spans; with ``text``, spans only whitespace apart are joined too."""
    spans = sorted(spans, key=lambda s: (s[0], -s[1]))
    out: list[tuple[int, int, str | None]] = []
    for s, e, label in spans:
        if out and (s <= out[-1][1] or (text is not None and not text[out[-1][1]:s].strip())):
            ps, pe, pl = out[-1]
            out[-1] = (ps, max(pe, e), pl if pl is not None else label)
        else:
            out.append((s, e, label))
    return out
