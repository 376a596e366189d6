"""`summary.md` (for $GITHUB_STEP_SUMMARY, Slack or a PR comment) and `history.jsonl` (one line
per run, so a nightly regression shows as a trend)."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

from ..redact import redact

HISTORY_KEYS = ("generated_at", "target", "fps", "fps_min_window", "frames", "stalls", "freezes", "decode_errors",
                "probe_verdict", "phases", "passed", "failed", "skipped", "triage")


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_summary(m: dict[str, Any]) -> str:
    tests = m.get("tests") or {}
    passed = sum(1 for v in tests.values() if v == "passed")
    failed = sum(1 for v in tests.values() if v == "failed")
    skipped = sum(1 for v in tests.values() if v == "skipped")
    not_run = sum(1 for v in tests.values() if v == "not_run")
    incomplete = m.get("complete") is False or not_run or not tests
    if failed or (m.get("triage") and not incomplete):
        verdict = "❌ fail"
    elif incomplete or skipped:
        verdict = "⚠️ incomplete" + (" (interrupted)" if m.get("interrupted") else "")
    else:
        verdict = "✅ pass"
    band = m.get("fps_band") or [None, None]
    target = (m.get("target") or {}).get("name", "?")
    lines = [
        f"## helix-e2e streaming check: {verdict}",
        "",
        f"Target `{target}` · {passed} passed, {failed} failed, {skipped} skipped"
        + (f", {not_run} never ran" if not_run else ""),
        "",
    ]
    triage = m.get("triage")
    if triage:
        lines += [f"**Verdict:** `{triage.get('layer')}` / {triage.get('cause')} — {triage.get('hint', '')}", ""]
    lines += [
        "| measure | value |",
        "|---|---|",
        f"| FPS (arrival, after warm-up) | {_fmt(m.get('fps'))} (band {_fmt(band[0], 0)}–{_fmt(band[1], 0)}) |",
        f"| slowest 1-s window | {_fmt(m.get('fps_min_window'))} |",
        f"| live / replay frames | {_fmt(m.get('frames'))} / {_fmt(m.get('replay_frames'))} |",
        f"| resolution (SPS) | {_fmt(m.get('width'))}x{_fmt(m.get('height'))} |",
        f"| jitter p99 | {_fmt((m.get('jitter_ms') or {}).get('p99'))} ms |",
        f"| stalls / freezes / black frames | {len(m.get('stalls') or [])} / {len(m.get('freezes') or [])} / "
        f"{_fmt(m.get('black_frames'))} |",
        f"| decode errors | {_fmt(m.get('decode_errors'))} |",
        f"| resource_id=0 probe | {_fmt(m.get('probe_verdict'))} |",
    ]
    ids = m.get("resource_ids") or {}
    for where, r in ids.items():
        if r and (r.get("nonzero") or r.get("zero")):
            lines.append(f"| resource ids ({where}, {r.get('source') or '-'}) | {r.get('nonzero')} non-zero, "
                         f"{r.get('zero')} zero |")
    phases = m.get("phases") or {}
    if phases:
        lines.append("| phases | " + ", ".join(f"{k} {v:.1f}s" for k, v in phases.items() if not k.endswith("_down"))
                     + " |")
    failing = [k for k, v in tests.items() if v == "failed"]
    if failing:
        lines += ["", "Failed:"] + [f"- `{k.split('::')[-1]}`" for k in failing]
    return redact("\n".join(lines) + "\n")


def history_entry(m: dict[str, Any]) -> dict[str, Any]:
    tests = m.get("tests") or {}
    entry = {k: m.get(k) for k in HISTORY_KEYS if k in m}
    entry["target"] = (m.get("target") or {}).get("name")
    entry["first_frame_s"] = (m.get("capture") or {}).get("first_frame_s")
    entry["stalls"] = len(m.get("stalls") or [])
    footprint = m.get("harness")
    if isinstance(footprint, dict):  # the harness's own cost, beside the FPS it measured
        entry["harness"] = {k: footprint.get(k) for k in ("analysis", "stream_cpu_s", "stream_cpu_percent_of_core",
                                                          "peak_rss_mb") if k in footprint}
    entry["freezes"] = len(m.get("freezes") or [])
    for outcome in ("passed", "failed", "skipped"):
        entry[outcome] = sum(1 for v in tests.values() if v == outcome)
    if m.get("triage"):
        entry["triage"] = {k: m["triage"].get(k) for k in ("layer", "cause")}
    return entry


def append_history(path: str | os.PathLike[str], m: dict[str, Any]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("a") as fh:
        fh.write(redact(json.dumps(history_entry(m), default=str)) + "\n")


def read_history(path: str | os.PathLike[str], last: int = 20) -> list[dict[str, Any]]:
    """The last N runs; unreadable lines are skipped (a history file must never break a report)."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for line in p.read_text(errors="replace").splitlines()[-last:]:
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out


def trend_html(history: list[dict[str, Any]]) -> str:
    """A small table + sparkline of fps and phase time over the last runs."""
    if not history:
        return ""
    fps = [h.get("fps") for h in history]
    values = [v for v in fps if isinstance(v, (int, float))]
    spark = ""
    if len(values) >= 2:
        lo, hi = min(values), max(values)
        span = (hi - lo) or 1.0
        w, hgt = 200, 40
        pts = []
        xs = [i for i, v in enumerate(fps) if isinstance(v, (int, float))]
        for i, v in zip(xs, values):
            x = w * i / max(1, len(fps) - 1)
            y = hgt - 4 - (hgt - 8) * (v - lo) / span
            pts.append(f"{x:.1f},{y:.1f}")
        spark = (f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{hgt}' class='e2e-trend'>"
                 f"<polyline fill='none' stroke='#1565c0' stroke-width='2' points='{' '.join(pts)}'/></svg>")
    rows = "".join(
        "<tr>" + "".join(
            f"<td>{html.escape(_fmt(v))}</td>" for v in (
                h.get("generated_at"), h.get("fps"), h.get("fps_min_window"),
                sum((h.get("phases") or {}).values()) if h.get("phases") else None,
                f"{h.get('passed', 0)}/{h.get('failed', 0)}/{h.get('skipped', 0)}",
                (h.get("triage") or {}).get("cause") if h.get("triage") else "",
            )
        ) + "</tr>"
        for h in history
    )
    return (f"<h2>Trend (last {len(history)} runs)</h2>{spark}<table class='e2e-trend'><thead><tr><th>run</th>"
            "<th>fps</th><th>min window</th><th>phases s</th><th>pass/fail/skip</th><th>verdict</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")
