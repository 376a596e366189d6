"""The suite's checks as data: each is a pure function of the run record (and the target) that
returns a :class:`Finding` (ok or not, why, which cause).

The pytest tests assert on these; triage, soak and the fault tests read the same findings,
so "what counts as broken" lives in one place. A finding names its *cause*; the layer, the default
hint and how triage ranks it come from the one table, :mod:`harness.causes`. Checks do no I/O: the
strategy collected the evidence they read, once, through its drivers.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable

from ..causes import CAUSES, LAYERS, cause as cause_row, phase_cause
from ..errors import CommandError, HarnessError, cause_of
from ..protocols import h264
from ..protocols.errors import RemoteProtocolError
from ..report.measures import spans

__all__ = ["Finding", "LAYERS", "vm_boot", "desktop_container", "vkcube", "fps_in_band", "stream_errors",
           "resource_ids", "qemu_rejects_zero", "no_crash", "crash_reports", "cli_agrees", "sessions_stable",
           "classify_error", "from_doctor", "from_error", "SLOWDOWN_TOLERANCE"]


@dataclass
class Finding:
    check: str
    ok: bool
    message: str = ""
    layer: str = ""
    cause: str = ""
    evidence: list[str] = field(default_factory=list)
    hint: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("check", "ok", "message", "layer", "cause", "evidence", "hint")}


def _recorded(check: Callable[..., Finding]) -> Callable[..., Finding]:
    """Keep each check's latest Finding on the record it examined (``RunRecord.findings`` /
    ``StreamRecord.findings``), so the plugin's triage reads the findings the tests produced."""

    @functools.wraps(check)
    def wrapper(subject, *args, **kwargs) -> Finding:
        finding = check(subject, *args, **kwargs)
        store = getattr(subject, "findings", None)
        if isinstance(store, dict):
            store[finding.check] = finding
        return finding

    return wrapper


def _ok(check: str, message: str = "") -> Finding:
    return Finding(check=check, ok=True, message=message)


def _fail(check: str, message: str, cause: str, evidence=(), hint: str = "", limit: int = 10) -> Finding:
    """A failed finding; its layer is its cause's (an unknown cause is a harness bug). At most ``limit``
    evidence lines (a dead QEMU's last 20 stderr lines raise it)."""
    return Finding(check=check, ok=False, message=message, layer=cause_row(cause).layer, cause=cause,
                   evidence=[str(e)[:500] for e in evidence][:limit], hint=hint)


@_recorded
def vm_boot(record) -> Finding:
    """The VM booted and stayed up, with no crash report and the expected QEMU build running."""
    name = "vm_boots_without_crash"
    boot = record.boot
    crashes = boot.crash_reports if boot else []
    if crashes:
        return _fail(name, f"QEMU left crash report(s): {[c.summary() for c in crashes]}", "qemu_crashed",
                     [c.summary() for c in crashes], "read the .ips report; QEMU crashed")
    status = boot.status_after if boot else ""
    if boot is None or not boot.running_after:
        source, running = (boot.status_source, boot.running_status) if boot else ("utmctl status", "started")
        return _fail(name, f"{source} is `{status}` after boot, not `{running}`", "vm_not_started",
                     [f"{source}: {status}"])
    from ..doctor import check_runtime_version

    if record.qemu_binary_version and b"[HELIX] VERSION:" in boot.host_log:
        verdict = check_runtime_version(record.qemu_binary_version, boot.host_log)
        if verdict.status != "ok":
            return _fail(name, f"{verdict.finding} ({verdict.fix})", "stale_qemu", [verdict.finding],
                         "installed QEMU is stale: rebuild and run fix-qemu-paths.sh, then restart the VM")
    return _ok(name, f"{boot.status_source} `{status}`")


@_recorded
def desktop_container(record) -> Finding:
    """The session got a ses_ id and a running desktop container (its state right after it appeared)."""
    name = "desktop_container_starts"
    session = record.session
    session_id = session.session_id if session else ""
    if not session_id.startswith("ses_"):
        return _fail(name, f"spectask start gave {session_id!r}, not a ses_ id", "no_session_id")
    if not session.container:
        return _fail(name, "the session never reported a dev_container_id", "no_container")
    state = session.desktop_baseline
    if state is None:
        return _fail(name, f"the state of desktop container {session.container} was never read", "no_container")
    if not state.running:
        return _fail(name, f"desktop container {state.name} is {state.status} (exit {state.exit_code})",
                     "container_not_running", [f"State.Status={state.status} ExitCode={state.exit_code}"])
    if state.oom_killed:
        return _fail(name, f"desktop container {state.name} was OOM-killed", "container_oom",
                     ["State.OOMKilled=true"], "give the VM/desktop more memory")
    return _ok(name, f"{state.name} running")


@_recorded
def vkcube(run) -> Finding:
    name = "vkcube_running"
    if run.vkcube_error:
        forbidden = "403" in run.vkcube_error or "not allowed" in run.vkcube_error
        return _fail(name, f"vkcube: {run.vkcube_error}", "exec_forbidden" if forbidden else "vkcube_failed",
                     [run.vkcube_error],
                     "the desktop's exec allowlist refused vkcube" if forbidden else "vkcube did not start")
    if not run.vkcube_running_before:
        return _fail(name, "`pkill -0 -f vkcube` found no vkcube after launching it", "vkcube_dies",
                     ["pkill -0 -f vkcube: exit 1"], "vkcube exited at once: check the desktop's Vulkan/Wayland setup")
    if run.vkcube_after_error:
        return _fail(name, f"vkcube could not be checked after the stream: {run.vkcube_after_error}",
                     "desktop_unreachable", [run.vkcube_after_error])
    if run.vkcube_state_after == "zombie":
        return _fail(name, f"vkcube (pid {run.vkcube_pid}) crashed during the stream and is a zombie (state Z): "
                     "`pkill -0 -f vkcube` still matches it", "vkcube_dies",
                     [f"/proc/{run.vkcube_pid}/stat: state Z (zombie) after streaming",
                      "pkill -0 -f vkcube: exit 0 (it matches the zombie)"])
    if not run.vkcube_running_after:
        return _fail(name, "vkcube was no longer running after the stream (it died)", "vkcube_dies",
                     ["pkill -0 -f vkcube: exit 1 after streaming"])
    motion = (run.capture.content or {}).get("motion") if run.capture else None
    if motion is None:
        return _fail(name, "the stream was not decoded, so vkcube's rendering could not be checked", "no_decode")
    if motion < 0.5:
        return _fail(name, f"only {motion:.0%} of frames changed: the desktop looks static, so vkcube is not "
                     "rendering into the stream", "static_screen", [f"motion={motion:.2f}"])
    return _ok(name, f"motion {motion:.0%}")


#: StreamError (0x31) texts upstream sends for a known cause (the wire's own words, not ours):
#: api/pkg/desktop/scanout_source.go turns any QEMU message but FRAME_RESPONSE into this error.
UPSTREAM_STREAM_ERRORS = {"unexpected msg_type: 0x": "qemu_unexpected_msg"}


def _stream_error_cause(texts: list[str]) -> str:
    for text in texts:
        for fragment, cause in UPSTREAM_STREAM_ERRORS.items():
            if fragment in text:
                return cause
    return "stream_error"


def _stream_ended(run) -> Finding | None:
    cap = run.capture
    if cap.end == "duration":
        return None
    detail = f"{cap.end} (close code {cap.close_code} {cap.close_reason!r}) {cap.error}".strip()
    evidence = [detail] + [f"StreamError: {e}" for e in cap.stream_errors]
    if cap.first_frame_timed_out and not cap.stream_errors:
        statuses = (cap.tally or {}).get("status_before_first_frame") or []
        shown = [f"{s.get('t_s')}s: {s.get('state') or s.get('text')}" for s in statuses[:5]]
        return _fail("stream", f"no video frame came within the first-frame timeout ({cap.error}); "
                     f"{len(statuses)} status message(s) before it", "no_first_frame",
                     evidence + [f"status before the first frame: {x}" for x in shown])
    if cap.close_code == 4000:
        return _fail("stream", f"the stream was superseded: {detail}", "superseded", evidence,
                     "another viewer with the same client_id took over the stream")
    if cap.stream_errors:
        return _fail("stream", f"the server sent StreamError (0x31) and dropped the stream: {cap.stream_errors[0]}",
                     _stream_error_cause(cap.stream_errors), evidence)
    return _fail("stream", f"the stream ended early: {detail}", "stream_ended", evidence)


#: The longest gap a healthy stream has: on a static screen pipewiresrc still sends a frame every 0.5 s
#: (keepalive-time=500). A capture whose last frame came longer ago than this limit stopped getting frames.
KEEPALIVE_S = 0.5


def trailing_gap_limit(fps_min: float) -> float:
    """Seconds of silence at the end of a capture that mean the frames stopped: 1.5 keepalives, or three
    frame intervals at the band's lowest rate if that is longer. Short enough that frames which stop 2 s
    into a capture of the minimum duration (warm-up + 1 s) are caught as stopped, not as a low rate."""
    return round(max(1.5 * KEEPALIVE_S, 3.0 / fps_min), 3)


@_recorded
def fps_in_band(run, target) -> Finding:
    name = "stream_fps_in_band"
    cap = run.capture
    band = (target.stream.fps_min, target.stream.fps_max)
    t = cap.timing or {}
    if not t.get("frames"):
        ended = _stream_ended(run)
        return _fail(name, f"no live video frames were received ({cap.end}: {cap.error or cap.close_reason})",
                     ended.cause if ended else "no_frames", ended.evidence if ended else [])
    # Frames that stopped while the socket stayed open come first: the FPS shortfall they cause is a symptom.
    gap = cap.trailing_gap_s
    allowed = trailing_gap_limit(band[0])
    if gap is None or gap > allowed:
        return _fail(name, f"frames stopped {gap or 0:.1f}s before the end of the capture while the socket stayed "
                     "open", "frames_stop", [f"last frame {gap}s before the end", f"end={cap.end}"],
                     "the desktop's pipeline stopped sending (pipeline error or a too-slow client)")
    fps = t.get("fps")
    if fps is None:
        return _fail(name, "too few frames after the warm-up to measure FPS", "too_few_frames")
    if not band[0] <= fps <= band[1]:
        return _fail(name, f"stream FPS {fps:.1f} is outside the {band[0]:g}–{band[1]:g} band "
                     f"({t['frames']} live frames, per-second windows {t.get('fps_windows')})",
                     "low_fps" if fps < band[0] else "high_fps", [f"fps={fps:.2f}", f"fps_windows={t.get('fps_windows')}"])
    min_window = t.get("fps_min_window")
    if min_window is not None and min_window < band[0] * 0.8:
        return _fail(name, f"the slowest 1-s window had {min_window} frames (band {band[0]:g}–{band[1]:g}): "
                     f"windows {t.get('fps_windows')}", "fps_dip", [f"fps_windows={t.get('fps_windows')}"])
    return _ok(name, f"{fps:.1f} fps")


@_recorded
def stream_errors(run) -> Finding:
    name = "stream_has_no_errors"
    cap = run.capture
    c = cap.content or {}
    ended = _stream_ended(run)
    if ended is not None:
        ended.check = name
        return ended
    if cap.stream_errors:
        return _fail(name, f"the server sent StreamError (0x31): {cap.stream_errors}",
                     _stream_error_cause(cap.stream_errors), cap.stream_errors)
    if cap.protocol_errors:
        return _fail(name, f"malformed stream messages: {cap.protocol_errors[:3]}", "protocol_error",
                     cap.protocol_errors[:3])
    if not c.get("first_frame_is_idr_with_sps_pps"):
        return _fail(name, "the first live frame is not an IDR with SPS and PPS", "no_idr_first")
    if c.get("decode_errors"):
        return _fail(name, f"{c.get('decode_errors')} access units failed to decode", "corrupt_h264",
                     [f"decode_errors={c.get('decode_errors')}"])
    stalls = (cap.timing or {}).get("stalls")
    if stalls:
        return _fail(name, f"arrival stalls {spans(stalls)}", "stall",
                     [f"no frame arrived {spans([s])}" for s in stalls[:5]])
    if c.get("freezes"):
        # Blamed on the stream: what the viewer got froze; the desktop's own logs say why, if they can.
        freezes = c["freezes"]
        return _fail(name, f"content froze {spans(freezes)}", "frozen",
                     [f"the picture froze {spans([f])}" for f in freezes[:5]],
                     "frames kept arriving with identical content: the compositor or app stopped rendering "
                     "(check the desktop's pipeline and vkcube)")
    if c.get("black_frames"):
        return _fail(name, f"{c.get('black_frames')} black frames", "black", [f"black_frames={c.get('black_frames')}"],
                     "the stream carried black pictures: the capture source lost the screen (scanout/PipeWire)")
    return _ok(name)


@_recorded
def resource_ids(run) -> Finding:
    name = "resource_ids_nonzero"
    scans = {"desktop container (vsockenc)": run.desktop_scan, "QEMU log (FRAME_READY)": run.host_scan}
    nonzero = sum(s.resource_ids.nonzero for s in scans.values() if s)
    zero = sum(s.resource_ids.zero for s in scans.values() if s)
    reasons = [r for s in scans.values() if s for r in s.resource_ids.zero_reasons]
    where = {k: s.resource_ids.by_source for k, s in scans.items() if s and s.resource_ids.by_source}
    samples = [x for s in scans.values() if s for x in s.resource_ids.samples[:3]]
    if not (nonzero or zero):
        frames = ((run.capture.timing or {}).get("frames") or 0) if run.capture else 0
        if not frames:  # nothing was encoded, so nothing could be logged: the stream check says why
            return _fail(name, "no frame was streamed, so no resource id was logged", "no_frames")
        return _fail(name, "no resource id was logged by vsockenc or by QEMU's FRAME_READY lines", "no_resource_ids",
                     hint="is GST_DEBUG=vsockenc:5 set in the desktop container?")
    if zero:
        msg = f"{zero} frame(s) used resource_id=0 ({nonzero} non-zero; by source {where})"
        if reasons:  # vsockenc's "not DMA-BUF backed": the shm path (BGRx buffers from Mutter's MemFds)
            msg = f"shm path: vsockenc sends resource_id=0: {msg}; vsockenc says: {reasons[0]}"
        if reasons or run.desktop_scan and run.desktop_scan.resource_ids.zero:
            hint = "vsockenc fell back to resource_id=0 because buffers are not DMA-BUF backed; use scanout mode"
        else:
            hint = ("QEMU's scanout reported resource=0: the guest's scanout has no backing virtio-gpu resource; "
                    "check the desktop's scanout/DRM lease setup and QEMU's [FRAME_READY] lines")
        return _fail(name, msg, "resource_ids_zero", reasons[:3] + samples, hint)
    return _ok(name, f"{nonzero} non-zero ids ({where})")


#: The probe's verdict → the cause of a QEMU that did not reject resource_id=0.
_PROBE_CAUSES = {"ignored": "qemu_ignored", "accepted": "qemu_accepted", "unreachable": "qemu_unreachable",
                 "protocol_error": "qemu_protocol_error", "reset": "qemu_reset"}


@_recorded
def qemu_rejects_zero(record) -> Finding:
    name = "qemu_rejects_resource_id_zero"
    if record.probe is None:
        return _fail(name, "the resource_id=0 probe did not run", "internal_error")
    probe = record.probe.result
    evidence = [f"{x['dir']}: {x['hex'][:120]}" for x in probe.exchange[:4]]
    if probe.verdict != "rejected":
        cause = _PROBE_CAUSES.get(probe.verdict, "qemu_protocol_error")
        return _fail(name, f"QEMU did not reject resource_id=0: verdict `{probe.verdict}`: {probe.explanation} "
                     f"({probe.message})", cause, evidence, CAUSES[cause].hint)
    if probe.error_code is None or probe.error_code >= 0:
        return _fail(name, f"error reply carried code {probe.error_code}", "bad_error_code", evidence)
    return _ok(name, f"rejected with {probe.error_code} {probe.message!r}")


@_recorded
def no_crash(record) -> Finding:
    """Nothing crashed while streaming: no crash report, the VM still running, SSH alive, containers intact."""
    name = "no_crash_after_streaming"
    ev = record.crash
    if ev is None:
        return _fail(name, "the post-stream crash evidence was not collected", "internal_error")
    lines = ev.lines()
    if not lines:
        return _ok(name)
    kinds = {p.kind for p in ev.containers}
    if ev.vm_cause:  # the VM provider recognised it (a hung QEMU, a panicked guest)
        cause = ev.vm_cause
    elif ev.crash_reports or ev.vm_status_error or (ev.vm_status is not None and not ev.vm_running):
        cause = "vm_crashed"
    elif "oom" in kinds:
        cause = "container_oom"
    elif ev.ssh_alive is False:
        cause = "ssh_lost"
    else:
        cause = "container_restarted"
    shown = lines[:len(lines) - len(ev.vm_lines)] + ev.vm_lines[:1]  # a dead QEMU's stderr tail: evidence only
    return _fail(name, "after streaming: " + "; ".join(shown), cause, lines, limit=10 + len(ev.vm_lines))


def crash_reports(record) -> Finding | None:
    """A failed ``no_crash_after_streaming`` when QEMU left new crash reports, else ``None``.

    Only the reports: when a phase broke, utmctl status, SSH and containers are expected to be down."""
    ev = record.crash
    if ev is None or not ev.crash_reports:
        return None
    summaries = [c.summary() for c in ev.crash_reports]
    return _fail("no_crash_after_streaming", f"QEMU crashed: new crash report(s) {summaries}", "vm_crashed",
                 [f"new crash report {x}" for x in summaries])


@_recorded
def cli_agrees(run, target) -> Finding:
    name = "cli_stream_agrees_with_capture"
    if run.cli_skipped:  # no helix CLI on this target (Helix.app without [vm] helix_cli): nothing to compare
        return _ok(name, f"skipped: {run.cli_skipped}")
    if run.cli is None:
        return _fail(name, f"the CLI stream did not run: {run.cli_error}", "cli_failed", [run.cli_error])
    stats = run.cli.stats
    native = (run.capture.timing or {}) if run.capture else {}
    if stats.video_frames <= 0:
        return _fail(name, "`helix spectask stream` received 0 frames (it exits 0 anyway)", "cli_no_frames",
                     [run.cli.output[-500:]])
    if not native.get("fps"):
        return _fail(name, "no native FPS to compare with", "no_native_fps")
    tol = target.stream.cli_fps_tolerance
    # The CLI counts the GOP-replay frames it gets at join and includes connect time. Which viewer joined first
    # decides who got a replay burst (the first live-pipeline viewer gets none; a joiner gets the current GOP so
    # far), so the CLI got anywhere from none to about one GOP: the native replay count, or the native GOP length
    # when that is more. It agrees when some count in that range puts it within the tolerance.
    replay = native.get("replay_frames") or 0
    keyframes = native.get("keyframes") or 0
    burst = max(replay, round((native.get("frames") or 0) / keyframes) if keyframes else 0)
    fps = native["fps"]
    highest = stats.average_fps
    lowest = max(0, stats.video_frames - burst) / stats.elapsed_s if burst and stats.elapsed_s else highest
    closest = min(max(fps, lowest), highest)  # the CLI rate in that range closest to the native one
    if abs(closest - fps) > max(2.0, tol * fps):
        detail = f" ({lowest:.1f} without up to {burst} replay frames)" if burst else ""
        return _fail(name, f"CLI Average FPS {highest:.1f}{detail} vs native {fps:.1f} (tolerance {tol:.0%})",
                     "cli_disagrees", [f"cli video_frames={stats.video_frames} elapsed={stats.elapsed_s}s",
                                       f"native fps={fps} replay_frames={replay} keyframes={keyframes}"])
    expected = native["fps"] * target.stream.duration
    if stats.video_frames < (1 - tol - 0.1) * expected:
        return _fail(name, f"CLI saw {stats.video_frames} frames, expected about {expected:.0f}", "cli_disagrees")
    if not run.cli_h264:
        return _fail(name, f"the CLI's .h264 was not fetched: {run.cli_error}", "cli_h264_missing")
    try:
        info = h264.au_info(run.cli_h264_head)
    except RemoteProtocolError as exc:
        return _fail(name, f"the CLI's .h264 does not start with a readable SPS/PPS: {exc.message}",
                     "cli_h264_no_headers")
    if not (info.has_sps and info.has_pps):
        return _fail(name, "the CLI's .h264 does not start with SPS/PPS", "cli_h264_no_headers")
    return _ok(name, f"CLI {stats.average_fps:.1f} fps vs native {native['fps']:.1f}")


@_recorded
def sessions_stable(record) -> Finding:
    """Successive sessions on one VM boot stream alike (a VM that slows down as it runs is a VM problem)."""
    name = "sessions_do_not_slow_down"
    runs = [r for r in record.streams if r.capture is not None and (r.capture.timing or {}).get("fps")]
    if len(runs) < 2:
        return _ok(name, f"{len(runs)} measured session(s): nothing to compare")
    first, last = runs[0], runs[-1]
    f1, f2 = first.capture.timing["fps"], last.capture.timing["fps"]
    evidence = [f"session {i + 1} ({r.session_id}): {r.capture.timing['fps']:.1f} fps, desktop ready "
                f"{r.session_start_s:.1f}s after spectask start" for i, r in enumerate(runs)]
    if f2 < f1 * (1 - SLOWDOWN_TOLERANCE):
        return _fail(name, f"session {len(runs)} streamed at {f2:.1f} fps against {f1:.1f} fps for session 1 on the "
                     f"same VM boot ({(1 - f2 / f1):.0%} slower)", "slow_after_running", evidence,
                     "each new session on this VM is slower: the VM degrades while it runs (leaked guest memory or "
                     "GPU resources); restart the VM between runs and report the slowdown with these numbers")
    return _ok(name, f"{len(runs)} sessions: {f1:.1f} → {f2:.1f} fps")


#: A later session may be this much slower than the first before the VM is blamed.
SLOWDOWN_TOLERANCE = 0.15


def classify_error(exc: BaseException) -> tuple[str, str, list[str], str]:
    """``(layer, cause, evidence, hint)`` of the error that broke a phase: the cause the error carries
    (named where it was raised), else its phase's fallback cause. Never the wording of a message."""
    named = cause_of(exc)
    row = CAUSES.get(named) if named else None
    if row is None:
        row = phase_cause(getattr(exc, "phase", None))
    return row.layer, row.name, _error_evidence(exc), getattr(exc, "hint", None) or row.hint


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and exc not in out and len(out) < 5:
        out.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return out


def _error_evidence(exc: BaseException) -> list[str]:
    """The error's own message, its causes, and the tail of any command output it carries."""
    lines = []
    for e in _chain(exc):
        msg = getattr(e, "message", None) or str(e)
        lines.append(f"{type(e).__name__}: {msg}")
        if isinstance(e, CommandError):
            tail = [ln for ln in (e.stdout + "\n" + e.stderr).splitlines() if ln.strip()][-4:]
            lines += tail
        lines += [str(x) for x in getattr(e, "evidence", None) or ()]  # lines an error carries as data
    seen: list[str] = []
    for line in lines:
        if line not in seen:
            seen.append(line)
    return seen


#: The doctor's checks (preflight) → the cause of a failure.
_DOCTOR = {
    "dylib_paths": "qemu_dylib_paths", "qemu_version": "qemu_version", "qemu_fresh": "stale_qemu",
    "utmctl": "utmctl_unusable", "hvf": "no_hvf", "frame_export_port": "frame_export_port_busy", "ssh_key": "ssh_key",
    "known_hosts": "known_hosts", "usercreds": "usercreds", "disk": "low_disk", "memory": "low_memory",
    "helix_app_bundle": "helix_app_bundle", "helix_app_files": "helix_app_files",
    "helix_app_running": "helix_app_running", "helix_app_ports": "helix_app_port_busy",
}


def from_doctor(check: Any) -> Finding:
    """A finding for one preflight (``helix-e2e doctor``) check: a ``doctor.Check`` or its ``as_dict()``."""
    d = check if isinstance(check, dict) else check.as_dict()
    name = str(d.get("name", "doctor"))
    if d.get("status") != "fail":
        return _ok(f"preflight:{name}", str(d.get("finding", "")))
    cause = d.get("cause") or _DOCTOR.get(name, "preflight_failed")
    finding = str(d.get("finding", ""))
    fix = str(d.get("fix", "")).strip()
    return _fail(f"preflight:{name}", f"preflight check {name} failed: {finding}", cause, [finding],
                 " ; ".join(line.strip() for line in fix.splitlines() if line.strip()))


def from_error(check: str, exc: BaseException) -> Finding:
    """A finding for a check that could not even run (the strategy failed on the way)."""
    if not isinstance(exc, HarnessError):
        return _fail(check, f"internal error: {type(exc).__name__}: {exc}", "internal_error",
                     [f"{type(exc).__name__}: {exc}"], "a harness bug: report it with the log")
    layer, cause, evidence, hint = classify_error(exc)
    carried = sum(len(getattr(e, "evidence", None) or ()) for e in _chain(exc))
    return _fail(check, str(exc), cause, evidence, hint, limit=10 + carried)
