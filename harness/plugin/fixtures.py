"""Options and fixtures of the helix-e2e pytest plugin.

Fixture chain (session scope): ``target`` (the validated config; provisions a simulator when
the target asks for one) → ``strategy`` (the state machine) → ``booted_vm`` / ``helix_stack``
/ ``helix_session`` / ``stream_run`` (each brings the strategy *at least* to a state).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import pytest

from ..config import ANALYSIS_MODES, TARGET_ENV, TargetConfig, load_target, shown
from ..protocols.cli_output import is_session_id
from ..errors import ConfigError, HarnessError
from ..record import RunRecord, StreamRecord
from ..redact import install_logging_filter, redact
from ..report.metrics import provenance
from ..runs.preflight import preflight_error, run_preflight
from ..runs.provision import launch_sim, validate_faults
from ..strategy import Status, Strategy
from .interrupts import sigint_deferred
from .session import E2ESession, worker_id
from .vmlock import acquire_vm

log = logging.getLogger(__name__)

DEFAULT_TARGET = "fixtures/targets/sim.toml"


def validate_session_id(value: object, key: str = "--session") -> str:
    """A ``ses_…`` id (``ses_`` + 26 lowercase ULID characters), or ``ConfigError`` naming ``key``."""
    if not is_session_id(value):
        raise ConfigError(f"{key} must be a Helix session id like ses_01ke4rsx7jb62ms9zx8g68tnbe "
                          f"(ses_ + 26 lowercase letters and digits), got {shown(value)}")
    return value  # type: ignore[return-value]


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("helix-e2e", "helix-e2e streaming harness")
    g.addoption("--target", dest="e2e_target", default=None,
                help=f"target config TOML (default: ${TARGET_ENV}, the ini helix_e2e_target, or {DEFAULT_TARGET})")
    g.addoption("--initial-state", dest="e2e_initial_state", default=None,
                choices=[s.name for s in Status if s is not Status.unknown],
                help="assume the target is already in this state (reuse a running VM/stack/session)")
    g.addoption("--session", dest="e2e_session", default=None, help="existing ses_… id for --initial-state session_ready")
    g.addoption("--keep-vm", dest="e2e_keep_vm", action="store_true", default=False,
                help="leave the VM (and stack) running after the run")
    g.addoption("--stream-duration", dest="e2e_stream_duration", type=float, default=None,
                help="seconds of stream to capture (overrides [stream] duration)")
    g.addoption("--timeout-scale", dest="e2e_timeout_scale", type=float, default=None,
                help="multiply every phase timeout (slow hosts)")
    g.addoption("--report-dir", dest="e2e_report_dir", default="reports",
                help="where reports/latest and dated copies go (default: reports)")
    g.addoption("--keep-reports", dest="e2e_keep_reports", type=_count, default=10, metavar="N",
                help="dated copies of reports/latest to keep (the oldest beyond N are removed; default 10)")
    g.addoption("--keep-artifacts", dest="e2e_keep_artifacts", default="on-failure",
                choices=["always", "on-failure", "never"], help="keep per-test artifacts of passing tests too")
    g.addoption("--no-preflight", dest="e2e_no_preflight", action="store_true", default=False,
                help="skip the doctor's preflight checks")
    g.addoption("--soak-sessions", dest="e2e_soak_sessions", type=int, default=10,
                help="soak: sessions to run back to back in one VM (default 10)")
    g.addoption("--soak-reboot-every", dest="e2e_soak_reboot_every", type=int, default=0,
                help="soak: reboot the VM every K sessions and check a reboot restores the first figures")
    g.addoption("--soak-fps-margin", dest="e2e_soak_fps_margin", type=float, default=0.15,
                help="soak: allowed fps drop, last third vs first third (default 0.15)")
    g.addoption("--soak-ttff-margin", dest="e2e_soak_ttff_margin", type=float, default=0.50,
                help="soak: allowed time-to-first-frame rise (default 0.50)")
    g.addoption("--rerun-infra", dest="e2e_rerun_infra", type=int, default=0, metavar="N",
                help="rerun a test up to N times, but only when its verdict is transient infrastructure "
                "(layer host/utm/ssh: an OSStatus, SSH refused while booting); product failures are never retried")
    g.addoption("--sim-fault", dest="e2e_sim_faults", action="append", default=[],
                help="inject a simulator fault (repeatable; also HELIX_E2E_SIM_FAULT=a,b)")
    g.addoption("--sim-fps", dest="e2e_sim_fps", type=float, default=None, help="simulator frame rate")
    g.addoption("--sim-qemu", dest="e2e_sim_qemu", default=None,
                choices=["feb5-reject", "v7-fallback", "v10-ignore"], help="simulated QEMU behaviour")
    g.addoption("--sim-video-mode", dest="e2e_sim_video_mode", default=None, choices=["scanout", "shm"],
                help="simulated video mode")
    g.addoption("--analysis", dest="e2e_analysis", default=None, choices=list(ANALYSIS_MODES),
                help="when the stream's frames are decoded: live (during the stream), deferred (after it, from the "
                "recording) or sampled (IDRs and every Nth frame); default: [stream] analysis, the ini "
                "helix_e2e_analysis, else deferred on a real Mac and live on the simulator")
    g.addoption("--sim-provider", dest="e2e_sim_provider", default=None, choices=["utm", "helix-app"],
                help="who runs the simulated VM: utm (UTM.app, utmctl) or helix-app (Helix.app's bundled QEMU: a "
                "real qemu-system-aarch64, Debian's qemu-system-arm)")
    parser.addini("helix_e2e_target", "default target config file", default=None)
    parser.addini("helix_e2e_analysis", "default analysis mode (live|deferred|sampled) for targets that set none",
                  default=None)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value}")
    return value


def target_path(config: pytest.Config) -> str:
    return (
        config.getoption("e2e_target")
        or os.environ.get(TARGET_ENV)
        or config.getini("helix_e2e_target")
        or str(Path(config.rootpath) / DEFAULT_TARGET)
    )


def _sim_faults(config: pytest.Config) -> list[str]:
    names = list(config.getoption("e2e_sim_faults") or [])
    env = os.environ.get("HELIX_E2E_SIM_FAULT", "")
    if env:
        names.append(env)
    return sorted(validate_faults(names))


def requested_target(config: pytest.Config) -> tuple[TargetConfig, list[str]]:
    """The target config the options ask for, with their overrides applied and checked, and the sim
    faults to inject. Raises ConfigError (the plugin turns it into one usage error line)."""
    cfg = load_target(target_path(config))
    overrides = {}
    # `is not None`: a 0 must reach the config's own checks, not be dropped as "unset".
    if config.getoption("e2e_stream_duration") is not None:
        overrides["stream.duration"] = config.getoption("e2e_stream_duration")
    if config.getoption("e2e_timeout_scale") is not None:
        overrides["timeouts.scale"] = config.getoption("e2e_timeout_scale")
    analysis = config.getoption("e2e_analysis") or (None if cfg.stream.analysis else config.getini("helix_e2e_analysis"))
    if analysis:
        overrides["stream.analysis"] = analysis
    cfg = cfg.with_overrides(overrides) if overrides else cfg
    faults = _sim_faults(config)
    if faults and not cfg.is_sim:
        raise HarnessError("--sim-fault needs a simulator target", phase="config",
                           hint="faults are injected by the simulator; drop --sim-fault for a real Mac")
    session_id = config.getoption("e2e_session")
    if session_id:
        validate_session_id(session_id)
    return cfg, faults


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> TargetConfig:
    """The validated target config. A target with a [sim] table gets a fresh simulator."""
    config = request.config
    install_logging_filter()
    cfg, faults = requested_target(config)
    overrides = {}
    session = E2ESession.of(config)
    if cfg.is_sim and not cfg.sim.get("external"):
        settings = {k: v for k, v in cfg.sim.items()}
        for key, opt in (("fps", "e2e_sim_fps"), ("qemu", "e2e_sim_qemu"), ("video_mode", "e2e_sim_video_mode"),
                         ("provider", "e2e_sim_provider")):
            if config.getoption(opt) is not None:
                settings[key] = config.getoption(opt)
        with session.timeline.phase("sim", "the embedded simulator to start"):
            sim = launch_sim(settings, faults, timeout=60)
        session.sim = sim

        def stop_sim() -> None:
            with sigint_deferred("stopping the simulator"):
                sim.stop()

        request.addfinalizer(stop_sim)
        overrides.update(sim.overrides())
    cfg = cfg.with_overrides(overrides) if overrides else cfg
    wid = worker_id(config)
    if wid:
        from dataclasses import replace

        cfg = replace(cfg, name=f"{cfg.name}@{wid}")
    cfg, lock = acquire_vm(cfg, timeout=cfg.timeouts["boot"])
    if lock is not None:
        request.addfinalizer(lock.release)
    return cfg


@pytest.fixture(scope="session")
def strategy(request: pytest.FixtureRequest, target: TargetConfig, record_testsuite_property):
    """The session's state machine, handed the drivers its target needs. Teardown always runs (stop
    vkcube, session, tunnels, VM); afterwards provenance goes to JUnit as testsuite properties."""
    config = request.config
    session = E2ESession.of(config)
    strat = Strategy(target=target, timeline=session.timeline, artifacts_dir=session.run_dir,
                     keep_vm=config.getoption("e2e_keep_vm"))
    strat.describe_host()
    session.strategy = strat

    def record_provenance() -> None:  # runs after the teardown below, and after a skipped preflight too
        for key, value in provenance(strat.record, target).items():
            record_testsuite_property(key, redact(str(value)))

    request.addfinalizer(record_provenance)
    if not config.getoption("e2e_no_preflight"):
        run_preflight(strat, session.run_dir)
        failed = preflight_error(strat)
        if failed is not None:
            raise failed  # every test errors with the doctor's finding: a failed preflight never goes green
    initial = config.getoption("e2e_initial_state")
    if initial:
        strat.force(initial, session_id=config.getoption("e2e_session") or "")
    yield strat
    with sigint_deferred("tearing down (vkcube, session, tunnels, VM)"):
        errors = strat.teardown()
    for err in errors:
        log.warning("teardown: %s", err)


@pytest.fixture(scope="session")
def booted_vm(strategy: Strategy) -> RunRecord:
    """The run record once the VM is up (``vm_up``)."""
    strategy.ensure(Status.vm_up)
    return strategy.record


@pytest.fixture(scope="session")
def helix_stack(strategy: Strategy) -> RunRecord:
    """The run record once the stack is up (``stack_up``)."""
    strategy.ensure(Status.stack_up)
    return strategy.record


@pytest.fixture(scope="session")
def helix_session(strategy: Strategy) -> RunRecord:
    """The run record once a spectask session with its desktop container is up (``session_ready``)."""
    strategy.ensure(Status.session_ready)
    return strategy.record


@pytest.fixture(scope="session")
def stream_run(strategy: Strategy) -> StreamRecord:
    """The measured stream (vkcube running, native capture + CLI cross-check)."""
    strategy.ensure(Status.streaming)
    return strategy.record.stream


@pytest.fixture(scope="session")
def frame_export_probe(strategy: Strategy) -> RunRecord:
    """The run record with the resource_id=0 probe of QEMU's frame export (needs the VM up)."""
    strategy.ensure(Status.vm_up)
    strategy.probe_frame_export()
    return strategy.record


@pytest.fixture(scope="session")
def crash_evidence(strategy: Strategy, stream_run) -> RunRecord:
    """The run record with everything that says something crashed while streaming."""
    strategy.collect_crash_evidence()
    return strategy.record
