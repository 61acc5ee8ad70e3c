"""``bench load`` helpers: percentiles, the targets a stage is judged by, and the printed report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def spread(xs: list[float], digits: int = 1) -> dict[str, Any]:
    """n, p50, p95, p99 and max of ``xs`` (None when there are none)."""
    def r(v):
        return None if v is None else round(v, digits)
    return {"n": len(xs), "p50": r(pct(xs, 50)), "p95": r(pct(xs, 95)), "p99": r(pct(xs, 99)),
            "max": r(max(xs) if xs else None)}


@dataclass
class Targets:
    ack_p99_ms: float = 500.0
    signal_p95_s: float = 2.0
    voice_p95_s: float = 0.0          # 0: voice latency is reported, not judged
    min_signals: int = 5              # fewer timed signals than this: their p95 is reported, not judged

    def broken(self, stage: dict[str, Any]) -> list[str]:
        """What a stage missed; empty when it met every target."""
        out = []
        chat = stage["chat"]
        if chat["acked"] == 0 and stage.get("chats", 1):
            out.append("no event was acked")
        errors = chat["errors"] + stage["voice"]["errors"]
        if errors:
            out.append(f"{errors} errors")
        p99 = chat["ack_ms"]["p99"]
        if p99 is not None and p99 > self.ack_p99_ms:
            out.append(f"ack p99 {p99:.0f} ms > {self.ack_p99_ms:g} ms")
        s95 = stage["signals"]["latency_s"]["p95"]
        if s95 is not None and s95 > self.signal_p95_s and stage["signals"]["latency_s"]["n"] >= self.min_signals:
            out.append(f"signal p95 {s95:.2f} s > {self.signal_p95_s:g} s")
        v95 = stage["voice"]["final_s"]["p95"]
        if self.voice_p95_s and v95 is not None and v95 > self.voice_p95_s:
            out.append(f"voice final p95 {v95:.2f} s > {self.voice_p95_s:g} s")
        return out

    def describe(self) -> str:
        s = (f"ack p99 <= {self.ack_p99_ms:g} ms, signal p95 <= {self.signal_p95_s:g} s (judged from "
             f"{self.min_signals} timed signals up), no errors")
        if self.voice_p95_s:
            s += f", voice final p95 <= {self.voice_p95_s:g} s"
        return s


def _f(v, fmt: str = ".0f", none: str = "-") -> str:
    return none if v is None else format(v, fmt)


def render_stage(st: dict[str, Any]) -> list[str]:
    c, s, v, srv = st["chat"], st["signals"], st["voice"], st["server"]
    codes = ", ".join(f"{k} {n}" for k, n in sorted(c["error_codes"].items())) or "none"
    a = c["ack_ms"]
    lines = [
        f"stage {st['stage']}: {st['chats']} chats + {st['voice_calls']} voice calls for {st['seconds']:.0f} s "
        f"(speed {st['speed']:g}x"
        + (f"; {st['wall_s']:.0f} s with the last voice clips)" if st["voice_calls"] else ")"),
        f"  chat events sent {c['sent']}, acked {c['acked']}, errors {c['errors']} ({codes}); "
        f"{c['events_per_s']:.1f} events/s; calls {c['calls']} ({c['calls_completed']} replayed to the end)",
        f"  ack latency ms    p50 {_f(a['p50'], '.1f')}  p95 {_f(a['p95'], '.1f')}  p99 {_f(a['p99'], '.1f')}  "
        f"max {_f(a['max'], '.1f')}",
    ]
    for e in c.get("error_samples", [])[:3] + v.get("error_samples", [])[:3]:
        lines.append(f"    error: {e[:200]}")
    if s.get("skipped"):
        lines.append(f"  signal latency    not measured: {s['skipped']}")
    else:
        sl = s["latency_s"]
        lines.append(f"  signal latency s  p50 {_f(sl['p50'], '.2f')}  p95 {_f(sl['p95'], '.2f')}  "
                     f"p99 {_f(sl['p99'], '.2f')}  max {_f(sl['max'], '.2f')}  over {sl['n']} lead signals "
                     f"({s['lead_stored']} stored, {s['not_on_board']} never on the board, "
                     f"{s['agent_stored']} agent cues not timed"
                     + (f"; {s['calls_unread']} calls could not be read" if s.get("calls_unread") else "") + ")"
                     + ("" if s.get("judged") else "; too few to judge"))
    b = st["board_lag_s"]
    lines.append(f"  board lag s       p50 {_f(b['p50'], '.2f')}  p95 {_f(b['p95'], '.2f')}  "
                 f"p99 {_f(b['p99'], '.2f')}  "
                 f"max {_f(b['max'], '.2f')}  over {b['n']} utterances (ack -> the lead's board card shows it)")
    if st["voice_calls"]:
        vf = v["final_s"]
        lines.append(f"  voice finals {v['finals']} over {v['calls']} calls; end of speech -> final s  "
                     f"p50 {_f(vf['p50'], '.2f')}  p95 {_f(vf['p95'], '.2f')}  max {_f(vf['max'], '.2f')} "
                     f"({v['measured_against']}); errors {v['errors']}, missed turns {v['missed_turns']}")
    rss = srv.get("rss_mb") or {}
    lines.append(f"  server RSS MB     start {_f(rss.get('start'))}  peak {_f(rss.get('peak'))}  "
                 f"end {_f(rss.get('end'))};  CPU {_f(srv.get('cpu_pct'))}% of one core "
                 f"({srv.get('cores')} cores; whole machine busy {_f(srv.get('machine_busy_pct'))}%)")
    lag = st["client"]["loop_lag_ms"]
    lines.append(f"  client loop lag ms p99 {_f(lag['p99'], '.1f')} max {_f(lag['max'], '.1f')}; "
                 f"load average {' '.join(str(x) for x in st['load_average'])}")
    lines.append(f"  targets: {'met' if not st['broken'] else 'BROKEN: ' + '; '.join(st['broken'])}")
    return lines


def render_table(stages: list[dict[str, Any]]) -> list[str]:
    head = (f"{'chats':>5} {'voice':>5} {'ev/s':>6} {'acked':>6} {'err':>4} {'ack p50':>7} {'p95':>6} {'p99':>6} "
            f"{'sig n':>5} {'sig p50':>7} {'p95':>6} {'brd p95':>7} {'vox p95':>7} {'RSS pk':>6} {'CPU%':>5} "
            f"{'mach%':>5}  verdict")
    out = [head]
    for st in stages:
        c, s, v, srv = st["chat"], st["signals"], st["voice"], st["server"]
        a, sl = c["ack_ms"], s["latency_s"]
        rss = (srv.get("rss_mb") or {}).get("peak")
        out.append(f"{st['chats']:5d} {st['voice_calls']:5d} {c['events_per_s']:6.1f} {c['acked']:6d} "
                   f"{c['errors'] + v['errors']:4d} {_f(a['p50'], '.1f'):>7} {_f(a['p95'], '.1f'):>6} "
                   f"{_f(a['p99'], '.1f'):>6} {sl['n']:5d} {_f(sl['p50'], '.2f'):>7} {_f(sl['p95'], '.2f'):>6} "
                   f"{_f(st['board_lag_s']['p95'], '.2f'):>7} "
                   f"{_f(v['final_s']['p95'], '.2f'):>7} {_f(rss):>6} {_f(srv.get('cpu_pct')):>5} "
                   f"{_f(srv.get('machine_busy_pct')):>5}  {'ok' if not st['broken'] else '; '.join(st['broken'])}")
    return out


def render(report: dict[str, Any]) -> str:
    srv = report["server"]
    lines = [f"livecoach bench load: server {srv['url']} ({srv['how']}), pid {srv.get('pid') or '-'}",
             f"conversations from {report['calls_file']} ({report['conversations']}); "
             f"voice clip {report['voice_clip'] or '-'}",
             f"signal latency: {report['signal_method']}",
             f"load average at start {' '.join(str(x) for x in report['load_average_start'])} "
             f"({srv.get('cores')} cores; other work on this machine makes the figures noisy)",
             f"targets: {report['targets']}"]
    if report.get("warmup"):
        w = report["warmup"]
        lines.append(f"warm-up (not counted): {w['seconds']:.0f} s, {w['acked']} events acked, {w['errors']} errors")
    lines.append("")
    for st in report["stages"]:
        lines += render_stage(st) + [""]
    if report["ramp"]:
        lines += render_table(report["stages"]) + [""]
        bp = report["break_point"]
        if bp:
            good = report["last_good_chats"]
            lines.append(f"break point: {bp['chats']} chats + {bp['voice_calls']} voice calls "
                         f"({'; '.join(bp['broken'])}); last stage that met the targets: "
                         + (f"{good} chats" if good is not None else "none"))
        else:
            lines.append(f"no break up to {report['stages'][-1]['chats']} chats "
                         f"+ {report['stages'][-1]['voice_calls']} voice calls")
    return "\n".join(lines)
