"""The run report's blocks, rendered from data (no simulator, no browser): the measurements agree
with the checks on what is out of band, evidence reads as words, every value is escaped, and the
page stays under its size limit for a 1080p stream (the clip is cut, and the page says so)."""

from __future__ import annotations

import io
import json
import re

import pytest

from harness.config import TargetConfig, VmConfig
from harness.drivers.capture import CaptureResult
from harness.record import RunRecord, StreamRecord
from harness.report import measures as ms
from harness.report.html import PAGE_LIMIT_BYTES, banner_html, evidence_html, page_blocks, provenance_html
from harness.report.metrics import build_metrics
from harness.timeline import Timeline
from harness.verdict import checks
from report_samples import Tags, metrics

REPR = re.compile(r"[\[{]'|'[\]}]|\{'|\[\{")  # Python reprs of dicts and lists of dicts


def _run(*, windows=(40, 40, 40), fps=40.0, motion=0.8, gap=0.02) -> tuple[RunRecord, TargetConfig]:
    target = TargetConfig(vm=VmConfig(id="VM"))
    cap = CaptureResult(url="ws://x", recording="", h264="", end="duration", first_frame_s=0.3, trailing_gap_s=gap)
    cap.timing = {"frames": 120, "fps": fps, "fps_windows": list(windows), "fps_min_window": min(windows),
                  "replay_frames": 0, "keyframes": 1, "stalls": [], "jitter_ms": {"p50": 25, "p95": 26, "p99": 27}}
    cap.content = {"width": 1920, "height": 1080, "freezes": [], "black_frames": 0, "decode_errors": 0,
                   "motion": motion, "first_frame_is_idr_with_sps_pps": True}
    run = StreamRecord(session_id="ses_1", capture=cap, vkcube_running_before=True, vkcube_running_after=True)
    return RunRecord(streams=[run]), target


def _status(m: dict, key: str) -> str:
    return {r.key: r.status for r in ms.measurements(m)}[key]


@pytest.mark.parametrize("slowest, fails", [(24, False), (23, True)])
def test_the_slowest_window_limit_is_the_checks(slowest, fails):
    record, target = _run(windows=(40, slowest, 40))
    finding = checks.fps_in_band(record.stream, target)
    m = build_metrics(record, target, Timeline())
    assert (finding.cause == "fps_dip") is fails
    assert _status(m, "fps_min_window") == (ms.OUT if fails else ms.OK)


@pytest.mark.parametrize("fps, fails", [(30.0, False), (29.9, True), (60.0, False), (60.5, True)])
def test_the_fps_band_is_the_checks(fps, fails):
    record, target = _run(fps=fps, windows=(40, 40))
    finding = checks.fps_in_band(record.stream, target)
    m = build_metrics(record, target, Timeline())
    assert (finding.cause in ("low_fps", "high_fps")) is fails
    assert _status(m, "fps") == (ms.OUT if fails else ms.OK)


@pytest.mark.parametrize("gap, fails", [(0.5, False), (0.75, False), (0.76, True), (1.0, True)])
def test_the_trailing_gap_limit_is_the_checks(gap, fails):
    record, target = _run(gap=gap)
    assert (checks.fps_in_band(record.stream, target).cause == "frames_stop") is fails
    assert _status(build_metrics(record, target, Timeline()), "trailing_gap_s") == (ms.OUT if fails else ms.OK)


@pytest.mark.parametrize("motion, fails", [(0.5, False), (0.49, True)])
def test_the_motion_limit_is_the_checks(motion, fails):
    record, target = _run(motion=motion)
    assert (checks.vkcube(record.stream).cause == "static_screen") is fails
    assert _status(build_metrics(record, target, Timeline()), "motion") == (ms.OUT if fails else ms.OK)


def test_every_measurement_named_in_the_issue_is_in_the_table():
    keys = {r.key for r in ms.measurements(metrics())}
    assert {"fps", "fps_min_window", "first_frame_s", "frames", "resolution", "jitter_ms", "stalls", "freezes",
            "black_frames", "decode_errors", "resource_ids_host", "probe", "crash", "phase_boot", "phase_stack",
            "phase_session"} <= keys
    assert not any(k.startswith("harness_") for k in keys)  # shown only when metrics.json has them


def test_the_harness_cost_is_shown_when_present():
    m = metrics(harness={"analysis": "deferred", "stream_cpu_s": 12.5, "stream_cpu_percent_of_core": 41.7,
                         "peak_rss_mb": 212.0, "bytes_written": 63_500_000})
    rows = {r.key: r for r in ms.measurements(m)}
    assert rows["harness_analysis"].value.startswith("deferred")
    assert rows["harness_cpu"].value == "12.5 s (42 % of one core)"
    assert rows["harness_rss"].value == "212 MB" and rows["harness_bytes"].value == "63.5 MB"
    assert "harness: peak memory (RSS)" in evidence_html(m)


def test_evidence_reads_as_words_not_reprs():
    assert ms.humanize("{'start_s': 1.9925, 'duration_s': 0.9484}") == "at 1.99 s for 0.95 s"
    assert ms.humanize("content froze: [{'start_s': 4.0, 'duration_s': 3.1}]") == "content froze: at 4.00 s for 3.10 s"
    assert ms.humanize("fps_windows=[20, 19, 21]") == "frames per 1 s window: 20, 19, 21"
    assert ms.humanize("cli video_frames=127 elapsed=3.1s") == "cli video frames: 127 elapsed: 3.1 s"
    assert "resource_id=0" in ms.humanize("2 frame(s) used resource_id=0")
    banner = banner_html(metrics(failure="frozen"))
    text = " ".join(Tags(banner).text)
    assert "frozen" in text and "at 4.00 s for 3.10 s" in text and "What to do:" in text
    assert not REPR.search(text), text
    m = metrics(failure="low_fps")
    assert not REPR.search(" ".join(Tags(banner_html(m) + evidence_html(m)).text))


def test_the_title_gives_verdict_target_and_date():
    assert re.fullmatch(r"helix-e2e PASS: sim, 2026-11-0[12] \d\d:\d\d", ms.report_title(metrics()))
    assert ms.report_title(metrics(failure="frozen")).startswith("helix-e2e FAIL: sim, ")
    broken = metrics(tests={"t::a": "skipped"})
    assert ms.verdict_word(broken) == "INCOMPLETE"
    merged = {"tests": {"t::a": "passed"}, "targets": {"sim@gw1": metrics(target="sim@gw1"),
                                                        "sim@gw0": metrics(target="sim@gw0", failure="frozen")}}
    assert re.fullmatch(r"helix-e2e FAIL: sim@gw0, sim@gw1, 2026-11-0[12] \d\d:\d\d", ms.report_title(merged))


def test_every_value_is_escaped():
    evil = "<img src=x onerror=alert(1)>"
    m = metrics(target=evil, failure="frozen")
    m["triage"]["hint"] = "<script>alert(2)</script>"
    m["provenance"]["command_line"] = "pytest --target '<b>x</b>'"
    m["provenance"]["ci_run_url"] = "javascript:alert(3)"
    m["log_excerpts"][0]["lines"][1]["text"] = "<iframe src=//evil>"
    m["resource_ids"]["host"]["by_source"] = {"<u>src</u>": {"nonzero": 1, "zero": 0}}
    page = "".join(page_blocks(m))
    tags = {t for t, _ in Tags(page).tags}
    assert not tags & {"img", "iframe", "u"} and "<script>alert" not in page and "href='javascript:" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "&lt;iframe src=//evil&gt;" in page
    assert "<a href" not in provenance_html({"ci_run_url": "javascript:alert(3)"})


def test_a_30s_1080p_stream_keeps_the_page_under_5_mb(tmp_path):
    """A 1080p stream at 16 Mbps: 5 s of clip would be 10 MB. The clip is cut to fit beside what
    pytest-html's own page takes, it still plays, and the page says what it left out."""
    import av
    from helix_sim.recordings import synthesize_recording

    rec, h264 = tmp_path / "stream.hxwsrec", tmp_path / "stream.h264"
    synthesize_recording(rec, fps=30, duration_s=6, width=1920, height=1080, bitrate_kbps=16_000, h264_path=h264)
    assert h264.stat().st_size > PAGE_LIMIT_BYTES
    m = metrics(duration=30)
    m["capture"].update(recording=str(rec), h264=str(h264))
    other = 700_000  # pytest-html's template, CSS, script and test data (logs, per-test extras)
    blocks = page_blocks(m, other_bytes=other)
    page = "".join(blocks)
    assert len(page.encode()) + other < PAGE_LIMIT_BYTES
    text = " ".join(Tags(page).text)
    assert re.search(r"the clip after \d+(\.\d+)? s \(of 5 s\), cut to keep the page small", text), text[-2000:]
    assert "the full recording (stream.hxwsrec" in text and "Not on this page" in text
    src = re.search(r"data:video/mp4;base64,([A-Za-z0-9+/=]+)", page).group(1)
    import base64

    with av.open(io.BytesIO(base64.b64decode(src)), format="mp4") as clip:
        frames = sum(1 for _ in clip.decode(video=0))
    assert 15 <= frames < 150
    # a small stream is not cut
    synthesize_recording(rec, fps=30, duration_s=2, width=640, height=368, h264_path=h264)
    small = "".join(page_blocks(m, other_bytes=other))
    assert "cut to keep the page small" not in small and "data:video/mp4" in small


def test_metrics_keep_every_key_and_add_the_report_keys():
    record, target = _run()
    m = build_metrics(record, target, Timeline(), phase_limits={"boot": 180.0}, command_line="pytest -m streaming")
    for key in ("schema", "harness_version", "generated_at", "target", "fps_band", "phases", "phase_timeline",
                "facts", "status", "broken", "tests", "teardown_errors", "triage", "fps", "fps_windows", "capture",
                "resource_ids"):
        assert key in m, key
    assert m["limits"]["phases"] == {"boot": 180.0} and m["limits"]["fps_min_window"] == 24.0
    assert m["provenance"]["command_line"] == "pytest -m streaming"
    assert set(m["provenance"]) >= {"helix_git_sha", "qemu_version", "qemu_build_marker", "utm_version", "host",
                                    "host_model", "harness_version", "target_file"}
    json.dumps(m)


def test_a_broken_target_renders_what_it_knows():
    """The stack broke: no stream was measured, the tests were skipped; the page says so in words."""
    m = metrics()
    for key in ("fps", "fps_windows", "fps_min_window", "frames", "capture", "width", "height", "jitter_ms", "stalls",
                "freezes", "black_frames", "decode_errors", "probe", "probe_verdict", "resource_ids", "log_excerpts",
                "first_frame_is_idr_with_sps_pps", "stream_errors", "motion", "crash_evidence"):
        m.pop(key, None)
    m["tests"] = {k: "skipped" for k in m["tests"]}
    m["broken"] = {"phase": "stack", "error": "./stack start exited 1"}
    m["triage"] = {"layer": "stack", "cause": "stack_failed", "evidence": ["exit status 1"], "hint": "read the output",
                   "message": "./stack start exited 1", "check": "phase:stack", "transient": False, "explains": []}
    m["phase_timeline"][3]["outcome"] = "failed"
    page = "".join(page_blocks(m))
    text = " ".join(Tags(page).text)
    assert "FAIL" in text and "stack failed" in text and "0 passed, 0 failed, 9 skipped" in text
    rows = {r.key: r for r in ms.measurements(m)}
    assert rows["fps"].value == "not measured" and rows["fps"].status == ms.MISSING
    assert rows["phase_stack"].status == ms.OUT and "(failed)" in rows["phase_stack"].value
    assert rows["crash"].value == "not collected"
    assert "e2e-fps" not in page and "data:video" not in page
