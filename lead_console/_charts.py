"""Small hand-written SVG charts, rendered on the server (no charting library, nothing fetched)."""

from __future__ import annotations

from html import escape
from typing import Sequence

from markupsafe import Markup

PALETTE = ("#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#dc2626", "#4b5563")
FONT = "font-family='system-ui,-apple-system,Segoe UI,Roboto,sans-serif' font-size='11' fill='#475569'"


def _fmt(v: float, percent: bool) -> str:
    if percent:
        return f"{v * 100:.0f}%"
    return f"{v:.1f}".rstrip("0").rstrip(".") if v != int(v) else f"{int(v)}"


def _nice_max(v: float, percent: bool) -> float:
    if percent:
        return next((c for c in (0.2, 0.4, 0.6, 0.8, 1.0) if c >= v), 1.0)
    if v <= 0:
        return 1.0
    for e in range(-2, 7):
        for m in (1, 2, 2.5, 5):
            cand = m * 10 ** e
            if cand >= v:
                return cand
    return v


def empty(msg: str = "No data yet") -> Markup:
    return Markup(f"<div class='chart-empty'>{escape(msg)}</div>")


def bar_chart(labels: Sequence[str], values: Sequence[float], *, percent: bool = False, color: str = PALETTE[0],
              width: int = 520, height: int = 200, title: str = "") -> Markup:
    if not labels or not any(values):
        return empty()
    pad_l, pad_b, pad_t = 36, 28, 10
    w, h = width - pad_l - 8, height - pad_b - pad_t
    top = _nice_max(max(values), percent)
    n = len(values)
    slot = w / n
    bw = min(44, slot * 0.6)
    parts = [f"<svg class='chart' viewBox='0 0 {width} {height}' role='img' aria-label='{escape(title)}'>"]
    for i in range(5):
        y = pad_t + h - h * i / 4
        parts.append(f"<line x1='{pad_l}' x2='{width - 8}' y1='{y:.1f}' y2='{y:.1f}' stroke='#e2e8f0'/>")
        parts.append(f"<text x='{pad_l - 6}' y='{y + 4:.1f}' text-anchor='end' {FONT}>{_fmt(top * i / 4, percent)}</text>")
    for i, (lab, v) in enumerate(zip(labels, values)):
        bh = h * (v / top) if top else 0
        x = pad_l + slot * i + (slot - bw) / 2
        parts.append(f"<rect x='{x:.1f}' y='{pad_t + h - bh:.1f}' width='{bw:.1f}' height='{bh:.1f}' rx='3' fill='{color}'>"
                     f"<title>{escape(lab)}: {_fmt(v, percent)}</title></rect>")
        if v:
            parts.append(f"<text x='{x + bw / 2:.1f}' y='{pad_t + h - bh - 4:.1f}' text-anchor='middle' {FONT}>{_fmt(v, percent)}</text>")
        parts.append(f"<text x='{x + bw / 2:.1f}' y='{height - 10}' text-anchor='middle' {FONT}>{escape(lab)}</text>")
    parts.append("</svg>")
    return Markup("".join(parts))


def line_chart(labels: Sequence[str], series: dict[str, Sequence[float | None]], *, percent: bool = False,
               width: int = 520, height: int = 220, title: str = "") -> Markup:
    vals = [v for s in series.values() for v in s if v is not None]
    if not labels or not vals:
        return empty()
    pad_l, pad_b, pad_t = 36, 28, 10
    legend_h = 18 * ((len(series) + 3) // 4)
    height += legend_h
    w, h = width - pad_l - 36, height - pad_b - pad_t - legend_h
    top = _nice_max(max(vals), percent)
    n = len(labels)

    def xy(i: int, v: float) -> tuple[float, float]:
        x = pad_l + (w * i / (n - 1) if n > 1 else w / 2)
        return x, pad_t + h - h * v / top

    parts = [f"<svg class='chart' viewBox='0 0 {width} {height}' role='img' aria-label='{escape(title)}'>"]
    for i in range(5):
        y = pad_t + h - h * i / 4
        parts.append(f"<line x1='{pad_l}' x2='{width - 8}' y1='{y:.1f}' y2='{y:.1f}' stroke='#e2e8f0'/>")
        parts.append(f"<text x='{pad_l - 6}' y='{y + 4:.1f}' text-anchor='end' {FONT}>{_fmt(top * i / 4, percent)}</text>")
    step = max(1, n // 8)
    for i, lab in enumerate(labels):
        if i % step == 0 or i == n - 1:
            x, _ = xy(i, 0)
            parts.append(f"<text x='{x:.1f}' y='{pad_t + h + 16}' text-anchor='middle' {FONT}>{escape(lab)}</text>")
    for k, (name, s) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        pts = [xy(i, v) for i, v in enumerate(s) if v is not None]
        if len(pts) > 1:
            d = " ".join(f"{'M' if j == 0 else 'L'}{x:.1f},{y:.1f}" for j, (x, y) in enumerate(pts))
            parts.append(f"<path d='{d}' fill='none' stroke='{color}' stroke-width='2.2' stroke-linejoin='round'/>")
        for i, v in enumerate(s):
            if v is not None:
                x, y = xy(i, v)
                parts.append(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3.2' fill='{color}'>"
                             f"<title>{escape(name)} · {escape(labels[i])}: {_fmt(v, percent)}</title></circle>")
        lx, ly = pad_l + (k % 4) * (w / 4), height - legend_h + 6 + 18 * (k // 4)
        parts.append(f"<rect x='{lx:.1f}' y='{ly - 8:.1f}' width='10' height='10' rx='2' fill='{color}'/>"
                     f"<text x='{lx + 14:.1f}' y='{ly + 1:.1f}' {FONT}>{escape(name[:22])}</text>")
    parts.append("</svg>")
    return Markup("".join(parts))


def hbar_chart(items: Sequence[tuple[str, float]], *, color: str = PALETTE[1], width: int = 520,
               row: int = 24, title: str = "") -> Markup:
    if not items:
        return empty()
    label_w = 190
    height = row * len(items) + 6
    top = max(v for _, v in items) or 1
    w = width - label_w - 40
    parts = [f"<svg class='chart' viewBox='0 0 {width} {height}' role='img' aria-label='{escape(title)}'>"]
    for i, (lab, v) in enumerate(items):
        y = 3 + i * row
        bw = w * v / top
        parts.append(f"<text x='{label_w - 8}' y='{y + row / 2 + 4:.1f}' text-anchor='end' {FONT}>{escape(lab[:30])}</text>")
        parts.append(f"<rect x='{label_w}' y='{y + 4}' width='{bw:.1f}' height='{row - 8}' rx='3' fill='{color}'/>")
        parts.append(f"<text x='{label_w + bw + 6:.1f}' y='{y + row / 2 + 4:.1f}' {FONT}>{_fmt(v, False)}</text>")
    parts.append("</svg>")
    return Markup("".join(parts))
