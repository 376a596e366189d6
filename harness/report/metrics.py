"""`metrics.json`: one data model of a run, rendered from its run record (no I/O but the file write)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .. import __version__
from ..redact import redact


def build_metrics(record, target, timeline, *, status: str = "", broken: tuple[str, BaseException] | None = None,
                  outcomes: dict[str, str] | None = None, triage: Any = None,
                  reruns: dict[str, Any] | None = None, completion: dict[str, Any] | None = None) -> dict[str, Any]:
    """``record``: the :class:`harness.record.RunRecord`; ``status``/``broken``: where the strategy ended;
    ``triage``: the run's :class:`harness.verdict.triage.Verdict` (``None``: every check passed);
    ``reruns``: what ``--rerun-infra`` allowed and reran; ``completion``: whether every selected test ran
    (``complete``, ``interrupted``, ``not_run``); tests that never ran appear in ``tests`` as ``not_run``."""
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
                "fps_pts": timing.get("fps_pts"),
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
                    "error": run.vkcube_error,
                },
            }
        )
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


def write_json(path: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """Write redacted JSON (secrets never reach a report)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = redact(json.dumps(data, indent=2, sort_keys=False, default=str))
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(p)
    return p


def provenance(record, target) -> dict[str, Any]:
    """Where a result came from: harness, target, Helix, QEMU, UTM and host versions (the host's own
    description was collected once by the strategy)."""
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
    }
    if provider != "utm":  # Helix.app: the provider, and its QEMU's `--version`
        out["vm_provider"] = provider
        out["vm_version"] = record.boot.vm_version if record.boot else ""
    return out


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
        for where, scan in (("desktop", run.desktop_scan), ("host", run.host_scan)):
            if scan is not None:
                props[f"resource_ids_{where}_nonzero"] = scan.resource_ids.nonzero
                props[f"resource_ids_{where}_zero"] = scan.resource_ids.zero
    if record.probe is not None:
        props["probe_verdict"] = record.probe.result.verdict
    for phase, seconds in timeline.durations().items():
        props[f"phase_{phase}_s"] = seconds
    return {k: v for k, v in props.items() if v is not None}
