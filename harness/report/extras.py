"""Artifacts for QA: an FPS-over-time plot, thumbnails, a short MP4 clip, the phase timeline,
and log excerpts — rendered once from the run's data and attached to pytest-html.

Everything here is best effort: a failed plot or clip never changes a verdict.
"""

from __future__ import annotations

import base64
import html
import logging
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..redact import redact

log = logging.getLogger(__name__)

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


def make_clip(h264_path: str | Path, mp4_path: str | Path, *, fps: float, max_seconds: float = 5.0) -> Path | None:
    """Remux (no re-encode) the first seconds of an Annex-B stream into an MP4 for the report."""
    import av

    fps_frac = Fraction(fps).limit_denominator(1000) if fps and fps > 0 else Fraction(30)
    limit = int(max_seconds * float(fps_frac))
    try:
        with av.open(str(h264_path), format="h264") as inp:
            ins = inp.streams.video[0]
            with av.open(str(mp4_path), "w") as out:
                outs = out.add_stream_from_template(ins)
                n = 0
                for pkt in inp.demux(ins):
                    if pkt.size == 0:
                        continue
                    pkt.stream = outs
                    pkt.time_base = 1 / fps_frac
                    pkt.pts = pkt.dts = n
                    pkt.duration = 1
                    out.mux(pkt)
                    n += 1
                    if n >= limit:
                        break
        return Path(mp4_path) if n else None
    except Exception as exc:  # noqa: BLE001 - artifacts are best effort
        log.warning("could not make an MP4 clip from %s: %s", h264_path, exc)
        return None


def thumbnails_html(thumbnails: dict[str, str | Path]) -> str:
    """All thumbnails side by side, each labelled (pytest-html's own media viewer shows one at a time)."""
    figures = "".join(
        f"<figure style='display:inline-block;margin:0 8px 8px 0'>"
        f"<img src='data:image/jpeg;base64,{_b64(path)}' alt='thumbnail: {html.escape(label)}' "
        f"title='{html.escape(label)}'><figcaption>{html.escape(label)}</figcaption></figure>"
        for label, path in thumbnails.items()
    )
    return f"<div class='e2e-thumbnails'>{figures}</div>"


def clip_html(mp4: str | Path, name: str = "stream clip (first 5 s)") -> str:
    """The MP4 clip as a visible, playable video (pytest-html's media viewer would hide it behind images)."""
    return (
        f"<div class='e2e-clip'><video controls muted preload='metadata' style='max-width:640px'>"
        f"<source src='data:video/mp4;base64,{_b64(mp4)}' type='video/mp4'></video>"
        f"<div>{html.escape(name)}</div></div>"
    )


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
                    out.append(ex.html(thumbnails_html(run.capture.thumbnails)))
            elif kind == "clip" and run is not None and run.capture is not None:
                fps = run.capture.timing.get("fps") or target.stream.fps
                clip = make_clip(run.capture.h264, dest / "stream-clip.mp4", fps=fps)
                if clip is not None:
                    out.append(ex.html(clip_html(clip)))
            elif kind == "logs" and run is not None:
                excerpt = _log_excerpt(run)
                (dest / "log-excerpt.txt").write_text(excerpt)
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
