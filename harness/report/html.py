"""The helix-e2e blocks of the pytest-html report, rendered from a run's ``metrics.json`` dict:

- the **banner** (verdict, target, date, the headline figures; on failure the triage cause, hint and
  evidence in words), moved to the top of the page, above pytest-html's environment table;
- the **evidence**, on every run: the measurements with their bands and limits, the FPS plot,
  thumbnails and the clip, the phase timeline, log excerpts and provenance, with a note of what was
  left out to keep the page under :data:`PAGE_LIMIT_BYTES`;
- under xdist, one verdict per target.

Every value is escaped and redacted before it reaches HTML (a target name, a log line or a hint may
hold markup).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from ..redact import redact
from . import measures as ms
from .extras import THUMBNAIL_WORDS, b64_size, clip_html, cut_clip, fps_plot_svg, log_excerpts_html, thumbnails_html, timeline_html, \
    timeline_svg


#: The self-contained report stays under this size (the clip is cut, or left out, to fit).
PAGE_LIMIT_BYTES = 5_000_000
#: The clip shows at most this much of the stream.
CLIP_SECONDS = 5.0
#: Kept free for what is not counted exactly (pytest-html's own page, the trend, rounding).
PAGE_MARGIN_BYTES = 150_000

STYLE = """<style>
.e2e-banner{border:1px solid #bbb;border-left:10px solid #757575;border-radius:4px;padding:8px 14px;margin:8px 0 14px;
  background:#fafafa;font-size:14px;line-height:1.45}
.e2e-banner.e2e-pass{border-left-color:#2e7d32;background:#f1f8f1}
.e2e-banner.e2e-fail{border-left-color:#c62828;background:#fdf1f1}
.e2e-banner.e2e-incomplete{border-left-color:#ef6c00;background:#fff6ec}
.e2e-banner h2{font-size:11px;margin:0;color:#555;text-transform:uppercase;letter-spacing:.06em}
.e2e-verdict-word{font-size:26px;font-weight:bold;margin-right:12px;vertical-align:middle}
.e2e-pass .e2e-verdict-word{color:#2e7d32}.e2e-fail .e2e-verdict-word{color:#c62828}
.e2e-incomplete .e2e-verdict-word{color:#ef6c00}
.e2e-banner,.e2e-evidence-section,.e2e-evidence-section td,.e2e-evidence-section h3,.e2e-verdicts{color:#222}
.e2e-evidence-section{font-size:13px}.e2e-evidence-section h3{font-size:14px;margin:14px 0 4px}
.e2e-headline{margin:4px 0}.e2e-headline span.e2e-fig{margin-right:16px;display:inline-block}
.e2e-banner p{margin:4px 0}.e2e-banner ul{margin:2px 0 4px 18px;padding:0}
.e2e-mark-ok{color:#2e7d32;font-weight:bold}.e2e-mark-out{color:#c62828;font-weight:bold}
.e2e-measurements{border-collapse:collapse;margin:4px 0 12px}
.e2e-measurements td,.e2e-measurements th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
.e2e-measurements tr.e2e-out td{background:#fdecea}.e2e-measurements tr.e2e-group th{background:#eee}
.e2e-log-excerpt{background:#f7f7f7;border:1px solid #ddd;padding:6px;max-height:360px;overflow:auto;font-size:12px}
.e2e-log-excerpt mark.sev-info{background:#e3f2fd}.e2e-log-excerpt mark.sev-soft{background:#fff3cd}
.e2e-log-excerpt mark.sev-hard,.e2e-log-excerpt mark.sev-fatal{background:#f8d7da}
.e2e-ln{color:#999}.e2e-gap{color:#999;font-style:italic}
.e2e-provenance th{text-align:left;padding-right:12px}.e2e-unknown{color:#999}
.e2e-omitted{color:#555;font-size:13px}
</style>"""

# pytest-html renders the summary blocks below its environment table; this moves the banner to
# just under the page title, so the verdict is the first thing on the page.
_MOVE_BANNER = ("<script>(function(){var b=document.getElementById('e2e-banner'),"
                "t=document.getElementById('title');if(b&&t&&t.parentNode){t.parentNode.insertBefore(b,t.nextSibling);}"
                "})();</script>")


def _h(value: object) -> str:
    return html.escape(redact(str(value)))


def _mark(m: ms.Measurement) -> str:
    if m.status == ms.OK:
        return "<span class='e2e-mark-ok' title='within its band or limit'>✓</span>"
    if m.status == ms.OUT:
        return "<span class='e2e-mark-out' title='outside its band or limit'>✗</span>"
    return "<span class='e2e-unknown'>–</span>" if m.status == ms.MISSING else ""


# -- the banner ------------------------------------------------------------------------------------------
def banner_html(m: dict[str, Any], reruns: dict | None = None) -> str:
    """The verdict at the top of the page (``m``: a run's metrics.json; merged ones have ``targets``)."""
    word = ms.verdict_word(m)
    counts = ms.outcome_counts(m)
    when = ms.local_time(ms.started_at(m))
    kind = ""
    target = m.get("target") or {}
    if target and "sim" in target:
        kind = " (simulator)" if target.get("sim") else " (real VM)"
    head = (f"<h2>Verdict</h2><div class='e2e-verdict-line'><span class='e2e-verdict-word'>{word}</span>"
            f"<span>target <b>{_h(ms.target_name(m))}</b>{_h(kind)} · {_h(when)} · {counts['passed']} passed, "
            f"{counts['failed'] + counts['error']} failed, {counts['skipped']} skipped</span></div>")
    parts = [head]
    if m.get("targets"):
        for name, tm in sorted(m["targets"].items()):
            parts.append(f"<div class='e2e-headline'><b>{_h(name)}</b>: {_headline(tm)}</div>")
        parts.append(merged_verdicts_html(m))
    else:
        parts.append(f"<div class='e2e-headline'>{_headline(m)}</div>")
        parts.append(_triage_html(m.get("triage")))
        parts.append(_out_of_band_html(m))
    if m.get("broken") and not m.get("triage"):
        b = m["broken"]
        parts.append(f"<p>The target broke in the <b>{_h(b.get('phase'))}</b> phase: {_h(ms.humanize(b.get('error')))}</p>")
    if reruns is not None:
        done = "; ".join(f"{r['test']} (attempt {r['attempt']}: {r['verdict']})" for r in reruns["reruns"]) or "none"
        parts.append(f"<p><b>--rerun-infra {_h(reruns['allowed'])}</b>: {_h(reruns['policy'])}. Reruns: {_h(done)}</p>")
    failing = sorted(k for k, v in (m.get("tests") or {}).items() if v in ("failed", "error"))
    if failing:
        names = ", ".join(k.split("::")[-1] for k in failing[:6]) + (", …" if len(failing) > 6 else "")
        parts.append(f"<p class='e2e-failed-tests'><b>Failed:</b> {_h(names)} "
                     "(<a href='#results-table'>expanded in the results below</a>)</p>")
    parts.append("<p><a href='#e2e-evidence'>Measurements, FPS plot, frames and clip ↓</a></p>")
    return (f"{STYLE}<div id='e2e-banner' class='e2e-banner e2e-{word.lower()}' role='status' "
            f"data-verdict='{word}'>{''.join(parts)}</div>{_MOVE_BANNER}")


def _headline(m: dict[str, Any]) -> str:
    figs = []
    for row in ms.headline(m):
        value = _h(row.value)
        if row.key == "fps" and isinstance(m.get("fps"), (int, float)):
            value = f"<b class='e2e-fps-value' data-value='{_h(m['fps'])}'>{value}</b>"
        else:
            value = f"<b>{value}</b>"
        limit = f" <small>({_h(row.limit)})</small>" if row.limit else ""
        figs.append(f"<span class='e2e-fig' data-key='{_h(row.key)}'>{_h(row.label)} {value}{limit} {_mark(row)}</span>")
    return "".join(figs) or "<span class='e2e-unknown'>no stream was measured</span>"


def _out_of_band_html(m: dict[str, Any]) -> str:
    """Every measurement outside its band or limit, in one line each (the table below has them all)."""
    rows = [r for r in ms.measurements(m) if r.status == ms.OUT]
    if not rows:
        return ""
    items = "".join(f"<li data-key='{_h(r.key)}'>{_h(r.label)}: <b>{_h(r.value)}</b> (limit {_h(r.limit)}) "
                    f"{_mark(r)}</li>" for r in rows[:8])
    return f"<div class='e2e-out-of-band'><b>Outside its band or limit:</b><ul>{items}</ul></div>"


def _triage_html(t: dict[str, Any] | None) -> str:
    if not t:
        return "<p class='e2e-cause'>All checks passed: nothing to triage.</p>"
    transient = " It is transient infrastructure: a rerun may pass." if t.get("transient") else ""
    message = ms.humanize(t.get("message") or t.get("check") or "")
    evidence = [ms.humanize(e) for e in t.get("evidence") or [] if str(e).strip()]
    evidence = [e for e in evidence if e and e != message]
    items = "".join(f"<li>{_h(e)}</li>" for e in evidence[:8])
    explains = t.get("explains") or []
    out = [f"<p class='e2e-cause'><b>Root cause:</b> the <b>{_h(t.get('layer'))}</b> layer — "
           f"<b>{_h(ms.cause_words(str(t.get('cause', ''))))}</b>: {_h(message)}.{_h(transient)}</p>"]
    if t.get("hint"):
        out.append(f"<p class='e2e-hint'><b>What to do:</b> {_h(t['hint'])}</p>")
    if items:
        out.append(f"<div class='e2e-evidence-lines'><b>Evidence:</b><ul>{items}</ul></div>")
    if explains:
        out.append(f"<p>This also explains the failure of: {_h(', '.join(str(e) for e in explains))}.</p>")
    return "".join(out)


# -- the evidence ----------------------------------------------------------------------------------------
def measurements_html(m: dict[str, Any]) -> str:
    rows, group = [], None
    for row in ms.measurements(m):
        if row.group != group:
            group = row.group
            rows.append(f"<tr class='e2e-group'><th colspan='4'>{_h(group)}</th></tr>")
        cls = f"e2e-{row.status}"
        rows.append(f"<tr class='{cls}' data-key='{_h(row.key)}'><td>{_h(row.label)}</td><td>{_h(row.value)}</td>"
                    f"<td>{_h(row.limit)}</td><td>{_mark(row)}</td></tr>")
    return ("<table class='e2e-measurements'><thead><tr><th>measure</th><th>value</th><th>band or limit</th>"
            f"<th>in it?</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


PROVENANCE_LABELS = (
    ("helix_git_sha", "Helix git SHA"),
    ("qemu_version", "QEMU version (logged by the running QEMU)"),
    ("qemu_build_marker", "QEMU build marker (installed binary)"),
    ("utm_version", "UTM / Helix.app version"),
    ("vm_provider", "VM provider"),
    ("host_model", "host model"),
    ("host", "host OS (macOS version)"),
    ("harness_version", "harness version"),
    ("target", "target"),
    ("target_file", "target file"),
    ("command_line", "command line"),
    ("ci_run_url", "CI run"),
)


def provenance_html(provenance: dict[str, Any]) -> str:
    known = dict(PROVENANCE_LABELS)
    rows = []
    for key in [k for k, _ in PROVENANCE_LABELS] + [k for k in provenance if k not in known]:
        if key not in provenance and key in ("command_line", "ci_run_url"):
            continue
        value = provenance.get(key)
        label = known.get(key, key.replace("_", " "))
        if value in (None, ""):
            cell = "<span class='e2e-unknown'>not known</span>"
        elif key == "ci_run_url" and str(value).startswith(("https://", "http://")):
            cell = f"<a href='{_h(value)}'>{_h(value)}</a>"
        elif key == "command_line":
            cell = f"<code>{_h(value)}</code>"
        else:
            cell = _h(value)
        rows.append(f"<tr data-key='{_h(key)}'><th>{_h(label)}</th><td>{cell}</td></tr>")
    return f"<h2>Provenance</h2><table class='e2e-provenance'>{''.join(rows)}</table>"


def evidence_html(m: dict[str, Any], *, page_budget: int | None = None, anchor: str = "") -> str:
    """Everything measured on this run, pass or fail (``m``: one target's metrics.json).

    ``page_budget``: bytes this block may take; the thumbnails and the clip get what the text leaves
    (the clip is cut, then dropped, to fit; the page says so). ``None``: no limit."""
    suffix = f"-{anchor}" if anchor else ""
    band = tuple(m.get("fps_band") or (0, 0))
    text = [f"<h3>Measurements</h3>{measurements_html(m)}"]
    if m.get("fps_windows") is not None:
        timing = {"fps_windows": m.get("fps_windows") or [], "stalls": m.get("stalls") or [], "fps": m.get("fps")}
        text.append("<h3>FPS over time</h3><div class='e2e-fps'>"
                    f"{fps_plot_svg(timing, band, m.get('freezes') or [])}</div>"
                    "<p class='e2e-legend'>Bars: live frames in each 1 s window after the warm-up (red when outside "
                    f"the band); green: the {_h(f'{band[0]:g}–{band[1]:g}')} fps band; red shading: arrival stalls; "
                    "orange shading: frozen content.</p>")
    if m.get("phase_timeline"):
        text.append(f"<h3>Phase timeline</h3>{timeline_svg(m['phase_timeline'])}"
                    f"{timeline_html(m['phase_timeline'])}")
    if m.get("log_excerpts"):
        text.append("<h3>Log excerpts</h3><p class='e2e-legend'>Lines that matched a log signature are highlighted "
                    "(blue: information, yellow: warning, red: error); hover for the signature's name.</p>"
                    f"<div class='e2e-logs'>{log_excerpts_html(m['log_excerpts'])}</div>")
    if m.get("provenance"):
        text.append(provenance_html(m["provenance"]))
    text_html = "".join(text)
    left = None if page_budget is None else page_budget - len(text_html.encode()) - 2_000
    media, omitted = _media_html(m, left, suffix)
    note = "".join(f"<li>{_h(o)}</li>" for o in omitted)
    omitted_html = (f"<div class='e2e-omitted'><b>Not on this page</b> (to keep it under "
                    f"{PAGE_LIMIT_BYTES / 1e6:g} MB):<ul>{note}</ul></div>") if note else ""
    # The frames come right after the measurements and the plot: they are what QA looks at next.
    split = text_html.find("<h3>Phase timeline</h3>")
    split = split if split >= 0 else len(text_html)
    return (f"<section id='e2e-evidence{suffix}' class='e2e-evidence-section'><h2>Evidence</h2>"
            f"{text_html[:split]}{media}{text_html[split:]}{omitted_html}</section>")


def _media_html(m: dict[str, Any], budget: int | None, suffix: str) -> tuple[str, list[str]]:
    omitted: list[str] = []
    cap = m.get("capture") or {}
    parts: list[str] = []
    thumbs = {k: p for k, p in (m.get("thumbnails") or {}).items() if Path(p).is_file()}
    if thumbs:
        cost = sum(b64_size(Path(p).stat().st_size) + 400 for p in thumbs.values())
        if budget is None or cost <= budget:
            parts.append(thumbnails_html(thumbs, THUMBNAIL_WORDS))
            budget = None if budget is None else budget - cost
        else:
            omitted.append(f"the thumbnails ({len(thumbs)} JPEG images)")
    elif cap:
        omitted.append("the thumbnails: the stream was not decoded (or no frame arrived)")
    h264 = cap.get("h264")
    if h264 and Path(h264).is_file() and Path(h264).stat().st_size:
        fps = m.get("fps") or m.get("fps_pts") or 30
        max_bytes = None if budget is None else (budget - 600) * 3 // 4
        clip = None
        if max_bytes is None or max_bytes > 64 * 1024:
            clip = cut_clip(h264, Path(h264).with_name(f"stream-clip{suffix}.mp4"), fps=fps, max_seconds=CLIP_SECONDS,
                            max_bytes=max_bytes)
        if clip is not None and max_bytes is not None and clip.size > max_bytes:
            clip.path.unlink(missing_ok=True)
            clip = None
        if clip is None:
            omitted.append("the stream clip: it did not fit (or could not be made); the stream is in the run's "
                           f"artifacts as {Path(h264).name}")
        else:
            name = f"stream clip: the first {clip.seconds:g} s ({clip.frames} frames, {ms.size(clip.size)})"
            poster = thumbs.get("first_idr") if parts else None  # the thumbnails are on the page already
            parts.append(clip_html(clip.path, name, poster=poster).replace("id='e2e-clip'", f"id='e2e-clip{suffix}'"))
            if clip.cut_for_size:
                omitted.append(f"the clip after {clip.seconds:g} s (of {CLIP_SECONDS:g} s), cut to keep the page "
                               "small; the whole stream is in the run's artifacts")
    for key, what in (("recording", "the full recording"), ("h264", "the stream as Annex-B H.264")):
        path = cap.get(key)
        if path and Path(path).is_file():
            omitted.append(f"{what} ({Path(path).name}, {ms.size(Path(path).stat().st_size)}): in the run's artifacts "
                           f"({Path(path).parent})")
    return ("<h3>Frames and clip</h3>" + "".join(parts) if parts else ""), omitted


def page_blocks(m: dict[str, Any], *, reruns: dict | None = None, other_bytes: int = 0) -> list[str]:
    """The blocks helix-e2e adds to a report: the banner (it moves itself to the top) and the evidence
    of each target. ``other_bytes``: what the rest of the page takes (pytest-html's own)."""
    blocks = [banner_html(m, reruns)]
    budget = PAGE_LIMIT_BYTES - other_bytes - PAGE_MARGIN_BYTES - len(blocks[0].encode())
    targets = m.get("targets")
    if targets:
        share = max(0, budget) // max(1, len(targets))
        for i, (name, tm) in enumerate(sorted(targets.items())):
            blocks.append(f"<h2>Target {_h(name)}</h2>" + evidence_html(tm, page_budget=share, anchor=f"t{i}"))
    else:
        blocks.append(evidence_html(m, page_budget=max(0, budget)))
    return blocks


def report_data_bytes(report: Any) -> int:
    """What pytest-html's own page takes: its template, CSS and script, and its test data (escaped
    into an attribute). Best effort: 0 when the report object is not pytest-html's."""
    try:
        data = json.dumps(report.data)
    except (AttributeError, TypeError, ValueError):
        return 0
    return len(html.escape(data).encode()) + 60_000


def verdict_html(verdict: Any, reruns: dict | None = None) -> str:
    """The verdict block of a triage Verdict (``None``: all passed); the banner's text for callers
    that hold a Verdict rather than metrics."""
    t = verdict.as_dict() if verdict is not None else None
    block = _triage_html(t)
    if reruns is not None:
        done = "; ".join(f"{r['test']} (attempt {r['attempt']}: {r['verdict']})" for r in reruns["reruns"]) or "none"
        block += f"<p><b>--rerun-infra {_h(reruns['allowed'])}</b>: {_h(reruns['policy'])}. Reruns: {_h(done)}</p>"
    return f"<h2>Verdict</h2>{block}"


def merged_verdicts_html(source: Path | dict) -> str:
    """Under xdist: one verdict line per target, from the merged metrics.json (a path or its dict)."""
    if isinstance(source, dict):
        targets = source.get("targets") or {}
    else:
        try:
            targets = json.loads(Path(source).read_text()).get("targets") or {}
        except (OSError, ValueError):
            return ""
    rows = []
    for name, m in sorted(targets.items()):
        t = m.get("triage")
        text = (f"{t.get('layer')} / {t.get('cause')} — {t.get('hint', '')}" if isinstance(t, dict) and t
                else "all checks passed")
        rows.append(f"<tr><th style='text-align:left'>{_h(name)}</th><td>{_h(text)}</td></tr>")
    return f"<h2>Verdict per target</h2><table class='e2e-verdicts'>{''.join(rows)}</table>" if rows else ""
