"""`metrics.json`: one data model of a run, rendered from its run record (no I/O but the file write)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .. import __version__
from ..redact import redact
from ..verdict.checks import trailing_gap_limit
from .measures import MIN_WINDOW_SHARE


def build_metrics(record, target, timeline, *, status: str = "", broken: tuple[str, BaseException] | None = None,
                  outcomes: dict[str, str] | None = None, triage: Any = None,
                  reruns: dict[str, Any] | None = None, completion: dict[str, Any] | None = None,
                  phase_limits: dict[str, float] | None = None, command_line: str = "") -> dict[str, Any]:
    """``record``: the :class:`harness.record.RunRecord`; ``status``/``broken``: where the strategy ended;
    ``triage``: the run's :class:`harness.verdict.triage.Verdict` (``None``: every check passed);
    ``reruns``: what ``--rerun-infra`` allowed and reran; ``completion``: whether every selected test ran
    (``complete``, ``interrupted``, ``not_run``); tests that never ran appear in ``tests`` as ``not_run``;
    ``phase_limits``: each phase's timeout (the strategy's); ``command_line``: the exact command that ran
    (provenance)."""
    t = target
    m: dict[str, Any] = {
        "schema": "helix-e2e/metrics/1",
        "harness_version": __version__,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "target": {"name": t.name, "source": t.source, "sim": dict(t.sim) if t.sim is not None else None},
        "fps_band": [t.stream.fps_min, t.stream.fps_max],
        "phases": timeline.durations(),
        "phase_timeline": [r.as_dict() for r in timeline.records],
        "facts": record.facts(),
        "status": status,
        "broken": {"phase": broken[0], "error": str(broken[1])} if broken else None,
        "tests": _tests(outcomes, completion),
        **_completion(completion),
        "teardown_errors": record.teardown_errors,
        "triage": triage.as_dict() if triage is not None else None,
    }
    if reruns is not None:
        m["rerun_infra"] = reruns
    run = record.stream
    if run is not None and run.capture is not None:
        cap = run.capture
        timing = cap.timing or {}
        content = cap.content or {}
        m.update(
            {
                "session_id": run.session_id,
                "fps": timing.get("fps"),
                "fps_windows": timing.get("fps_windows"),
                "fps_min_window": timing.get("fps_min_window"),
                # Scanout PTS is synthetic upstream (frameCount × 16666 µs, scanout_source.go): never a rate.
                "fps_pts": None if _scanout(t) else timing.get("fps_pts"),
                "fps_pts_note": SYNTHETIC_PTS if _scanout(t) else "",
                "time_to_first_frame_s": cap.first_frame_s,
                "status_before_first_frame": (cap.tally or {}).get("status_before_first_frame", []),
                "viewer_events": (cap.tally or {}).get("viewer_events", {}),
                "stream_tally": cap.tally,
                "frames": timing.get("frames"),
                "replay_frames": timing.get("replay_frames"),
                "keyframes": timing.get("keyframes"),
                "duration_s": timing.get("duration_s"),
                "jitter_ms": timing.get("jitter_ms"),
                "bursts": timing.get("bursts"),
                "stalls": timing.get("stalls"),
                "resolution": [content.get("width"), content.get("height")] if content.get("width") else None,
                "width": content.get("width"),
                "height": content.get("height"),
                "freezes": content.get("freezes"),
                "black_frames": content.get("black_frames"),
                "motion": content.get("motion"),
                "decode_errors": content.get("decode_errors"),
                "first_frame_is_idr_with_sps_pps": content.get("first_frame_is_idr_with_sps_pps"),
                "stream_errors": cap.stream_errors,
                "capture": {
                    "end": cap.end,
                    "error": cap.error,
                    "close_code": cap.close_code,
                    "close_reason": cap.close_reason,
                    "connect_s": cap.connect_s,
                    "first_frame_s": cap.first_frame_s,
                    "trailing_gap_s": cap.trailing_gap_s,
                    "messages": cap.messages,
                    "bytes": cap.bytes,
                    "message_order": cap.message_order,
                    "recording": cap.recording,
                    "h264": cap.h264,
                },
                "vkcube": {
                    "running_before": run.vkcube_running_before,
                    "running_after": run.vkcube_running_after,
                    "state_after": run.vkcube_state_after,
                    "pid": run.vkcube_pid,
                    "error": run.vkcube_error,
                },
            }
        )
        if cap.footprint:  # the harness's own cost during the stream (issue 15; a public interface)
            m["harness"] = dict(cap.footprint)
        ids: dict[str, Any] = {}
        for where, scan in (("desktop", run.desktop_scan), ("host", run.host_scan)):
            if scan is not None:
                ids[where] = scan.resource_ids.as_dict()
        m["resource_ids"] = ids
        if run.cli is not None:
            s = run.cli.stats
            m["cli"] = {
                "exit_status": run.cli.exit_status,
                "video_frames": s.video_frames,
                "keyframes": s.keyframes,
                "average_fps": s.average_fps,
                "instant_fps": s.instant_fps,
                "resolution": list(s.resolution) if s.resolution else None,
                "end_reason": s.end_reason,
            }
        elif run.cli_error:
            m["cli"] = {"error": run.cli_error}
    if record.probe is not None:
        m["probe"] = record.probe.result.as_dict()
        m["probe_verdict"] = record.probe.result.verdict
    m.update(report_keys(record, target, phase_limits=phase_limits, command_line=command_line))
    return m


def _tests(outcomes: dict[str, str] | None, completion: dict[str, Any] | None) -> dict[str, str]:
    tests = dict(outcomes or {})
    for nodeid in (completion or {}).get("not_run", []):
        tests.setdefault(nodeid, "not_run")
    return tests


def _completion(completion: dict[str, Any] | None) -> dict[str, Any]:
    c = completion or {"complete": True, "interrupted": False, "not_run": []}
    return {"complete": bool(c.get("complete")), "interrupted": bool(c.get("interrupted")),
            "not_run": list(c.get("not_run") or [])}


def report_keys(record, target, *, phase_limits: dict[str, float] | None = None,
                command_line: str = "") -> dict[str, Any]:
    """What the run report shows besides the measurements themselves (metrics.json keys ``provenance``,
    ``limits``, ``thumbnails``, ``crash_evidence`` and ``log_excerpts``)."""
    s = target.stream
    out: dict[str, Any] = {
        "provenance": provenance(record, target, command_line=command_line),
        "limits": {
            "fps_min_window": round(s.fps_min * MIN_WINDOW_SHARE, 3),
            "first_frame_s": target.timeouts["first_frame"],
            "trailing_gap_s": trailing_gap_limit(s.fps_min),
            "resolution": [s.width, s.height],
            "cli_fps_tolerance": s.cli_fps_tolerance,
            "phases": dict(phase_limits or {}),
        },
    }
    run = record.stream
    if run is not None and run.capture is not None:
        out["thumbnails"] = {str(k): str(v) for k, v in (run.capture.thumbnails or {}).items()}
    crash = _crash_evidence(record)
    if crash is not None:
        out["crash_evidence"] = crash
    if run is not None:
        from .extras import log_excerpt

        excerpts = []
        for where, title, text in (("desktop", "desktop container log", run.desktop_logs),
                                   ("host", "QEMU helix-debug.log", run.host_log)):
            if text:
                excerpts.append({"path": where, "title": title, **log_excerpt(text)})
        out["log_excerpts"] = excerpts
    return out


def _crash_evidence(record) -> dict[str, Any] | None:
    boot = [c.summary() for c in (record.boot.crash_reports if record.boot else [])]
    ev = record.crash
    if ev is None:
        return {"collected": False, "boot_crash_reports": boot, "lines": [f"new crash report {b}" for b in boot]} \
            if boot else None
    return {
        "collected": True,
        "complete": ev.complete,
        "boot_crash_reports": boot,
        "crash_reports": [c.summary() for c in ev.crash_reports],
        "vm_status": ev.vm_status,
        "vm_running": ev.vm_running,
        "ssh_alive": ev.ssh_alive,
        "containers": [{"container": p.container, "kind": p.kind, "text": p.text} for p in ev.containers],
        "lines": ev.lines(),
    }


def write_json(path: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """Write redacted JSON (secrets never reach a report)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = redact(json.dumps(data, indent=2, sort_keys=False, default=str))
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(p)
    return p


SYNTHETIC_PTS = ("scanout: the stream's PTS is synthetic upstream (frameCount × 16666 µs), so a PTS rate reads ~60 "
                 "whatever the real rate; arrival time is the only FPS source")


def _scanout(target) -> bool:
    """The macOS scanout path (the default when no video_mode is asked for)."""
    return (target.stream.video_mode or "scanout") == "scanout"


def provenance(record, target, *, command_line: str = "") -> dict[str, Any]:
    """Where a result came from: harness, target, Helix, QEMU, UTM and host versions (the host's own
    description was collected once by the strategy), the target file and, when given, the exact
    command line; on GitHub Actions, the run's URL."""
    run = record.stream
    qemu_versions = run.host_scan.versions if run is not None else []
    provider = target.vm.provider
    out = {
        "harness_version": __version__,
        "target": f"{target.name} ({'simulator' if target.is_sim else 'real VM'})",
        "helix_git_sha": record.stack.helix_git_sha if record.stack else "",
        "qemu_version": qemu_versions[0] if qemu_versions else "",
        "utm_version": record.boot.vm_version if record.boot and provider == "utm" else "",
        "host": record.provenance.get("host", ""),
        "host_model": record.provenance.get("host_model", ""),
        "qemu_build_marker": record.qemu_binary_version,
        "vm_provider": record.provenance.get("vm_provider", "") or provider,
        "target_file": str(target.source or ""),
    }
    if provider != "utm":  # Helix.app: its QEMU's `--version`
        out["vm_version"] = record.boot.vm_version if record.boot else ""
    if command_line:
        out["command_line"] = command_line
    ci = ci_run_url()
    if ci:
        out["ci_run_url"] = ci
    return out


def ci_run_url() -> str:
    """The GitHub Actions run this ran in (``""`` elsewhere)."""
    env = os.environ
    if env.get("GITHUB_ACTIONS") == "true" and env.get("GITHUB_RUN_ID") and env.get("GITHUB_REPOSITORY"):
        server = env.get("GITHUB_SERVER_URL") or "https://github.com"
        return f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
    return ""


#: ``metrics.json["harness"]`` keys that also become JUnit properties (``harness_<key>``).
HARNESS_PROPERTIES = ("analysis", "stream_cpu_s", "stream_cpu_percent_of_core", "peak_rss_mb", "bytes_written")


def junit_properties(record, timeline) -> dict[str, Any]:
    """Measurements as JUnit <property> values."""
    props: dict[str, Any] = {}
    run = record.stream
    if run is not None and run.capture is not None:
        t, c = run.capture.timing or {}, run.capture.content or {}
        props.update({
            "fps": t.get("fps"),
            "fps_min_window": t.get("fps_min_window"),
            "frames": t.get("frames"),
            "stalls": len(t.get("stalls") or []),
            "freezes": len(c.get("freezes") or []),
            "decode_errors": c.get("decode_errors"),
        })
        for key in HARNESS_PROPERTIES:
            props[f"harness_{key}"] = (run.capture.footprint or {}).get(key)
        for where, scan in (("desktop", run.desktop_scan), ("host", run.host_scan)):
            if scan is not None:
                props[f"resource_ids_{where}_nonzero"] = scan.resource_ids.nonzero
                props[f"resource_ids_{where}_zero"] = scan.resource_ids.zero
    if record.probe is not None:
        props["probe_verdict"] = record.probe.result.verdict
    for phase, seconds in timeline.durations().items():
        props[f"phase_{phase}_s"] = seconds
    return {k: v for k, v in props.items() if v is not None}
