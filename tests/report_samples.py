"""Synthesized run data for the report tests: ``metrics.json`` dicts shaped like a real run's, and a
reports directory of nights (each a dated folder with its metrics.json and report.html, plus the
shared history.jsonl), so the history page and the report blocks render without a simulator."""

from __future__ import annotations

import calendar
import json
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from harness.report.summary import append_history

DAY = 86_400.0
#: 2026-11-01 02:17 UTC: the first synthesized night.
T0 = float(calendar.timegm((2026, 11, 1, 2, 17, 0, 0, 0, 0)))
TESTS = ("test_vm_boots_without_crash", "test_desktop_container_starts", "test_vkcube_running",
         "test_stream_fps_in_band", "test_stream_has_no_errors", "test_resource_ids_nonzero",
         "test_qemu_rejects_resource_id_zero", "test_no_crash_after_streaming", "test_cli_stream_agrees_with_capture")
FAILURES = {
    "low_fps": ("test_stream_fps_in_band", {"layer": "stream", "cause": "low_fps",
                                            "message": "stream FPS 19.8 is outside the 30–60 band",
                                            "evidence": ["fps=19.80", "fps_windows=[20, 19, 21]"],
                                            "hint": "the encoder or the host is too slow"}),
    "frozen": ("test_stream_has_no_errors", {"layer": "stream", "cause": "frozen",
                                             "message": "content froze: [{'start_s': 4.0, 'duration_s': 3.1}]",
                                             "evidence": ["{'start_s': 4.0, 'duration_s': 3.1}"],
                                             "hint": "frames kept arriving with identical content"}),
}


def metrics(*, when: float = T0, target: str = "sim", fps: float = 40.0, duration: int = 30,
            failure: str | None = None, stack_s: float = 1.8, **extra: Any) -> dict[str, Any]:
    """A single target's metrics.json, as the plugin writes it after a ``duration``-second stream."""
    windows = [int(round(fps)) + (i % 3) - 1 for i in range(max(1, duration - 2))]
    freezes: list[dict] = []
    tests = {f"tests/streaming/test_streaming.py::{t}": "passed" for t in TESTS}
    triage = None
    if failure is not None:
        test, t = FAILURES[failure]
        tests[f"tests/streaming/test_streaming.py::{test}"] = "failed"
        triage = {**t, "check": test[5:], "transient": False, "explains": []}
        if failure == "frozen":
            freezes = [{"start_s": 4.0, "duration_s": 3.1}]
    timeline, start = [], when
    for name, dur in (("preflight", 0.2), ("boot", 2.0 + (when - T0) / DAY * 0.01), ("ssh", 0.1),
                      ("stack", stack_s), ("session", 2.9), ("stream", duration + 0.8)):
        timeline.append({"name": name, "what": f"the {name} phase", "started": start, "duration_s": dur,
                         "outcome": "ok", "error": ""})
        start += dur
    m: dict[str, Any] = {
        "schema": "helix-e2e/metrics/1",
        "harness_version": "0.1.0",
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + 1)),
        "target": {"name": target, "source": "fixtures/targets/sim.toml", "sim": {"fps": 40}},
        "fps_band": [30.0, 60.0],
        "phases": {r["name"]: r["duration_s"] for r in timeline},
        "phase_timeline": timeline,
        "facts": {},
        "status": "off",
        "broken": None,
        "tests": tests,
        "teardown_errors": [],
        "triage": triage,
        "session_id": "ses_01sample",
        "fps": fps,
        "fps_windows": windows,
        "fps_min_window": min(windows),
        "fps_pts": fps,
        "frames": int(fps * (duration - 2)),
        "replay_frames": 0,
        "keyframes": 1,
        "duration_s": duration - 2.0,
        "jitter_ms": {"p50": 25.0, "p95": 27.1, "p99": 29.4, "max": 31.0},
        "bursts": 0,
        "stalls": [],
        "resolution": [1920, 1080], "width": 1920, "height": 1080,
        "freezes": freezes,
        "black_frames": 0,
        "motion": 0.7,
        "decode_errors": 0,
        "first_frame_is_idr_with_sps_pps": True,
        "stream_errors": [],
        "capture": {"end": "duration", "error": "", "close_code": None, "close_reason": "", "connect_s": 0.02,
                    "first_frame_s": 0.4, "trailing_gap_s": 0.02, "messages": 1200, "bytes": 60_000_000,
                    "message_order": ["StreamInit"], "recording": "", "h264": ""},
        "resource_ids": {"host": {"source": "frame_ready", "nonzero": 7, "zero": 0, "samples": [],
                                  "by_source": {"frame_ready": {"nonzero": 7, "zero": 0}}, "zero_reasons": []}},
        "probe": {"verdict": "rejected", "error_code": -2, "message": "Error: -2", "elapsed_ms": 1.5},
        "probe_verdict": "rejected",
        "provenance": {"harness_version": "0.1.0", "target": f"{target} (simulator)", "helix_git_sha": "0" * 40,
                       "qemu_version": "2026-02-05-reject-resource-id-zero", "utm_version": "4.6.4",
                       "host": "macOS 15.3 (arm64)", "host_model": "Mac14,3",
                       "qemu_build_marker": "2026-02-05-reject-resource-id-zero", "vm_provider": "utm",
                       "target_file": "fixtures/targets/sim.toml", "command_line": "pytest -m streaming tests/streaming"},
        "limits": {"fps_min_window": 24.0, "first_frame_s": 20.0, "trailing_gap_s": 1.0, "resolution": [1920, 1080],
                   "cli_fps_tolerance": 0.15, "phases": {"boot": 180.0, "ssh": 120.0, "stack": 300.0,
                                                         "session": 180.0, "stream": 90.0}},
        "crash_evidence": {"collected": True, "complete": True, "boot_crash_reports": [], "crash_reports": [],
                           "vm_status": "started", "vm_running": True, "ssh_alive": True, "containers": [],
                           "lines": []},
        "log_excerpts": [{"path": "host", "title": "QEMU helix-debug.log", "total_lines": 3, "matched": 2,
                          "lines": [{"n": 1, "text": "[HELIX] VERSION: 2026-02-05-reject-resource-id-zero",
                                     "match": "qemu_version", "severity": "info"},
                                    {"n": 2, "text": "booting", "match": "", "severity": ""},
                                    {"n": 3, "text": "[FRAME_READY] #1 scanout=1 resource=37 has_subscriber=YES",
                                     "match": "qemu_frame_ready", "severity": "info"}]}],
    }
    m.update(extra)
    return m


def write_nights(root: Path, n: int = 10, *, failures: dict[int, str] | None = None,
                 slow_stack: int | None = None) -> list[dict[str, Any]]:
    """``n`` nightly runs under ``root``: ``root/<date>/metrics.json`` and ``report.html``, and every run
    again in ``root/history.jsonl`` (the same run seen twice must count once). ``failures``: night
    index → failure name; ``slow_stack``: a night whose stack phase took three times as long."""
    failures = {3: "low_fps", 7: "frozen"} if failures is None else failures
    out = []
    for i in range(n):
        when = T0 + i * DAY
        failure = failures.get(i)
        fps = 19.8 if failure == "low_fps" else 40.0 + (i % 3) * 0.2
        m = metrics(when=when, fps=fps, failure=failure, stack_s=5.4 if i == slow_stack else 1.8 + (i % 2) * 0.05)
        folder = root / time.strftime("%Y%m%d-%H%M%S", time.gmtime(when))
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(m, indent=2))
        (folder / "report.html").write_text(f"<html><title>night {i}</title><body>night {i}</body></html>")
        append_history(root / "history.jsonl", m)
        out.append(m)
    return out


class Tags(HTMLParser):
    """Start tags with their attributes, and the page's text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data):
        self.text.append(data)

    def count(self, tag: str, cls: str) -> int:
        return sum(1 for t, a in self.tags if t == tag and cls in a.get("class", "").split())
