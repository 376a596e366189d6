"""The nights side by side: one page from every run's ``metrics.json`` and ``history.jsonl`` under a
reports directory (``helix-e2e history [DIR] --html OUT``).

A *run* is one ``metrics.json`` (a merged xdist one gives one run per target) or one line of a
``history.jsonl`` that no ``metrics.json`` describes (its dated folder was cleaned away); the same run
seen twice (``latest/`` and its dated copy, or a metrics file and its history line) counts once.
The page draws a trend chart per measure with pass/fail markers on the time axis, lists every run
with its triage cause and a link to its report, and flags regressions by :data:`REGRESSION_RULE`.
"""

from __future__ import annotations

import html
import json
import logging
import os
import statistics
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import HarnessError
from ..redact import redact
from . import measures as ms

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Measure:
    key: str
    label: str
    unit: str
    higher_is_better: bool


MEASURES = (
    Measure("fps", "FPS (arrival, after warm-up)", "fps", True),
    Measure("fps_min_window", "slowest 1 s window", "frames", True),
    Measure("first_frame_s", "time to first frame", "s", False),
    Measure("boot_s", "boot phase", "s", False),
    Measure("stack_s", "stack phase", "s", False),
    Measure("session_s", "session phase", "s", False),
    Measure("qemu_rss_mb", "QEMU resident memory (soak)", "MB", False),
    # The harness's own cost beside the FPS it measured (metrics.json "harness", issue 15).
    Measure("harness_cpu_percent", "harness CPU during the stream", "% of a core", False),
)

#: How a regression is recognised (also printed on the page).
REGRESSION_WINDOW = 10  # earlier passing runs that form the baseline
REGRESSION_MIN_BASELINE = 5  # fewer earlier passing runs: no judgement yet
REGRESSION_SPREADS = 3.0  # how many robust spreads (1.4826 × MAD) a value must move
REGRESSION_MIN_CHANGE = 0.10  # …and at least this share of the baseline median
REGRESSION_RULE = (
    f"A measure is flagged as a regression when it is worse than the median of up to {REGRESSION_WINDOW} earlier "
    f"passing runs by more than {REGRESSION_SPREADS:g} × their spread (1.4826 × the median absolute deviation, "
    f"a standard deviation robust to outliers) and by at least {REGRESSION_MIN_CHANGE:.0%} of that median. "
    "Worse means lower for FPS and the slowest window, higher for times and memory. "
    f"A run with fewer than {REGRESSION_MIN_BASELINE} earlier passing runs is not judged."
)


@dataclass
class Run:
    when: float  # epoch seconds
    target: str
    verdict: str  # PASS | FAIL | INCOMPLETE
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    triage: dict[str, Any] | None = None
    values: dict[str, float | None] = field(default_factory=dict)
    report: Path | None = None
    ci_url: str = ""
    source: Path | None = None
    key: tuple[str, str] = ("", "")


@dataclass(frozen=True)
class Regression:
    measure: Measure
    value: float
    median: float
    spread: float
    baseline: int  # how many earlier runs formed it

    def text(self) -> str:
        return (f"{self.measure.label} {_fmt(self.value)} {self.measure.unit} vs a median of {_fmt(self.median)} "
                f"± {_fmt(self.spread)} over the {self.baseline} earlier passing runs")


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


# -- reading the runs ----------------------------------------------------------------------------
def _values(m: dict[str, Any]) -> dict[str, float | None]:
    phases = m.get("phases") or {}
    cap = m.get("capture") or {}
    return {
        "fps": _num(m.get("fps")),
        "fps_min_window": _num(m.get("fps_min_window")),
        "first_frame_s": _num(cap.get("first_frame_s", m.get("first_frame_s"))),
        "boot_s": _num(phases.get("boot")),
        "stack_s": _num(phases.get("stack")),
        "session_s": _num(phases.get("session")),
        "qemu_rss_mb": _num(m.get("qemu_rss_mb")),
        "harness_cpu_percent": _num((m.get("harness") or {}).get("stream_cpu_percent_of_core")
                                    if isinstance(m.get("harness"), dict) else None),
    }


def _soak_rss(folder: Path) -> float | None:
    """The highest QEMU RSS a soak measured next to a run (``soak.json`` in its folder or below)."""
    best = None
    for path in list(folder.glob("soak.json")) + list(folder.glob("*/soak.json")) + list(folder.glob("*/*/soak.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for row in data.get("iterations") or [] if isinstance(data, dict) else []:
            value = _num(row.get("qemu_rss_mb")) if isinstance(row, dict) else None
            if value is not None and (best is None or value > best):
                best = value
    return best


def _run_from_metrics(m: dict[str, Any], path: Path) -> Run:
    counts = ms.outcome_counts(m)
    when = ms.parse_time(m.get("generated_at")) or ms.started_at(m) or path.stat().st_mtime
    values = _values(m)
    if values["qemu_rss_mb"] is None:
        values["qemu_rss_mb"] = _soak_rss(path.parent)
    report = path.parent / "report.html"
    if not report.is_file() and (path.parent.parent / "report.html").is_file():  # an xdist worker's folder
        report = path.parent.parent / "report.html"
    prov = m.get("provenance") or {}
    return Run(when=when, target=ms.target_name(m), verdict=ms.verdict_word(m), passed=counts["passed"],
               failed=counts["failed"] + counts["error"], skipped=counts["skipped"], triage=m.get("triage") or None,
               values=values, report=report if report.is_file() else None, ci_url=str(prov.get("ci_run_url") or ""),
               source=path, key=(str(m.get("generated_at") or when), ms.target_name(m)))


def _run_from_line(h: dict[str, Any], path: Path) -> Run | None:
    when = ms.parse_time(h.get("generated_at"))
    if when is None:
        return None
    failed, passed, skipped = (int(h.get(k) or 0) for k in ("failed", "passed", "skipped"))
    verdict = "FAIL" if failed or h.get("triage") else ("PASS" if passed and not skipped else "INCOMPLETE")
    values = _values({**h, "capture": {"first_frame_s": h.get("first_frame_s")}})
    target = str(h.get("target") or "?")
    return Run(when=when, target=target, verdict=verdict, passed=passed, failed=failed, skipped=skipped,
               triage=h.get("triage") or None, values=values, source=path, key=(str(h["generated_at"]), target))


def _metrics_runs(path: Path) -> list[Run]:
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("skipping %s: %s", path, exc)
        return []
    if not isinstance(m, dict):
        return []
    if isinstance(m.get("targets"), dict):  # merged under xdist: one run per target
        out = []
        for name, tm in m["targets"].items():
            if isinstance(tm, dict):
                tm = {**tm, "tests": {k: v for k, v in (tm.get("tests") or m.get("tests") or {}).items()}}
                run = _run_from_metrics(tm, path)
                run.target, run.key = str(name), (run.key[0], str(name))
                out.append(run)
        return out
    return [_run_from_metrics(m, path)]


def collect_runs(root: str | os.PathLike[str]) -> list[Run]:
    """Every run under ``root``, oldest first (one per run, however often it was copied)."""
    root = Path(root)
    if not root.is_dir():
        raise HarnessError(f"{root} is not a directory", phase="history",
                           hint="give the reports directory (e.g. reports/, or the unpacked nightly artifacts)")
    by_key: dict[tuple[str, str], Run] = {}

    def better(new: Run, old: Run) -> bool:  # a metrics.json beats a history line; a dated copy beats latest/
        score = lambda r: (r.source is not None and r.source.name == "metrics.json",  # noqa: E731
                           r.report is not None and "latest" not in r.report.parts)
        return score(new) > score(old)

    for path in sorted(root.rglob("metrics.json")):
        for run in _metrics_runs(path):
            if run.key not in by_key or better(run, by_key[run.key]):
                by_key[run.key] = run
    for path in sorted(root.rglob("history.jsonl")):
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                item = json.loads(line)
            except ValueError:
                continue
            run = _run_from_line(item, path) if isinstance(item, dict) else None
            if run is not None and run.key not in by_key:
                by_key[run.key] = run
    return sorted(by_key.values(), key=lambda r: r.when)


# -- regressions ------------------------------------------------------------------------------------
def regressions(runs: list[Run]) -> dict[tuple[int, str], Regression]:
    """``(run index, measure key) → Regression`` by :data:`REGRESSION_RULE` (runs oldest first)."""
    out: dict[tuple[int, str], Regression] = {}
    for measure in MEASURES:
        for i, run in enumerate(runs):
            value = run.values.get(measure.key)
            if value is None:
                continue
            baseline = [r.values[measure.key] for r in runs[:i]
                        if r.verdict == "PASS" and r.target == run.target and r.values.get(measure.key) is not None]
            baseline = baseline[-REGRESSION_WINDOW:]
            if len(baseline) < REGRESSION_MIN_BASELINE:
                continue
            median = statistics.median(baseline)
            spread = 1.4826 * statistics.median(abs(x - median) for x in baseline)
            worse = (median - value) if measure.higher_is_better else (value - median)
            if worse > REGRESSION_SPREADS * spread and worse >= REGRESSION_MIN_CHANGE * abs(median) and worse > 0:
                out[(i, measure.key)] = Regression(measure, value, median, spread, len(baseline))
    return out


# -- the page -------------------------------------------------------------------------------------------
def _h(value: object) -> str:
    return html.escape(redact(str(value)))


def _href(target: Path | str, out_dir: Path) -> str:
    if isinstance(target, str):
        return target if target.startswith(("https://", "http://")) else ""
    rel = os.path.relpath(target.resolve(), out_dir.resolve())
    return urllib.parse.quote(Path(rel).as_posix())


STYLE = """<style>
body{font-family:Helvetica,Arial,sans-serif;font-size:13px;color:#222;margin:16px}
h1{font-size:22px}h2{font-size:16px;margin-top:22px}
table.e2e-nights{border-collapse:collapse}table.e2e-nights td,table.e2e-nights th{border:1px solid #ddd;padding:3px 7px}
table.e2e-nights tr.fail td{background:#fdf1f1}td.regression{background:#ffe0b2 !important;font-weight:bold}
.verdict-PASS{color:#2e7d32;font-weight:bold}.verdict-FAIL{color:#c62828;font-weight:bold}
.verdict-INCOMPLETE{color:#ef6c00;font-weight:bold}.e2e-rule{max-width:900px;color:#444}
.e2e-chart{display:inline-block;margin:0 16px 12px 0;vertical-align:top}.e2e-chart h3{font-size:13px;margin:6px 0}
.muted{color:#999}
</style>"""


def _chart(measure: Measure, runs: list[Run], flagged: dict[tuple[int, str], Regression], out_dir: Path,
           width: int = 560, height: int = 190) -> str:
    pad_l, pad_r, pad_t, pad_b = 48, 12, 10, 46
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    values = [r.values.get(measure.key) for r in runs]
    known = [v for v in values if v is not None]
    lo, hi = (min(known), max(known)) if known else (0.0, 1.0)
    if hi - lo < 1e-9:  # a flat line: centre it
        pad = abs(hi) * 0.5 or 1.0
        lo, hi = lo - pad, hi + pad
    margin = (hi - lo) * 0.1
    lo, hi = lo - margin, hi + margin
    if known and min(known) >= 0:
        lo = max(0.0, lo)  # times, rates and sizes are never negative
    n = len(runs)

    def x(i: int) -> float:
        return pad_l + (plot_w * (i + 0.5) / n if n else 0)

    def y(v: float) -> float:
        return pad_t + plot_h * (1 - (v - lo) / (hi - lo))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="10" role="img" class="e2e-trend-chart" data-measure="{_h(measure.key)}" '
             f'aria-label="{_h(measure.label)} per run">',
             f'<line x1="{pad_l}" x2="{pad_l + plot_w}" y1="{pad_t + plot_h}" y2="{pad_t + plot_h}" stroke="#999"/>',
             f'<line x1="{pad_l}" x2="{pad_l}" y1="{pad_t}" y2="{pad_t + plot_h}" stroke="#999"/>']
    for v in (lo, (lo + hi) / 2, hi):
        parts.append(f'<text x="{pad_l - 4}" y="{y(v) + 3:.1f}" text-anchor="end">{_fmt(v)}</text>')
    pts = [f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values) if v is not None]
    if len(pts) > 1:
        parts.append(f'<polyline fill="none" stroke="#90a4ae" stroke-width="1.5" points="{" ".join(pts)}"/>')
    for i, (run, v) in enumerate(zip(runs, values)):
        when = ms.local_time(run.when)
        # the pass/fail marker on the time axis, for every run
        mx, my = x(i), pad_t + plot_h + 10
        if run.verdict == "FAIL":
            marker = (f'<path class="marker fail" d="M{mx - 4:.1f},{my - 4:.1f} L{mx + 4:.1f},{my + 4:.1f} '
                      f'M{mx - 4:.1f},{my + 4:.1f} L{mx + 4:.1f},{my - 4:.1f}" stroke="#c62828" stroke-width="2.5">'
                      f'<title>{_h(when)}: FAIL{_h(_cause_text(run))}</title></path>')
        else:
            colour = "#2e7d32" if run.verdict == "PASS" else "#ef6c00"
            marker = (f'<rect class="marker {run.verdict.lower()}" x="{mx - 3.5:.1f}" y="{my - 3.5:.1f}" width="7" '
                      f'height="7" fill="{colour}"><title>{_h(when)}: {_h(run.verdict)}</title></rect>')
        parts.append(marker)
        if v is None:
            continue
        reg = flagged.get((i, measure.key))
        cls = f"point {run.verdict.lower()}" + (" regression" if reg else "")
        fill = "#c62828" if run.verdict == "FAIL" else ("#2e7d32" if run.verdict == "PASS" else "#ef6c00")
        stroke = ' stroke="#e65100" stroke-width="3"' if reg else ""
        tip = f"{when}: {_fmt(v)} {measure.unit} ({run.verdict})" + (f" — regression: {reg.text()}" if reg else "")
        circle = (f'<circle class="{cls}" cx="{x(i):.1f}" cy="{y(v):.1f}" r="{5 if reg else 4}" fill="{fill}"{stroke}>'
                  f'<title>{_h(tip)}</title></circle>')
        href = _href(run.report, out_dir) if run.report is not None else (_href(run.ci_url, out_dir) if run.ci_url else "")
        parts.append(f'<a href="{_h(href)}">{circle}</a>' if href else circle)
    step = max(1, -(-n // 5))  # at most 5 date labels
    for i in range(0, n, step):
        parts.append(f'<text x="{x(i):.1f}" y="{pad_t + plot_h + 28}" text-anchor="middle">'
                     f'{_h(ms.local_time(runs[i].when, "%m-%d %H:%M"))}</text>')
    parts.append(f'<text x="{pad_l}" y="{height - 4}" class="muted">{_h(measure.unit)} per run · ■ pass · ✗ fail '
                 '(on the time axis) · ringed: regression</text></svg>')
    return (f"<div class='e2e-chart'><h3>{_h(measure.label)}</h3>{''.join(parts)}</div>")


def _cause_text(run: Run) -> str:
    t = run.triage
    if not isinstance(t, dict) or not t:
        return ""
    return f" — {t.get('layer', '?')} / {ms.cause_words(str(t.get('cause', '?')))}"


def history_html(runs: list[Run], *, out_dir: Path, source: str = "") -> str:
    """The page (self-contained HTML) for ``runs`` (oldest first); links are relative to ``out_dir``."""
    flagged = regressions(runs)
    targets = sorted({r.target for r in runs})
    span = f"{ms.local_time(runs[0].when)} – {ms.local_time(runs[-1].when)}" if runs else "no runs"
    fails = [r for r in runs if r.verdict == "FAIL"]
    title = f"helix-e2e history: {len(runs)} runs of {', '.join(targets) or '?'}, {span}"
    head = (f"<p>{len(runs)} runs: {sum(r.verdict == 'PASS' for r in runs)} passed, {len(fails)} failed, "
            f"{sum(r.verdict == 'INCOMPLETE' for r in runs)} incomplete; {len(flagged)} regression(s) flagged."
            + (f" Read from <code>{_h(source)}</code>." if source else "") + "</p>")
    reg_items = "".join(f"<li>{_h(ms.local_time(runs[i].when))} ({_h(runs[i].target)}): {_h(r.text())}</li>"
                        for (i, _), r in sorted(flagged.items()))
    reg_html = (f"<h2>Regressions</h2><ul class='e2e-regressions'>{reg_items}</ul>" if reg_items
                else "<h2>Regressions</h2><p class='e2e-regressions'>None flagged.</p>")
    shown = [m for m in MEASURES if any(r.values.get(m.key) is not None for r in runs)]
    missing = [m.label for m in MEASURES if m not in shown]
    charts = "".join(_chart(m, runs, flagged, out_dir) for m in shown)
    note = (f"<p class='muted'>Not measured in any run: {_h(', '.join(missing))}.</p>" if missing else "")
    header = "".join(f"<th>{_h(c)}</th>" for c in (
        "#", "run", "target", "verdict", "root cause (failed runs)", *[f"{m.label} ({m.unit})" for m in MEASURES],
        "tests", "links"))
    rows = []
    for i, run in enumerate(runs):
        when = _h(ms.local_time(run.when))
        cells = [f"<td>{i + 1}</td>", f"<td>{when}</td>", f"<td>{_h(run.target)}</td>",
                 f"<td class='verdict-{_h(run.verdict)}'>{_h(run.verdict)}</td>"]
        t = run.triage if isinstance(run.triage, dict) else None
        if t and run.verdict == "FAIL":
            cause = (f"<b>{_h(t.get('layer', '?'))} / {_h(ms.cause_words(str(t.get('cause', '?'))))}</b>"
                     + (f"<br><small>{_h(t.get('hint'))}</small>" if t.get("hint") else ""))
        elif run.verdict == "FAIL":
            cause = "<span class='muted'>a test failed (no triage recorded)</span>"
        else:
            cause = ""
        cells.append(f"<td class='cause'>{cause}</td>")
        for m in MEASURES:
            v = run.values.get(m.key)
            reg = flagged.get((i, m.key))
            if reg:
                cells.append(f"<td class='regression' title='{_h(reg.text())}'>{_fmt(v)} ▲</td>")
            else:
                cells.append(f"<td>{_fmt(v)}</td>")
        cells.append(f"<td>{run.passed}/{run.failed}/{run.skipped}</td>")
        links = []
        if run.report is not None:
            links.append(f"<a class='report-link' href='{_h(_href(run.report, out_dir))}'>report</a>")
        if run.ci_url and _href(run.ci_url, out_dir):
            links.append(f"<a href='{_h(run.ci_url)}'>CI run</a>")
        cells.append(f"<td>{' · '.join(links) or '<span class=muted>no report kept</span>'}</td>")
        rows.append(f"<tr class='{run.verdict.lower()}' data-run='{i}'>{''.join(cells)}</tr>")
    table = (f"<h2>Runs</h2><p class='muted'>tests: passed/failed/skipped. ▲: a regression (hover for the numbers)."
             f"</p><table class='e2e-nights'><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_h(title)}</title>{STYLE}</head><body>"
            f"<h1 id='title'>{_h(title)}</h1>{head}<h2>Trends</h2>{charts}{note}"
            f"<p class='e2e-rule'><b>Regression rule.</b> {_h(REGRESSION_RULE)}</p>{reg_html}{table}</body></html>")


def write_history(root: str | os.PathLike[str], out: str | os.PathLike[str]) -> tuple[Path, list[Run], int]:
    """Build the history page of every run under ``root`` into ``out``; returns (path, runs, regressions)."""
    runs = collect_runs(root)
    if not runs:
        raise HarnessError(f"no metrics.json or history.jsonl under {root}", phase="history",
                           hint="run the streaming suite first (make e2e), or point at the unpacked reports")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    page = history_html(runs, out_dir=out.parent, source=str(root))
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out, runs, len(regressions(runs))


def summary_line(out: Path, runs: Iterable[Run], flagged: int) -> str:
    runs = list(runs)
    failed = sum(r.verdict == "FAIL" for r in runs)
    return f"wrote {out}: {len(runs)} run{'' if len(runs) == 1 else 's'} ({failed} failed), {flagged} regression(s) flagged"
