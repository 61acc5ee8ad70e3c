"""A cheap customer-sentiment score for the board's sparkline (about 60 µs an utterance).

The lexicon model (VADER) runs inside the board stage, so it must be fast; the detectors' learned
scores drive the signals themselves, the sparkline only shows the trend.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _analyzer():
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    return SentimentIntensityAnalyzer()


def customer_sentiment(text: str) -> float:
    """-1 (angry) … 1 (happy); 0 when unknown."""
    a = _analyzer()
    if a is None or not text:
        return 0.0
    return float(a.polarity_scores(text[:1000])["compound"])
