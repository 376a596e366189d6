"""One whole run in-process: (simulator →) preflight → boot-to-stream → every check → triage → teardown.

:func:`run_once` is what the fault tests (and soak-style tools) call: it provisions a simulator
with the given faults when the target is one, drives it through the same :class:`Strategy`,
drivers and checks (:func:`all_stream_checks`) as the pytest suite, triages the findings,
and stops everything it started, whatever happened. Nothing is printed; progress goes to logging.

Every phase is bounded by its own ``[timeouts]`` entry (one scale factor, see
:meth:`Strategy.phase_timeout`), so a run with any fault ends within its phase timeouts:
:attr:`RunResult.overruns` lists the phases that took longer than their timeout plus
:data:`SLACK_S`, and :attr:`RunResult.budget_s` is the most the whole run may take.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..config import TargetConfig, load_target
from ..errors import ConfigError
from ..strategy import Status, Strategy, StrategyBroken
from ..timeline import Timeline
from ..verdict import checks
from ..verdict.checks import Finding, from_doctor, from_error
from ..verdict.triage import Verdict, triage
from .preflight import run_preflight
from .provision import launch_sim, validate_faults

log = logging.getLogger(__name__)

__all__ = ["RunResult", "run_once", "SIM_SETTINGS", "SIM_TIMEOUTS", "SLACK_S"]

#: How much longer than its timeout a phase may take (process start-up, teardown of a half-done step).
SLACK_S = 5.0
#: Simulator settings for short runs: a small picture (less CPU on small CI hosts) and the sim's
#: modelled delays (boot, sandbox, session start, fault timings) at 30 %.
SIM_SETTINGS: dict[str, Any] = {"fps": 40, "resolution": "640x368", "video_mode": "scanout", "qemu": "feb5-reject",
                                "delay_scale": 0.3}
#: Phase timeouts for a simulator run (seconds, before ``[timeouts] scale``): a few times the clean
#: run's phases on a 2-core host, so a fault that makes a phase wait costs seconds, not minutes.
SIM_TIMEOUTS: dict[str, float] = {"boot": 10, "ssh": 6, "stack": 10, "session": 8, "build": 10, "first_frame": 6,
                                  "stream_extra": 8, "probe": 3, "command": 15, "teardown": 15}


@dataclass
class RunResult:
    """What one run found: the findings, the verdict (``None``: all ok), and how long each part took."""

    findings: list[Finding]
    verdict: Verdict | None
    timings: dict[str, float]  # phase → seconds (a phase that ran twice is summed), plus sim_start and total
    faults: tuple[str, ...] = ()
    elapsed_s: float = 0.0  # the run itself: preflight to teardown (without the simulator's start and stop)
    budget_s: float = 0.0  # the most the run may take: every phase it ran at its timeout, plus the checks
    phases: list[dict[str, Any]] = field(default_factory=list)  # timeline records with their timeout
    preflight: list[dict[str, str]] = field(default_factory=list)  # doctor checks that did not pass
    teardown_errors: list[str] = field(default_factory=list)
    broken: tuple[str, BaseException] | None = None  # the phase that failed and its error, if one did
    #: The live capture's stream verdict facts (StreamTally + stream_errors) and its recording's path,
    #: when a stream ran: ``helix-e2e analyze`` of the recording must reach the same.
    stream: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.verdict is None

    @property
    def failed(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    @property
    def overruns(self) -> list[str]:
        """Phases that took longer than their timeout + :data:`SLACK_S` (a hang the deadlines missed)."""
        return [f"{p['name']}: {p['duration_s']:.1f}s > {p['timeout_s']:.1f}s + {SLACK_S:.0f}s"
                for p in self.phases if p["timeout_s"] is not None and p["duration_s"] > p["timeout_s"] + SLACK_S]

    def as_dict(self) -> dict[str, Any]:
        return {
            "faults": list(self.faults),
            "verdict": self.verdict.as_dict() if self.verdict else None,
            "findings": [f.as_dict() for f in self.findings],
            "timings": self.timings,
            "elapsed_s": round(self.elapsed_s, 3),
            "budget_s": round(self.budget_s, 3),
            "phases": self.phases,
            "preflight": self.preflight,
            "teardown_errors": self.teardown_errors,
        }


def _sim_target(info: Mapping[str, Any], *, stream_duration: float, warmup: float, resolution: str | None,
                timeouts: Mapping[str, float], timeout_scale: float | None) -> TargetConfig:
    """The simulator's own target file, made short: stream length, warm-up and the fast timeouts."""
    cfg = load_target(info["target_file"])  # the HELIX_E2E_* environment applies (e.g. a timeout scale)
    overrides: dict[str, Any] = {"stream.duration": stream_duration, "stream.warmup": warmup}
    if resolution:
        w, h = (int(x) for x in resolution.lower().split("x"))
        overrides.update({"stream.width": w, "stream.height": h})
    overrides.update({f"timeouts.{k}": v for k, v in timeouts.items()})
    if timeout_scale is not None:
        overrides["timeouts.scale"] = timeout_scale
    return cfg.with_overrides(overrides)


def run_once(
    target: TargetConfig | Mapping[str, Any] | None = None,
    faults: Iterable[str] | str = (),
    *,
    stream_duration: float = 3.0,
    warmup: float = 0.5,
    sessions: int = 1,
    timeout_scale: float | None = None,
    preflight: bool = True,
    artifacts_dir: str | Path | None = None,
    sim_start_timeout: float = 60.0,
) -> RunResult:
    """Run the whole flow once and return its findings and verdict; everything started is stopped.

    ``target``: a :class:`TargetConfig` (a simulator target, or a real Mac without faults), a mapping of
    simulator settings (the ``[sim]`` keys: fps, resolution, video_mode, qemu, gop, boot_delay,
    delay_scale; missing ones come from :data:`SIM_SETTINGS`), or ``None`` for :data:`SIM_SETTINGS`.
    A simulator run uses :data:`SIM_TIMEOUTS`. ``sessions`` > 1 streams that many sessions one after the
    other on the same VM boot (a VM that slows down as it runs only shows from the second one).
    """
    names = tuple(sorted(validate_faults(faults)))
    if sessions < 1:
        raise ConfigError(f"sessions must be >= 1, got {sessions}")
    sim = None
    tmp: tempfile.TemporaryDirectory | None = None
    timeline = Timeline()
    t_begin = time.monotonic()
    sim_start = 0.0
    try:
        if isinstance(target, TargetConfig) and not target.is_sim:
            if names:
                raise ConfigError("faults need a simulator target", hint="drop the faults for a real Mac")
            cfg = target.with_overrides({"stream.duration": stream_duration, "stream.warmup": warmup,
                                         "timeouts.scale": timeout_scale})
        else:
            if isinstance(target, TargetConfig):
                settings = {**SIM_SETTINGS, **dict(target.sim)}
            else:
                settings = {**SIM_SETTINGS, **dict(target or {})}
            names = tuple(sorted(set(names) | validate_faults(settings.pop("faults", []))))
            sim = launch_sim(settings, names, timeout=sim_start_timeout)
            sim_start = time.monotonic() - t_begin
            cfg = _sim_target(sim.info, stream_duration=stream_duration, warmup=warmup,
                              resolution=settings.get("resolution"), timeouts=SIM_TIMEOUTS,
                              timeout_scale=timeout_scale).with_overrides(sim.overrides())
        if artifacts_dir is None:
            tmp = tempfile.TemporaryDirectory(prefix="helix-e2e-run-")
            artifacts_dir = tmp.name
        strat = Strategy(target=cfg, timeline=timeline, artifacts_dir=Path(artifacts_dir))
        return _drive(strat, cfg, names, sessions=sessions, preflight=preflight, sim_start=sim_start)
    finally:
        if sim is not None:
            sim.stop()
        if tmp is not None:
            tmp.cleanup()


def _drive(strat: Strategy, cfg: TargetConfig, names: tuple[str, ...], *, sessions: int, preflight: bool,
           sim_start: float) -> RunResult:
    t0 = time.monotonic()
    findings: list[Finding] = []
    doctor_failed: list[dict[str, str]] = []
    try:
        if preflight:
            run_preflight(strat, strat.artifacts_dir)
            doctor_failed = strat.record.preflight
            findings = [from_doctor(c) for c in doctor_failed if c.get("status") == "fail"]
        if not strat.record.preflight_failure:
            for _ in range(sessions - 1):
                try:
                    strat.ensure(Status.streaming)
                    strat.transition(Status.stack_up)  # stop this session; the next ensure starts another
                except Exception:  # noqa: BLE001 - the checks below report the broken phase
                    break
            findings = all_stream_checks(strat, cfg)
    finally:
        broken = strat.broken
        errors = strat.teardown()
    verdict = triage(findings, strat)
    elapsed = time.monotonic() - t0
    phases = []
    for r in strat.timeline.records:
        try:
            timeout = strat.phase_timeout(r.name)
        except ConfigError:
            timeout = cfg.timeouts["command"]  # preflight: each doctor command is bounded by this
        phases.append({**r.as_dict(), "timeout_s": round(timeout, 3)})
    t = cfg.timeouts
    checks_allowance = t["probe"] + 3 * t["command"]  # the probe, utmctl status, SSH ping, container state
    timings = {"sim_start": round(sim_start, 3), **strat.timeline.durations(), "total": round(elapsed, 3)}
    return RunResult(
        findings=findings, verdict=verdict, timings=timings, faults=names, elapsed_s=elapsed,
        budget_s=sum(p["timeout_s"] for p in phases) + checks_allowance + SLACK_S, phases=phases,
        preflight=doctor_failed, teardown_errors=list(errors), broken=broken, stream=_stream_facts(strat),
    )


def _stream_facts(strat: Strategy) -> dict[str, Any] | None:
    run = strat.record.stream
    if run is None or run.capture is None:
        return None
    cap = run.capture
    return {**cap.tally, "stream_errors": list(cap.stream_errors), "recording": cap.recording}


def all_stream_checks(s: Strategy, target: TargetConfig) -> list[Finding]:
    """Run every check of the suite in its order, bringing the strategy to the state each needs and
    collecting the evidence each reads; a check that cannot run is a failed finding."""
    rec = s.record
    # (check, state it needs, evidence to collect first, the check itself)
    steps = [
        ("vm_boots_without_crash", Status.vm_up, None, lambda: checks.vm_boot(rec)),
        ("desktop_container_starts", Status.session_ready, None, lambda: checks.desktop_container(rec)),
        ("vkcube_running", Status.streaming, None, lambda: checks.vkcube(rec.stream)),
        ("stream_fps_in_band", Status.streaming, None, lambda: checks.fps_in_band(rec.stream, target)),
        ("stream_has_no_errors", Status.streaming, None, lambda: checks.stream_errors(rec.stream)),
        ("resource_ids_nonzero", Status.streaming, None, lambda: checks.resource_ids(rec.stream)),
        ("qemu_rejects_resource_id_zero", Status.vm_up, s.probe_frame_export, lambda: checks.qemu_rejects_zero(rec)),
        ("no_crash_after_streaming", Status.streaming, s.collect_crash_evidence, lambda: checks.no_crash(rec)),
        ("cli_stream_agrees_with_capture", Status.streaming, None, lambda: checks.cli_agrees(rec.stream, target)),
        ("sessions_do_not_slow_down", Status.streaming, None, lambda: checks.sessions_stable(rec)),
    ]
    out: list[Finding] = []
    for name, needs, collect, check in steps:
        try:
            if name == "no_crash_after_streaming" and s.broken is not None:
                s.collect_crash_evidence(complete=False)  # a crash explains why a phase broke: look even so
                crashed = checks.crash_reports(rec)
                if crashed is not None:
                    out.append(crashed)
                    continue
            s.ensure(needs)
            if collect is not None:
                collect()
            out.append(check())
        except Exception as exc:  # noqa: BLE001 - a check that cannot run is a failed finding
            original = exc.__cause__ if isinstance(exc, StrategyBroken) and exc.__cause__ is not None else exc
            out.append(from_error(name, original))
    return out
