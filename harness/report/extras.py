"""Artifacts for QA: an FPS-over-time plot, thumbnails, a short MP4 clip, the phase timeline,
and log excerpts — rendered once from the run's data and attached to pytest-html.

Everything here is best effort: a failed plot or clip never changes a verdict.
"""

from __future__ import annotations

import base64
import html
import logging
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..redact import redact

log = logging.getLogger(__name__)

#: What each thumbnail shows, in words.
THUMBNAIL_WORDS = {"first_idr": "first IDR frame", "worst": "worst window", "last": "last frame"}

#: Artifact kinds a test can ask for with @pytest.mark.e2e_artifacts(...).
KINDS = ("fps_plot", "thumbnails", "clip", "timeline", "logs", "probe", "crashes")


def fps_plot_svg(timing: dict[str, Any], band: tuple[float, float], freezes: list[dict] | None = None,
                 width: int = 640, height: int = 220) -> str:
    """Live frames per 1-s window as bars, with the FPS band shaded and stalls/freezes marked."""
    windows = list(timing.get("fps_windows") or [])
    stalls = list(timing.get("stalls") or [])
    freezes = list(freezes or [])
    pad_l, pad_b, pad_t, pad_r = 40, 28, 12, 10
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    top = max([band[1] * 1.15, *windows, 1])
    n = max(len(windows), 1)

    def x(t: float) -> float:
        return pad_l + plot_w * t / n

    def y(v: float) -> float:
        return pad_t + plot_h * (1 - v / top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11" role="img" aria-label="FPS over time">',
        f'<rect x="{pad_l}" y="{y(band[1]):.1f}" width="{plot_w}" height="{y(band[0]) - y(band[1]):.1f}" '
        f'fill="#2e7d32" fill-opacity="0.12"><title>FPS band {band[0]:g}–{band[1]:g}</title></rect>',
    ]
    for label, items, colour in (("stall", stalls, "#c62828"), ("freeze", freezes, "#ef6c00")):
        for item in items:
            s, d = float(item.get("start_s", 0)), float(item.get("duration_s", 0))
            parts.append(
                f'<rect class="{label}" x="{x(s):.1f}" y="{pad_t}" width="{max(2.0, x(s + d) - x(s)):.1f}" '
                f'height="{plot_h}" fill="{colour}" fill-opacity="0.3"><title>{label} at {s:.2f}s for {d:.2f}s</title></rect>'
            )
    bar_w = plot_w / n
    for i, v in enumerate(windows):
        colour = "#1565c0" if band[0] <= v <= band[1] else "#c62828"
        parts.append(
            f'<rect class="window" x="{x(i) + 1:.1f}" y="{y(v):.1f}" width="{max(1.0, bar_w - 2):.1f}" '
            f'height="{y(0) - y(v):.1f}" fill="{colour}"><title>{i}–{i + 1}s: {v} frames</title></rect>'
        )
    for v in (0, band[0], band[1]):
        parts.append(f'<text x="{pad_l - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        parts.append(f'<line x1="{pad_l}" x2="{pad_l + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#999" '
                     'stroke-dasharray="3,3" stroke-width="0.5"/>')
    fps = timing.get("fps")
    caption = f"fps {fps:.1f}" if isinstance(fps, (int, float)) else "fps n/a"
    parts.append(f'<text x="{pad_l}" y="{height - 8}">seconds from first live frame (1-s windows) · {caption} · '
                 f'{len(stalls)} stall(s) · {len(freezes)} freeze(s)</text>')
    parts.append("</svg>")
    return "".join(parts)


def timeline_html(records: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(r['name'])}</td><td style='text-align:right'>{r['duration_s']:.2f}s</td>"
        f"<td>{html.escape(r['outcome'])}</td><td>{html.escape(redact(r.get('error') or r['what']))}</td></tr>"
        for r in records
    )
    return (
        "<table class='e2e-timeline'><thead><tr><th>phase</th><th>duration</th><th>outcome</th><th>detail</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


_OUTCOME_COLOURS = {"ok": "#1565c0", "failed": "#c62828", "skipped": "#9e9e9e", "running": "#ef6c00"}


def timeline_svg(records: list[dict[str, Any]], width: int = 720) -> str:
    """The phases as bars on one time axis (a Gantt chart): where the run spent its time, and which
    phase failed. Each bar's tooltip gives the phase, its duration and what it waited for."""
    rows = [r for r in records if isinstance(r.get("duration_s"), (int, float))]
    if not rows:
        return ""
    starts = [r.get("started") if isinstance(r.get("started"), (int, float)) else None for r in rows]
    t0 = min((s for s in starts if s is not None), default=0.0)
    offsets, cursor = [], 0.0
    for r, s in zip(rows, starts):  # a record without a start time follows the one before it
        off = (s - t0) if s is not None else cursor
        offsets.append(off)
        cursor = off + r["duration_s"]
    total = max((o + r["duration_s"] for o, r in zip(offsets, rows)), default=1.0) or 1.0
    label_w, pad_r, bar_h, gap, axis_h = 110, 70, 14, 4, 24
    plot_w = width - label_w - pad_r
    height = len(rows) * (bar_h + gap) + axis_h

    def x(t: float) -> float:
        return label_w + plot_w * t / total

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="11" role="img" aria-label="phase timeline" class="e2e-timeline-chart">']
    for i, (r, off) in enumerate(zip(rows, offsets)):
        y = i * (bar_h + gap)
        name, dur = html.escape(str(r.get("name", "?"))), float(r["duration_s"])
        outcome = str(r.get("outcome", ""))
        colour = _OUTCOME_COLOURS.get(outcome, "#616161")
        detail = html.escape(redact(str(r.get("error") or r.get("what") or "")))
        parts.append(f'<text x="{label_w - 6}" y="{y + bar_h - 3}" text-anchor="end">{name}</text>')
        parts.append(f'<rect class="phase phase-{html.escape(outcome)}" x="{x(off):.1f}" y="{y}" '
                     f'width="{max(1.5, x(off + dur) - x(off)):.1f}" height="{bar_h}" fill="{colour}">'
                     f'<title>{name}: {dur:.2f} s, {html.escape(outcome)} ({detail})</title></rect>')
        parts.append(f'<text x="{x(off + dur) + 4:.1f}" y="{y + bar_h - 3}">{dur:.2f} s'
                     f'{" ✗" if outcome == "failed" else ""}</text>')
    base = len(rows) * (bar_h + gap)
    parts.append(f'<line x1="{label_w}" x2="{label_w + plot_w}" y1="{base}" y2="{base}" stroke="#999"/>')
    step = _nice_step(total)
    t = 0.0
    while t <= total + 1e-9:
        parts.append(f'<text x="{x(t):.1f}" y="{base + 14}" text-anchor="middle">{t:g} s</text>')
        t += step
    parts.append("</svg>")
    return "".join(parts)


def _nice_step(total: float) -> float:
    for step in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600):
        if total / step <= 10:
            return float(step)
    return max(1.0, round(total / 10))


# -- log excerpts ------------------------------------------------------------------------------------
#: Lines kept per log: matched lines first, then one line of context around the serious ones.
EXCERPT_LINES = 40
#: Lines shown from the end of a log in which nothing matched.
TAIL_LINES = 5


def log_excerpt(text: str | bytes, *, max_lines: int = EXCERPT_LINES) -> dict[str, Any]:
    """The lines of a log worth reading, each tagged with the log signature it matched (the
    classifier's table, :data:`harness.analysis.logscan.PATTERNS`): every warning and error with a
    line of context, the first and last resource-id lines, the version lines. Redacted."""
    from ..analysis.logscan import PATTERNS

    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = text.splitlines()
    hits: dict[int, tuple[str, str]] = {}
    serious: list[int] = []
    info: dict[str, list[int]] = {}
    for i, line in enumerate(lines):
        for pat in PATTERNS:
            if pat.regex.search(line):
                hits[i] = (pat.name, pat.severity)
                if pat.severity == "info":
                    info.setdefault(pat.name, []).append(i)
                else:
                    serious.append(i)
                break
    chosen: list[int] = []

    def take(indexes) -> None:
        for j in indexes:
            if 0 <= j < len(lines) and j not in chosen and len(chosen) < max_lines:
                chosen.append(j)

    for i in serious[:max_lines // 2]:
        take([i])
    for i in serious[:max_lines // 4]:
        take([i - 1, i + 1])
    for found in info.values():
        take(found[:3] + found[-2:])
    if not chosen:  # nothing matched: the end of the log says where it stopped
        take(range(max(0, len(lines) - TAIL_LINES), len(lines)))
    out: list[dict[str, Any]] = []
    previous = -1
    for j in sorted(chosen):
        if j > previous + 1:
            out.append({"gap": j - previous - 1})
        name, severity = hits.get(j, ("", ""))
        out.append({"n": j + 1, "text": redact(lines[j][:400]), "match": name, "severity": severity})
        previous = j
    if lines and previous < len(lines) - 1 and chosen:
        out.append({"gap": len(lines) - 1 - previous})
    return {"lines": out, "total_lines": len(lines), "matched": len(hits)}


def log_excerpts_html(excerpts: list[dict[str, Any]]) -> str:
    """Each log's excerpt with line numbers; matched lines highlighted by severity, named in a tooltip."""
    blocks = []
    for ex in excerpts or []:
        rows = []
        for item in ex.get("lines") or []:
            if "gap" in item:
                rows.append(f"<span class='e2e-gap'>   … {int(item['gap'])} line(s) not shown</span>")
                continue
            text = html.escape(redact(str(item.get("text", ""))))
            number = f"<span class='e2e-ln'>{int(item.get('n', 0)):>6}</span> "
            if item.get("match"):
                sev = html.escape(str(item.get("severity") or "info"))
                rows.append(f"{number}<mark class='e2e-match sev-{sev}' title='{html.escape(str(item['match']))} "
                             f"({sev})'>{text}</mark>")
            else:
                rows.append(f"{number}{text}")
        title = html.escape(str(ex.get("title") or ex.get("path") or "log"))
        counts = f"{int(ex.get('matched') or 0)} matched of {int(ex.get('total_lines') or 0)} lines"
        if not ex.get("matched"):
            rows.insert(0, "<span class='e2e-gap'>(no line matched a log signature; its last lines:)</span>")
        body = "\n".join(rows)
        blocks.append(f"<div class='e2e-log'><h4>{title} <small>({counts})</small></h4>"
                      f"<pre class='e2e-log-excerpt'>{body}</pre></div>")
    return "".join(blocks)


# -- the clip --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Clip:
    path: Path
    frames: int
    seconds: float
    wanted_seconds: float
    cut_for_size: bool  # stopped early to stay within ``max_bytes``

    @property
    def size(self) -> int:
        return self.path.stat().st_size


#: MP4 container overhead allowed for when cutting a clip to a byte budget (moov, per-sample tables).
MP4_OVERHEAD = 16 * 1024


def cut_clip(h264_path: str | Path, mp4_path: str | Path, *, fps: float, max_seconds: float = 5.0,
             max_bytes: int | None = None) -> Clip | None:
    """Remux (no re-encode) the first ``max_seconds`` of an Annex-B stream into an MP4, stopping
    early when the next access unit would take the file past ``max_bytes``. ``None``: no clip."""
    import av

    fps_frac = Fraction(fps).limit_denominator(1000) if fps and fps > 0 else Fraction(30)
    limit = int(max_seconds * float(fps_frac))
    payload_budget = None if max_bytes is None else max_bytes - MP4_OVERHEAD
    cut = False
    n = 0
    try:
        with av.open(str(h264_path), format="h264") as inp:
            ins = inp.streams.video[0]
            with av.open(str(mp4_path), "w") as out:
                outs = out.add_stream_from_template(ins)
                used = 0
                for pkt in inp.demux(ins):
                    if pkt.size == 0:
                        continue
                    if payload_budget is not None and used + pkt.size + 16 > payload_budget:
                        cut = True
                        break
                    used += pkt.size + 16
                    pkt.stream = outs
                    pkt.time_base = 1 / fps_frac
                    pkt.pts = pkt.dts = n
                    pkt.duration = 1
                    out.mux(pkt)
                    n += 1
                    if n >= limit:
                        break
    except Exception as exc:  # noqa: BLE001 - artifacts are best effort
        log.warning("could not make an MP4 clip from %s: %s", h264_path, exc)
        return None
    if not n:
        Path(mp4_path).unlink(missing_ok=True)
        return None
    return Clip(Path(mp4_path), n, round(n / float(fps_frac), 2), max_seconds, cut)


def make_clip(h264_path: str | Path, mp4_path: str | Path, *, fps: float, max_seconds: float = 5.0) -> Path | None:
    """Remux (no re-encode) the first seconds of an Annex-B stream into an MP4 for the report."""
    clip = cut_clip(h264_path, mp4_path, fps=fps, max_seconds=max_seconds)
    return clip.path if clip is not None else None


def thumbnails_html(thumbnails: dict[str, str | Path], captions: dict[str, str] | None = None) -> str:
    """All thumbnails side by side, each labelled (pytest-html's own media viewer shows one at a time);
    ``captions``: words under each, by label (default: the label)."""
    captions = captions or {}
    figures = "".join(
        f"<figure style='display:inline-block;margin:0 8px 8px 0'>"
        f"<img src='data:image/jpeg;base64,{_b64(path)}' alt='thumbnail: {html.escape(captions.get(label, label))}' "
        f"title='{html.escape(label)}'><figcaption>{html.escape(captions.get(label, label))}</figcaption></figure>"
        for label, path in thumbnails.items()
    )
    return f"<div class='e2e-thumbnails'>{figures}</div>"


def clip_html(mp4: str | Path, name: str = "stream clip (first 5 s)", *, poster: str | Path | None = None) -> str:
    """The MP4 clip as a visible, playable video (pytest-html's media viewer would hide it behind images);
    ``poster``: a JPEG shown before it plays."""
    poster_attr = f" poster='data:image/jpeg;base64,{_b64(poster)}'" if poster else ""
    return (
        f"<div class='e2e-clip' id='e2e-clip'><video controls muted preload='metadata'{poster_attr} "
        "style='max-width:640px'>"
        f"<source src='data:video/mp4;base64,{_b64(mp4)}' type='video/mp4'></video>"
        f"<div>{html.escape(name)}</div></div>"
    )


def b64_size(n: int) -> int:
    """Bytes a payload of ``n`` bytes takes as base64."""
    return 4 * ((n + 2) // 3)


def _b64(path: str | Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def build_extras(kinds: tuple[str, ...], record, target, timeline, dest: Path) -> list:
    """pytest-html extras for a test, from the run record, with their files copied under ``dest``."""
    from pytest_html import extras as ex

    out: list = []
    dest.mkdir(parents=True, exist_ok=True)
    run = record.stream
    band = (target.stream.fps_min, target.stream.fps_max)
    for kind in kinds:
        try:
            if kind == "timeline":
                out.append(ex.html(timeline_html([r.as_dict() for r in timeline.records])))
            elif kind == "fps_plot" and run is not None and run.capture is not None:
                svg = fps_plot_svg(run.capture.timing, band, run.capture.content.get("freezes"))
                (dest / "fps.svg").write_text(svg)
                out.append(ex.html(f"<div class='e2e-fps'>{svg}</div>"))
            elif kind == "thumbnails" and run is not None and run.capture is not None:
                for path in run.capture.thumbnails.values():
                    shutil.copy(path, dest / Path(path).name)
                if run.capture.thumbnails:
                    out.append(ex.html(thumbnails_html(run.capture.thumbnails, THUMBNAIL_WORDS)))
            elif kind == "clip" and run is not None and run.capture is not None:
                # One copy of the clip per page (it is the largest thing on it): the run's evidence at
                # the top holds it; this test's folder keeps the file.
                fps = run.capture.timing.get("fps") or target.stream.fps
                make_clip(run.capture.h264, dest / "stream-clip.mp4", fps=fps)
                out.append(ex.html("<p class='e2e-clip-ref'>The stream clip is in the run's evidence at the top "
                                   "of this page (<a href='#e2e-clip'>go to the clip</a>).</p>"))
            elif kind == "logs" and run is not None:
                excerpt = _log_excerpt(run)
                (dest / "log-excerpt.txt").write_text(excerpt)
                excerpts = [{"path": where, "title": title, **log_excerpt(text)}
                            for where, title, text in (("desktop", "desktop container log", run.desktop_logs),
                                                       ("host", "QEMU helix-debug.log", run.host_log)) if text]
                out.append(ex.html(f"<div class='e2e-logs'>{log_excerpts_html(excerpts)}</div>"))
                out.append(ex.text(excerpt, name="log excerpts (resource ids, FRAME_READY/vsockenc)"))
            elif kind == "probe" and record.probe is not None:
                out.append(ex.json(record.probe.result.as_dict(), name="resource_id=0 probe exchange"))
                if record.probe.log:
                    out.append(ex.text(redact(record.probe.log[-4000:]), name="QEMU log during the probe"))
            elif kind == "crashes":
                found = record.crash.crash_reports if record.crash else record.boot.crash_reports if record.boot else []
                reports = [c.as_dict() for c in found]
                if reports:
                    out.append(ex.json(reports, name="new crash reports"))
        except Exception as exc:  # noqa: BLE001 - never change a verdict
            log.warning("artifact %s failed: %s", kind, exc)
    return out


def _log_excerpt(run) -> str:
    lines: list[str] = []
    for title, scan, raw in (("desktop container", run.desktop_scan, run.desktop_logs),
                             ("QEMU helix-debug.log", run.host_scan, run.host_log)):
        lines.append(f"== {title}")
        if scan is not None:
            ids = scan.resource_ids
            lines.append(f"resource ids: source={ids.source or '-'} nonzero={ids.nonzero} zero={ids.zero}")
            lines += [f"  {s}" for s in ids.samples]
            lines += [f"  zero because: {z}" for z in ids.zero_reasons]
            lines += [f"  {e['severity']}: {e['line']}" for e in scan.errors[:10] + scan.hangs[:10]]
        interesting = [ln for ln in (raw or "").splitlines()
                       if any(k in ln for k in ("vsockenc", "resource_id", "DMA-BUF", "FRAME_READY", "[HELIX]", "scanout"))]
        lines += interesting[:40]
    return redact("\n".join(lines))
