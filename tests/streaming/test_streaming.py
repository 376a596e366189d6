"""The Apple Silicon streaming check: boot → stack → spectask session → vkcube → stream.

Runs against the target config (the embedded simulator by default; a real UTM VM with
``--target``). Each test asserts one line of the manual checklist and says why it failed.
"""

from __future__ import annotations

import pytest

from harness.doctor import check_runtime_version
from harness.protocols import h264

pytestmark = pytest.mark.streaming


@pytest.mark.e2e_artifacts("timeline", "crashes")
def test_vm_boots_without_crash(booted_vm):
    s = booted_vm
    status = s.utm.status()
    assert status == "started", f"utmctl status is `{status}` after boot, not `started`"
    crashes = s.host.new_crash_reports(s.host_snapshot)
    assert not crashes, f"QEMU left crash report(s) while booting: {[c.summary() for c in crashes]}"
    # The running QEMU must be the installed build: its first VERSION line after start (when
    # helix_log can write the host log at all) must match the binary's marker.
    binary_version = s.facts.get("qemu_binary_version")
    appended = s.host.new_log_bytes(s.host_snapshot)
    if binary_version and b"[HELIX] VERSION:" in appended:
        verdict = check_runtime_version(binary_version, appended)
        assert verdict.status == "ok", f"{verdict.finding} ({verdict.fix})"


def test_desktop_container_starts(helix_session):
    s = helix_session
    assert s.session_id.startswith("ses_"), f"spectask start gave {s.session_id!r}, not a ses_ id"
    assert s.desktop_container, "the session never reported a dev_container_id"
    state = s.docker.desktop_state(s.desktop_container)
    assert state.running, f"desktop container {state.name} is {state.status} (exit {state.exit_code})"
    assert not state.oom_killed, f"desktop container {state.name} was OOM-killed"


@pytest.mark.e2e_artifacts("thumbnails")
def test_vkcube_running(stream_run, strategy):
    assert not stream_run.vkcube_error, f"vkcube: {stream_run.vkcube_error}"
    assert stream_run.vkcube_running_before, "`pkill -0 -f vkcube` found no vkcube after launching it"
    assert stream_run.vkcube_running_after, "vkcube was no longer running after the stream (it died)"
    motion = stream_run.capture.content.get("motion")
    assert motion is not None, "the stream was not decoded, so vkcube's rendering could not be checked"
    assert motion >= 0.5, (
        f"only {motion:.0%} of frames changed: the desktop looks static, so vkcube is not rendering into the stream"
    )


@pytest.mark.e2e_artifacts("fps_plot", "thumbnails", "clip")
def test_stream_fps_in_band(stream_run, target):
    cap = stream_run.capture
    band = (target.stream.fps_min, target.stream.fps_max)
    t = cap.timing
    assert t.get("frames"), f"no live video frames were received ({cap.end}: {cap.error or cap.close_reason})"
    fps = t.get("fps")
    assert fps is not None, "too few frames after the warm-up to measure FPS"
    assert band[0] <= fps <= band[1], (
        f"stream FPS {fps:.1f} is outside the {band[0]:g}–{band[1]:g} band "
        f"({t['frames']} live frames, per-second windows {t.get('fps_windows')})"
    )
    min_window = t.get("fps_min_window")
    if min_window is not None:
        assert min_window >= band[0] * 0.8, (
            f"the slowest 1-s window had {min_window} frames (band {band[0]:g}–{band[1]:g}): "
            f"windows {t.get('fps_windows')}"
        )
    gap = cap.trailing_gap_s
    allowed = max(1.0, 3.0 / band[0])
    assert gap is not None and gap <= allowed, (
        f"frames stopped {gap:.1f}s before the end of the capture while the socket stayed open"
    )


@pytest.mark.e2e_artifacts("fps_plot", "thumbnails", "clip", "logs")
def test_stream_has_no_errors(stream_run):
    cap = stream_run.capture
    c = cap.content
    assert cap.end == "duration", (
        f"the stream ended early: {cap.end} (close code {cap.close_code} {cap.close_reason!r}) {cap.error}"
    )
    assert not cap.stream_errors, f"the server sent StreamError (0x31): {cap.stream_errors}"
    assert not cap.protocol_errors, f"malformed stream messages: {cap.protocol_errors[:3]}"
    assert c.get("first_frame_is_idr_with_sps_pps"), "the first live frame is not an IDR with SPS and PPS"
    assert c.get("decode_errors") == 0, f"{c.get('decode_errors')} access units failed to decode"
    assert not cap.timing.get("stalls"), f"arrival stalls: {cap.timing.get('stalls')}"
    assert not c.get("freezes"), f"content froze: {c.get('freezes')}"
    assert not c.get("black_frames"), f"{c.get('black_frames')} black frames"


@pytest.mark.e2e_artifacts("logs")
def test_resource_ids_nonzero(stream_run):
    scans = {"desktop container (vsockenc)": stream_run.desktop_scan, "QEMU log (FRAME_READY)": stream_run.host_scan}
    nonzero = sum(s.resource_ids.nonzero for s in scans.values() if s)
    zero = sum(s.resource_ids.zero for s in scans.values() if s)
    reasons = [r for s in scans.values() if s for r in s.resource_ids.zero_reasons]
    where = {k: s.resource_ids.by_source for k, s in scans.items() if s and s.resource_ids.by_source}
    assert nonzero or zero, "no resource id was logged by vsockenc or by QEMU's FRAME_READY lines"
    assert zero == 0, (
        f"{zero} frame(s) used resource_id=0 ({nonzero} non-zero; by source {where})"
        + (f"; vsockenc says: {reasons[0]}" if reasons else "")
    )
    assert nonzero > 0


@pytest.mark.e2e_artifacts("probe")
def test_qemu_rejects_resource_id_zero(booted_vm):
    probe = booted_vm.run_probe()
    assert probe.verdict == "rejected", (
        f"QEMU did not reject resource_id=0: verdict `{probe.verdict}`: {probe.explanation} ({probe.message})"
    )
    assert probe.error_code is not None and probe.error_code < 0, f"error reply carried code {probe.error_code}"
    assert "resource_id=0 not supported" in booted_vm.probe_log or probe.message, (
        "QEMU replied with an error but logged no rejection line"
    )


@pytest.mark.e2e_artifacts("crashes", "logs", "timeline")
def test_no_crash_after_streaming(stream_run, strategy):
    findings = strategy.crash_findings()
    assert not findings, "after streaming: " + "; ".join(findings)


def test_cli_stream_agrees_with_capture(stream_run, target):
    assert stream_run.cli is not None, f"the CLI stream did not run: {stream_run.cli_error}"
    stats = stream_run.cli.stats
    native = stream_run.capture.timing
    assert stats.video_frames > 0, "`helix spectask stream` received 0 frames (it exits 0 anyway)"
    assert native.get("fps"), "no native FPS to compare with"
    tol = target.stream.cli_fps_tolerance
    # The CLI counts GOP-replay frames and includes connect time; allow the stated tolerance.
    assert abs(stats.average_fps - native["fps"]) <= max(2.0, tol * native["fps"]), (
        f"CLI Average FPS {stats.average_fps:.1f} vs native {native['fps']:.1f} (tolerance {tol:.0%})"
    )
    expected = native["fps"] * target.stream.duration
    assert stats.video_frames >= (1 - tol - 0.1) * expected, (
        f"CLI saw {stats.video_frames} frames, expected about {expected:.0f}"
    )
    assert stream_run.cli_h264, f"the CLI's .h264 was not fetched: {stream_run.cli_error}"
    with open(stream_run.cli_h264, "rb") as fh:
        head = fh.read(1 << 16)
    info = h264.au_info(head)
    assert info.has_sps and info.has_pps, "the CLI's .h264 does not start with SPS/PPS"
