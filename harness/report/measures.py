"""What a person reads in a run report: the measurements with their band or limit, the verdict in
words, and evidence lines turned from Python reprs into words and units.

Everything here is a pure function of a ``metrics.json`` dict (one data model for the HTML page,
the history page and the tests): no HTML, no I/O. The limits mirror the checks in
:mod:`harness.verdict.checks`; ``tests/unit/test_report_measures.py`` holds the two side by side.
"""

from __future__ import annotations

import ast
import re
import time
from dataclasses import dataclass
from typing import Any, Iterable

#: The slowest 1-s window fails below this share of the band's floor (``checks.fps_in_band``).
MIN_WINDOW_SHARE = 0.8
#: vkcube must change at least this share of the frames (``checks.vkcube``).
MIN_MOTION = 0.5

OK, OUT, INFO, MISSING = "ok", "out", "info", "missing"
#: The mark shown next to a measurement, by status.
MARKS = {OK: "✓", OUT: "✗", INFO: "", MISSING: "–"}


@dataclass(frozen=True)
class Measurement:
    """One row of the measurements table. ``key`` is stable (tests and CSS use it); ``status`` is
    ``ok`` (within its band or limit), ``out`` (outside it), ``info`` (no limit) or ``missing``."""

    key: str
    label: str
    value: str
    limit: str = ""
    status: str = INFO
    group: str = "stream"

    @property
    def mark(self) -> str:
        return MARKS[self.status]


# -- formatting -------------------------------------------------------------------------
def num(value: Any, digits: int = 1) -> str:
    """A number for a person: ``None`` is "n/a", floats get ``digits`` decimals, ints stay whole."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def seconds(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "n/a"
    if value >= 120:
        return f"{value / 60:.1f} min"
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def size(n: Any) -> str:
    if not isinstance(n, (int, float)) or isinstance(n, bool):
        return "n/a"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def spans(items: Iterable[dict] | None, limit: int = 5) -> str:
    """Stalls or freezes: ``at 1.99 s for 0.95 s; …``."""
    items = [i for i in (items or []) if isinstance(i, dict)]
    if not items:
        return "none"
    shown = "; ".join(_span(i) for i in items[:limit])
    return shown + (f"; and {len(items) - limit} more" if len(items) > limit else "")


def _span(item: dict) -> str:
    start, duration = item.get("start_s"), item.get("duration_s")
    if isinstance(start, (int, float)) and isinstance(duration, (int, float)):
        return f"at {start:.2f} s for {duration:.2f} s"
    return ", ".join(f"{_words(k)} {_unit(k, v)}" for k, v in item.items())


# -- the verdict ------------------------------------------------------------------------
def outcome_counts(m: dict[str, Any]) -> dict[str, int]:
    tests = m.get("tests") or {}
    out = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    for value in tests.values():
        out[value] = out.get(value, 0) + 1
    return out


def verdict_word(m: dict[str, Any]) -> str:
    """``PASS`` (tests ran, none failed or was skipped, nothing to triage), ``FAIL`` (a test failed or
    triage found a root cause) or ``INCOMPLETE`` (nothing failed, but not everything ran)."""
    counts = outcome_counts(m)
    if m.get("triage") or counts["failed"] or counts["error"] or _any_target_failed(m):
        return "FAIL"
    if counts["passed"] and not counts["skipped"]:
        return "PASS"
    return "INCOMPLETE"


def _any_target_failed(m: dict[str, Any]) -> bool:
    return any(isinstance(t, dict) and t.get("triage") for t in (m.get("targets") or {}).values())


def target_name(m: dict[str, Any]) -> str:
    if m.get("targets"):
        return ", ".join(sorted(m["targets"]))
    return str((m.get("target") or {}).get("name") or "?")


def started_at(m: dict[str, Any]) -> float | None:
    """When the run started (the first phase), else when its metrics were written; epoch seconds.
    Merged (xdist) metrics: when the first target started."""
    if isinstance(m.get("targets"), dict) and m["targets"]:
        starts = [started_at(t) for t in m["targets"].values() if isinstance(t, dict)]
        return min((s for s in starts if s is not None), default=None)
    timeline = m.get("phase_timeline") or []
    if timeline and isinstance(timeline[0].get("started"), (int, float)):
        return float(timeline[0]["started"])
    return parse_time(m.get("generated_at"))


def parse_time(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    import calendar

    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S"):
        try:
            return float(calendar.timegm(time.strptime(text, fmt)))
        except ValueError:
            continue
    return None


def local_time(epoch: float | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return time.strftime(fmt, time.localtime(epoch)) if epoch is not None else "?"


def report_title(m: dict[str, Any]) -> str:
    """``helix-e2e PASS: sim, 2026-12-02 16:28`` (plain text: the template escapes it)."""
    return f"helix-e2e {verdict_word(m)}: {target_name(m)}, {local_time(started_at(m))}"


def cause_words(cause: str) -> str:
    return cause.replace("_", " ")


# -- evidence in words --------------------------------------------------------------------
_UNITS = (("_ms", "ms"), ("_s", "s"), ("_mb", "MB"), ("_bytes", "bytes"), ("_percent", "%"))
_KEY_VALUE = re.compile(r"\b([a-z][a-z0-9_]*)=(\[[^\]]*\]|\{[^}]*\}|[^\s,;)]+)")
#: Names that read better as they are (``resource_id=0`` is what QA searches the logs for).
_KEEP_KEYS = frozenset({"resource_id", "scanout", "resource", "has_subscriber"})
_SECONDS = re.compile(r"^(-?\d+(?:\.\d+)?)s$")


def _words(key: str) -> str:
    for suffix, _ in _UNITS:
        if key.endswith(suffix) and len(key) > len(suffix):
            key = key[: -len(suffix)]
            break
    return {"fps": "FPS", "fps_windows": "frames per 1 s window", "elapsed": "elapsed"}.get(key, key.replace("_", " "))


def _unit(key: str, value: Any) -> str:
    text = _literal_words(value)
    for suffix, unit in _UNITS:
        if key.endswith(suffix) and isinstance(value, (int, float)) and not isinstance(value, bool):
            return f"{text} {unit}"
    return text


def _literal_words(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".") if abs(value) < 1e6 else f"{value:.3g}"
    if isinstance(value, dict):
        if "start_s" in value and "duration_s" in value:
            return _span(value)
        if set(value) == {"nonzero", "zero"}:
            return f"{value['nonzero']} non-zero, {value['zero']} zero"
        return "; ".join(f"{_words(str(k))}: {_unit(str(k), v)}" for k, v in value.items()) or "none"
    if isinstance(value, (list, tuple, set)):
        items = list(value)
        if items and all(isinstance(i, dict) and "start_s" in i for i in items):
            return spans(items)
        return ", ".join(_literal_words(i) for i in items) or "none"
    return str(value)


def humanize(text: str) -> str:
    """An evidence line or message for a person: Python literals (``{'start_s': 1.99, …}``,
    ``[40, 12]``) become words and units, ``key=value`` becomes ``key: value``."""
    text = _replace_literals(str(text))

    def kv(match: re.Match[str]) -> str:
        key, raw = match.group(1), match.group(2)
        if key in _KEEP_KEYS:
            return match.group(0)
        secs = _SECONDS.match(raw)
        if secs:
            return f"{_words(key)}: {secs.group(1)} s"
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            value = raw
        return f"{_words(key)}: {_unit(key, value)}"

    return _KEY_VALUE.sub(kv, text)


def _replace_literals(text: str) -> str:
    """Replace every balanced ``{…}`` or ``[…]`` that is a Python literal by its words."""
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch in "{[":
            end = _balanced_end(text, i)
            if end is not None:
                chunk = text[i:end + 1]
                try:
                    value = ast.literal_eval(chunk)
                except (ValueError, SyntaxError, MemoryError, RecursionError):
                    value = None
                if isinstance(value, (dict, list)):
                    prefix = "".join(out)
                    if re.search(r"[a-z0-9_]=$", prefix):  # key=[…]: leave it to the key=value pass
                        out.append(chunk)
                    else:
                        out.append(_literal_words(value))
                    i = end + 1
                    continue
        out.append(ch)
        i += 1
    return "".join(out)


def _balanced_end(text: str, start: int) -> int | None:
    pairs = {"{": "}", "[": "]"}
    stack: list[str] = []
    quote = ""
    for j in range(start, min(len(text), start + 4000)):
        c = text[j]
        if quote:
            if c == "\\":
                continue
            if c == quote:
                quote = ""
            continue
        if c in "'\"":
            quote = c
        elif c in pairs:
            stack.append(pairs[c])
        elif c in "}]":
            if not stack or stack.pop() != c:
                return None
            if not stack:
                return j
    return None


# -- the measurements table -----------------------------------------------------------------
def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def measurements(m: dict[str, Any]) -> list[Measurement]:
    """Every measurement of a run (one target's ``metrics.json``) with its band or limit."""
    rows: list[Measurement] = []
    limits = m.get("limits") or {}
    band = m.get("fps_band") or [None, None]
    lo, hi = (band + [None, None])[:2]
    streamed = "capture" in m
    cap = m.get("capture") or {}

    def add(key: str, label: str, value: str, limit: str = "", status: str = INFO, group: str = "stream") -> None:
        rows.append(Measurement(key, label, value, limit, status, group))

    def missing(key: str, label: str, limit: str = "", group: str = "stream") -> None:
        add(key, label, "not measured" if not streamed else "n/a", limit, MISSING, group)

    fps = m.get("fps")
    band_text = f"{lo:g}–{hi:g} fps" if _is_num(lo) and _is_num(hi) else "n/a"
    if _is_num(fps):
        add("fps", "FPS (arrival, after warm-up)", f"{fps:.1f} fps", band_text,
            OK if _is_num(lo) and lo <= fps <= hi else OUT)
    else:
        missing("fps", "FPS (arrival, after warm-up)", band_text)
    window = m.get("fps_min_window")
    floor = lo * MIN_WINDOW_SHARE if _is_num(lo) else None
    floor_text = f"≥ {floor:g} frames (80 % of {lo:g})" if floor is not None else ""
    if _is_num(window):
        add("fps_min_window", "slowest 1 s window", f"{window:g} frames", floor_text,
            OK if floor is None or window >= floor else OUT)
    else:
        add("fps_min_window", "slowest 1 s window",
            "n/a (stream too short after the warm-up)" if streamed else "not measured", floor_text, MISSING)
    ttff, ttff_limit = cap.get("first_frame_s"), limits.get("first_frame_s")
    limit_text = f"≤ {ttff_limit:g} s" if _is_num(ttff_limit) else ""
    if _is_num(ttff):
        add("first_frame_s", "time to first frame (init → first live frame)", seconds(ttff), limit_text,
            OUT if _is_num(ttff_limit) and ttff > ttff_limit else OK)
    else:
        missing("first_frame_s", "time to first frame (init → first live frame)", limit_text)
    gap, gap_limit = cap.get("trailing_gap_s"), limits.get("trailing_gap_s")
    if _is_num(gap):
        add("trailing_gap_s", "last frame before the end of the capture", seconds(gap) + " before",
            f"≤ {gap_limit:g} s" if _is_num(gap_limit) else "",
            OUT if _is_num(gap_limit) and gap > gap_limit else (OK if _is_num(gap_limit) else INFO))
    frames = m.get("frames")
    if _is_num(frames):
        add("frames", "frames (live / replay)",
            f"{frames} live / {num(m.get('replay_frames'))} replay ({num(m.get('keyframes'))} keyframes)",
            "> 0 live", OK if frames > 0 else OUT)
    else:
        missing("frames", "frames (live / replay)", "> 0 live")
    w, h = m.get("width"), m.get("height")
    wanted = limits.get("resolution")
    wanted_text = f"requested {wanted[0]}×{wanted[1]}" if isinstance(wanted, list) and len(wanted) == 2 else ""
    if _is_num(w) and _is_num(h):
        add("resolution", "resolution (from the SPS)", f"{w}×{h}", wanted_text, INFO)
    else:
        missing("resolution", "resolution (from the SPS)", wanted_text)
    jitter = m.get("jitter_ms") or {}
    if jitter:
        add("jitter_ms", "arrival jitter p50 / p95 / p99",
            f"{num(jitter.get('p50'))} / {num(jitter.get('p95'))} / {num(jitter.get('p99'))} ms",
            "no limit (stalls are judged below)", INFO)
    elif streamed:
        missing("jitter_ms", "arrival jitter p50 / p95 / p99")
    for key, label in (("stalls", "stalls"), ("freezes", "freezes (identical content)")):
        items = m.get(key)
        if isinstance(items, list):
            text = f"{len(items)}" + (f": {spans(items)}" if items else "")
            add(key, label, text, "0", OK if not items else OUT)
        else:
            missing(key, label, "0")
    for key, label in (("black_frames", "black frames"), ("decode_errors", "decode errors")):
        value = m.get(key)
        if _is_num(value):
            add(key, label, f"{value:g}", "0", OK if not value else OUT)
        else:
            missing(key, label, "0")
    first = m.get("first_frame_is_idr_with_sps_pps")
    if isinstance(first, bool):
        add("first_frame_idr", "first live frame is an IDR with SPS and PPS", "yes" if first else "no", "yes",
            OK if first else OUT)
    errors = m.get("stream_errors")
    if isinstance(errors, list):
        add("stream_errors", "StreamError messages", f"{len(errors)}" + (f": {humanize(errors[0])}" if errors else ""),
            "0", OK if not errors else OUT)
    if cap.get("end"):
        ended = {"duration": "ran for the whole duration", "closed": "closed by the server", "error": "error"}
        detail = ended.get(cap["end"], cap["end"])
        if cap.get("close_code") is not None:
            detail += f" (close code {cap['close_code']} {cap.get('close_reason') or ''})".rstrip()
        if cap.get("error"):
            detail += f": {humanize(cap['error'])}"
        add("stream_end", "how the stream ended", detail, "the whole duration",
            OK if cap["end"] == "duration" else OUT)
    motion = m.get("motion")
    if _is_num(motion):
        add("motion", "frames that changed (vkcube rendering)", f"{motion:.0%}", f"≥ {MIN_MOTION:.0%}",
            OK if motion >= MIN_MOTION else OUT)
    cli = m.get("cli")
    if isinstance(cli, dict):
        if cli.get("error"):
            add("cli", "helix CLI stream", f"did not run: {humanize(cli['error'])}", "runs", OUT, "cross-check")
        else:
            tol = limits.get("cli_fps_tolerance")
            add("cli", "helix CLI stream (cross-check)",
                f"{num(cli.get('video_frames'))} frames, {num(cli.get('average_fps'))} fps average"
                + (f", {cli['resolution'][0]}×{cli['resolution'][1]}" if cli.get("resolution") else ""),
                f"within ±{tol:.0%} of the capture (at least 2 fps)" if _is_num(tol) else "", INFO, "cross-check")
    rows += resource_id_rows(m)
    probe = m.get("probe")
    verdict = m.get("probe_verdict")
    if verdict:
        detail = str(verdict)
        if isinstance(probe, dict):
            if probe.get("error_code") is not None:
                detail += f" with error code {probe['error_code']}"
            if probe.get("message"):
                detail += f" ({probe['message']})"
            if _is_num(probe.get("elapsed_ms")):
                detail += f" in {probe['elapsed_ms']:.0f} ms"
        add("probe", "resource_id=0 probe of QEMU's frame export", detail, "rejected",
            OK if verdict == "rejected" else OUT, "QEMU")
    elif "probe" in m or streamed:
        add("probe", "resource_id=0 probe of QEMU's frame export", "did not run", "rejected", MISSING, "QEMU")
    rows += crash_rows(m)
    rows += phase_rows(m)
    rows += harness_rows(m)
    return rows


def resource_id_rows(m: dict[str, Any]) -> list[Measurement]:
    """Resource-ID counts by path (desktop container log, QEMU log) and by source (vsockenc, FRAME_READY, …)."""
    ids = m.get("resource_ids")
    if not isinstance(ids, dict):
        return []
    rows = []
    paths = {"desktop": "desktop container log", "host": "QEMU helix-debug.log"}
    for where, r in ids.items():
        if not isinstance(r, dict):
            continue
        by_source = r.get("by_source") or {}
        if by_source:
            parts = [f"{src}: {c.get('nonzero', 0)} non-zero, {c.get('zero', 0)} zero" for src, c in by_source.items()
                     if isinstance(c, dict)]
            value = "; ".join(parts)
        else:
            value = f"{r.get('nonzero', 0)} non-zero, {r.get('zero', 0)} zero" if (r.get("nonzero") or r.get("zero")) \
                else "none logged"
        zero = r.get("zero") or 0
        status = OUT if zero else (OK if r.get("nonzero") else INFO)
        rows.append(Measurement(f"resource_ids_{where}", f"resource ids in the {paths.get(where, where)}", value,
                                "no resource_id=0", status, "QEMU"))
    return rows


def crash_rows(m: dict[str, Any]) -> list[Measurement]:
    """Crash reports, the VM's status, SSH and the containers after streaming (``crash_evidence``)."""
    ev = m.get("crash_evidence")
    label = "crash evidence (after streaming)"
    if not isinstance(ev, dict):
        return [Measurement("crash", label, "not collected", "none", MISSING, "VM")]
    lines = [str(x) for x in ev.get("lines") or []]
    if not ev.get("collected", True):
        label = "crash evidence (during boot)"
    scope = "" if ev.get("complete", True) else " (crash reports only: the target was broken)"
    if lines:
        return [Measurement("crash", label, "; ".join(humanize(x) for x in lines) + scope, "none", OUT, "VM")]
    checked = ["no new crash report"]
    if ev.get("vm_status"):
        checked.append(f"VM status `{ev['vm_status']}`")
    if ev.get("ssh_alive") is True:
        checked.append("SSH answers")
    if ev.get("complete", True) and ev.get("collected", True):
        checked.append("no container restarted or OOM-killed")
    return [Measurement("crash", label, ", ".join(checked) + scope, "none", OK, "VM")]


def phase_rows(m: dict[str, Any]) -> list[Measurement]:
    phases = m.get("phases") or {}
    limits = (m.get("limits") or {}).get("phases") or {}
    outcomes: dict[str, str] = {}
    for r in m.get("phase_timeline") or []:
        if r.get("outcome") in ("failed", "skipped"):
            outcomes[r.get("name")] = r["outcome"]
    rows = []
    for name, value in phases.items():
        if not _is_num(value):
            continue
        limit = limits.get(name)
        status = OUT if outcomes.get(name) == "failed" or (_is_num(limit) and value > limit) else (
            OK if _is_num(limit) else INFO)
        text = seconds(value) + (f" ({outcomes[name]})" if name in outcomes else "")
        rows.append(Measurement(f"phase_{name}", f"phase {name}", text, f"≤ {seconds(limit)} (timeout)"
                                if _is_num(limit) else "", status, "phases"))
    return rows


def harness_rows(m: dict[str, Any]) -> list[Measurement]:
    """The harness's own cost while it streamed (``metrics.json["harness"]``, when present)."""
    h = m.get("harness")
    if not isinstance(h, dict) or not h:
        return []
    rows = []
    if h.get("analysis"):
        words = {"live": "live (analysed while streaming)", "deferred": "deferred (analysed after the stream)",
                 "sampled": "sampled (a share of the frames decoded)"}
        rows.append(Measurement("harness_analysis", "harness: stream analysis", words.get(h["analysis"],
                                str(h["analysis"])), "", INFO, "harness"))
    if _is_num(h.get("stream_cpu_s")):
        pct = h.get("stream_cpu_percent_of_core")
        rows.append(Measurement("harness_cpu", "harness: CPU while streaming",
                                f"{h['stream_cpu_s']:.1f} s" + (f" ({pct:.0f} % of one core)" if _is_num(pct) else ""),
                                "", INFO, "harness"))
    if _is_num(h.get("peak_rss_mb")):
        rows.append(Measurement("harness_rss", "harness: peak memory (RSS)", f"{h['peak_rss_mb']:.0f} MB", "", INFO,
                                "harness"))
    if _is_num(h.get("bytes_written")):
        rows.append(Measurement("harness_bytes", "harness: bytes written", size(h["bytes_written"]), "", INFO,
                                "harness"))
    return rows


def headline(m: dict[str, Any]) -> list[Measurement]:
    """The few figures the banner shows: FPS, slowest window, time to first frame, frames, resolution."""
    keys = ("fps", "fps_min_window", "first_frame_s", "frames", "resolution")
    by_key = {r.key: r for r in measurements(m)}
    return [by_key[k] for k in keys if k in by_key and by_key[k].status != MISSING]
