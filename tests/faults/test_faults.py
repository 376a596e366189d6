"""Every known failure is injected, detected, classified and explained, and the harness never hangs.

One test per fault of ``helix_sim.config.FAULTS``: a whole run (own simulator, short stream, the
sim's faster delays) through ``harness.runs.runner.run_once``, whose triage must blame the fault's layer
on the first run, with the cause, the evidence that proves it and a hint; ``replay_burst`` is not a
fault and must pass. Every phase must end within its own timeout (+ slack), so no fault hangs a run.
Two more tests drive the pytest plugin itself (``--sim-fault`` / ``HELIX_E2E_SIM_FAULT``, the verdict
in the terminal, HTML and metrics.json, and ``--rerun-infra``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.causes import CAUSES
from harness.config import MIN_MEASURED_S, StreamConfig
from harness.errors import ConfigError
from childrun import child_env, pytest_argv
from harness.redact import redact
from harness.runs.provision import real_qemu_missing
from harness.runs.runner import run_once
from helix_sim.config import FAULTS, HELIX_APP_FAULTS
from harness.verdict.checks import from_error
from harness.verdict.triage import TRANSIENT_CAUSES

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]

#: What each fault's verdict must say besides its cause (FAULTS names it; harness/causes.py gives its layer):
#: a phrase of the evidence (the lines that prove it) and a phrase of the hint (what to do). ``None``: the run
#: must pass.
EXPECT: dict[str, tuple[str, str] | None] = {
    "vm_crash_boot": ("QEMULauncher-", ".ips"),
    "vm_crash_stream": ("QEMULauncher-", ".ips"),
    "utmctl_osstatus": ("OSStatus error -1743", "rerun"),
    "utmctl_no_gui": ("does not work from SSH sessions", "GUI session"),
    "ssh_refused": ("Unable to connect", "port forward"),
    "ssh_blackhole": ("SSH to", "never sends a banner"),
    "host_key_changed": ("does not match known_hosts", "ssh-keygen -R"),
    "stack_fails": ("port is already allocated", "compose"),
    "api_5xx": ("kept answering 502", "logs api"),
    "no_container": ("Starting desktop container", "sandbox"),
    "no_agent": ("no agent configured - set DefaultHelixAppID on project", "DefaultHelixAppID"),
    "exec_forbidden": ("command not allowed: vkcube", "allowlist"),
    "vkcube_dies": ("pkill -0 -f vkcube", "vkcube"),
    "ws_503": ("Sandbox not connected", "Sandbox not connected"),
    "stream_error": ("StreamError: failed to start", "pipeline"),
    "frames_stop": ("last frame", "stopped sending"),
    "qemu_unexpected_msg": ("unexpected msg_type: 0x22", "FRAME_RESPONSE"),
    "no_first_frame": ("starting_video", "no video frame came"),
    "superseded": ("4000", "client_id"),
    "low_fps": ("fps_windows=", "FPS band"),
    "frozen": (" s for ", "identical content"),
    "black": ("black_frames=", "black"),
    "corrupt_h264": ("decode_errors=", "encoder"),
    "replay_burst": None,
    "resource_ids_zero": ("Buffer is not DMA-BUF backed",
                          "vsockenc fell back to resource_id=0 because buffers are not DMA-BUF backed; use scanout mode"),
    "qemu_ignores_zero": ("sent: 48584652", "FRAME_REQUEST handler"),
    "qemu_accepts_zero": ("received: 48584652", "DisplaySurface"),
    "stale_qemu": ("[HELIX] VERSION: 2026-02-04-stale-build",
                   "installed QEMU is stale: rebuild and run fix-qemu-paths.sh"),
    "sysroot_paths": ("install name", "fix-qemu-paths.sh"),
    "container_oom": ("OOM-killed", "memory"),
    "slow_after_running": ("session 2", "restart the VM"),
    # provider helix-app: Helix.app's bundled QEMU is a real qemu-system-aarch64
    "qemu_exit_at_start": ("-spice", "qemu-utm"),
    "qemu_deadlock": ("sends no greeting", "BQL"),
    "edk2_no_boot": ("Out Of Resource", "hostmem"),
    "stale_qemu_pid": ("a stale QEMU", "kill"),
    "helix_app_running": ("Helix.app is running", "quit app"),
}

#: run_once arguments a fault needs besides the defaults: resource_ids_zero is vsockenc's fault (shm
#: mode); a VM that slows down as it runs shows from its second session; with no agent, ``spectask start
#: --wait`` gives up (here after 3 s, within the harness's session timeout) and prints the task's id.
RUN_OPTIONS: dict[str, dict] = {
    "resource_ids_zero": {"target": {"video_mode": "shm"}},
    "no_agent": {"target": {"cli_wait_timeout": 3}},
    "slow_after_running": {"sessions": 2},
    **{fault: {"target": {"provider": "helix-app"}} for fault in HELIX_APP_FAULTS},
}
#: Why the Helix.app faults cannot run here (None: they can).
NO_QEMU = real_qemu_missing()

#: Rough seconds per run on a 2-core host, only to start the longest first.
COST = {
    "slow_after_running": 17, "api_5xx": 13, "no_container": 12, "vkcube_dies": 12, "corrupt_h264": 12,
    "frozen": 12, "low_fps": 12, "frames_stop": 12, "qemu_ignores_zero": 12, "black": 11, "replay_burst": 10,
    "resource_ids_zero": 10, "container_oom": 9, "exec_forbidden": 9, "stale_qemu": 9, "qemu_accepts_zero": 9,
    "superseded": 8, "utmctl_osstatus": 8, "ssh_refused": 8, "ssh_blackhole": 8, "stream_error": 7, "ws_503": 7,
    "vm_crash_stream": 6, "stack_fails": 3, "host_key_changed": 2, "vm_crash_boot": 2, "sysroot_paths": 2,
    "utmctl_no_gui": 1, "product_not_rerun": 20, "osstatus_rerun": 16,
    "qemu_deadlock": 14, "edk2_no_boot": 13, "qemu_exit_at_start": 3, "stale_qemu_pid": 3, "helix_app_running": 3,
    "reworded:api_5xx": 14, "reworded:ssh_refused": 9, "reworded:stack_fails": 4, "reworded:vm_crash_boot": 3,
    "reworded:host_key_changed": 3, "at-minimum:frames_stop": 16, "at-minimum:frozen": 16,
}
#: All fault tests together, on this 2-core host (issue budget: 4 minutes).
BUDGET_S = 240.0


def cost(key) -> float:
    return COST.get(key[1], 10)


#: Each fault run keeps its artifacts (the recording) here until the module ends.
_ARTIFACTS = tempfile.TemporaryDirectory(prefix="helix-e2e-faults-")


def make_job(kind: str, value: str):
    if kind == "fault":
        if value in HELIX_APP_FAULTS and NO_QEMU:
            return lambda: None  # the test skips and says why
        out = Path(_ARTIFACTS.name) / value
        out.mkdir(parents=True, exist_ok=True)
        return lambda: run_once(faults=[value], stream_duration=3.0, artifacts_dir=out, **_options(value))
    if value.startswith(REWORDED):
        return lambda: run_reworded(value[len(REWORDED):])
    if value.startswith(AT_MINIMUM):
        fault = value[len(AT_MINIMUM):]
        return lambda: run_once(faults=[fault], stream_duration=MIN_DURATION_S, target={"delay_scale": 1.0})
    return lambda: run_plugin(value)


def _options(fault: str) -> dict:
    opts = dict(RUN_OPTIONS.get(fault, {}))
    opts.setdefault("target", None)
    return opts


def test_every_fault_has_an_expectation():
    assert set(EXPECT) == set(FAULTS)
    for name, expected in EXPECT.items():
        # a fault names a cause of the one table; only the one that is not a fault names none
        assert (FAULTS[name].cause is None) is (expected is None), name
        assert FAULTS[name].cause is None or FAULTS[name].cause in CAUSES, name


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_is_detected_and_explained(fault, fault_runs):
    if fault in HELIX_APP_FAULTS and NO_QEMU:
        pytest.skip(NO_QEMU)
    result = fault_runs.result(("fault", fault))
    text = json.dumps(result.as_dict(), default=str)
    # Never hangs: each phase ends within its own timeout (+ slack), the run within the sum.
    assert not result.overruns, result.overruns
    assert result.elapsed_s <= result.budget_s, (result.elapsed_s, result.budget_s)
    assert redact(text) == text, "a secret reached the run's findings"
    expected = EXPECT[fault]
    if expected is None:
        assert result.verdict is None, result.verdict.summary()
        assert result.findings and all(f.ok for f in result.findings), [f.as_dict() for f in result.failed]
        return
    evidence, hint = expected
    cause = FAULTS[fault].cause
    v = result.verdict
    assert v is not None, f"{fault} went unnoticed: {[f.as_dict() for f in result.findings]}"
    assert (v.layer, v.cause) == (CAUSES[cause].layer, cause), v.as_dict()
    assert any(evidence in line for line in v.evidence), v.as_dict()
    assert hint in v.hint, v.as_dict()
    assert v.transient is (cause in TRANSIENT_CAUSES), v.as_dict()


def test_fault_runs_fit_the_budget(fault_runs):
    wall = fault_runs.wall_s()
    scale = float(os.environ.get("HELIX_E2E_TIMEOUT_SCALE") or 1.0)
    assert wall <= BUDGET_S * max(1.0, scale), f"the fault runs took {wall:.0f}s (budget {BUDGET_S:.0f}s)"


# -- the pytest plugin: --sim-fault / HELIX_E2E_SIM_FAULT, verdict in every report, --rerun-infra -------------


@dataclass
class PluginRun:
    returncode: int
    output: str
    metrics: dict
    html: str


#: case → (extra pytest arguments, extra environment)
PLUGIN_CASES = {
    # A transient OSStatus outlasts utmctl's retries, fails the boot, and one rerun passes.
    "osstatus_rerun": (["--sim-fault", "utmctl_osstatus", "--rerun-infra", "1", "-k", "vm_boots"], {}),
    # A product failure is never rerun, whatever --rerun-infra says.
    "product_not_rerun": (["--rerun-infra", "2", "-k", "vkcube"], {"HELIX_E2E_SIM_FAULT": "exec_forbidden"}),
}


def run_plugin(case: str) -> PluginRun:
    args, env_extra = PLUGIN_CASES[case]
    with tempfile.TemporaryDirectory(prefix="helix-e2e-plugin-") as tmp:
        cmd = pytest_argv("-o", "console_output_style=classic", *args, report_dir=Path(tmp) / "reports",
                          stream_duration=3)
        env = child_env(env_extra)
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        latest = Path(tmp) / "reports/latest"
        metrics = json.loads((latest / "metrics.json").read_text()) if (latest / "metrics.json").exists() else {}
        html = (latest / "report.html").read_text() if (latest / "report.html").exists() else ""
    return PluginRun(proc.returncode, proc.stdout + proc.stderr, metrics, html)


@pytest.mark.parametrize("case", list(PLUGIN_CASES))
def test_plugin_reports_the_verdict(case, fault_runs):
    run = fault_runs.result(("case", case))
    out = run.output
    if case == "osstatus_rerun":
        assert run.returncode == 0, out[-3000:]
        summary = out.strip().splitlines()[-1]
        assert "1 passed" in summary and "1 rerun" in summary and "failed" not in summary, out[-3000:]
        assert "reran tests/streaming/test_streaming.py::test_vm_boots_without_crash (attempt 1): utm/utmctl_osstatus" \
            in out, out[-3000:]
        assert run.metrics["triage"] is None  # the rerun passed
        reruns = run.metrics["rerun_infra"]
        assert reruns["allowed"] == 1 and "product failures are never retried" in reruns["policy"]
        assert [r["verdict"] for r in reruns["reruns"]] == ["utm/utmctl_osstatus"]
        assert "--rerun-infra 1" in run.html and "utm/utmctl_osstatus" in run.html
    else:
        assert run.returncode == 1, out[-3000:]
        assert "rerun" not in out.split("short test summary")[-1], out[-3000:]
        assert "root cause: desktop/exec_forbidden" in out, out[-3000:]
        triage = run.metrics["triage"]
        assert (triage["layer"], triage["cause"], triage["transient"]) == ("desktop", "exec_forbidden", False)
        assert any("command not allowed: vkcube" in e for e in triage["evidence"])
        assert run.metrics["rerun_infra"]["reruns"] == []
        assert "<h2>Verdict</h2>" in run.html and "exec_forbidden" in run.html
        assert run.html.index("<h2>Verdict</h2>") < run.html.index("<h2>Provenance</h2>")


# -- verdicts never depend on the wording of a message ---------------------------------------------------

# -- every fault gives its own cause at every stream duration the harness accepts -------------------------

#: The shortest stream the harness accepts (the 2 s warm-up + one whole 1-s window), and the stream faults
#: whose timing could meet the end of such a stream. These run with the simulator's real (unscaled) fault
#: timing, as `pytest -m streaming --stream-duration 3` would: frames stop 2 s in, 1 s before the end.
MIN_DURATION_S = StreamConfig().warmup + MIN_MEASURED_S
AT_MINIMUM = "at-minimum:"
MIN_DURATION_FAULTS = ("frames_stop", "frozen")


def test_shorter_streams_are_refused_with_the_reason():
    with pytest.raises(ConfigError) as err:
        StreamConfig(duration=MIN_DURATION_S - 0.5)
    assert "at least warmup" in err.value.message and "--stream-duration" in (err.value.hint or "")


@pytest.mark.parametrize("case", [AT_MINIMUM + f for f in MIN_DURATION_FAULTS])
def test_fault_keeps_its_cause_at_the_minimum_duration(case, fault_runs):
    fault = case[len(AT_MINIMUM):]
    result = fault_runs.result(("case", case))
    v = result.verdict
    assert v is not None, f"{fault} went unnoticed at {MIN_DURATION_S:g} s: {[f.as_dict() for f in result.findings]}"
    assert v.cause == FAULTS[fault].cause, v.as_dict()


#: Faults that break a phase, where a verdict came from an error (not from a check's data) and so from its
#: cause: these are run with every harness message reworded at construction.
REWORDED = "reworded:"
REWORD_FAULTS = ("api_5xx", "ssh_refused", "stack_fails", "vm_crash_boot", "host_key_changed")


def run_reworded(fault: str) -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "tests/faults/reworded_run.py"), fault], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", [REWORDED + f for f in REWORD_FAULTS])
def test_verdict_survives_rewording_every_message(case, fault_runs):
    fault = case[len(REWORDED):]
    got = fault_runs.result(("case", case))
    assert "reworded " in got["message"], got  # the harness's own words really were replaced
    cause = FAULTS[fault].cause
    assert (got["layer"], got["cause"]) == (CAUSES[cause].layer, cause), got


def _reword_chain(exc: BaseException | None, depth: int = 0) -> BaseException | None:
    """A copy of an error chain where every message, ours or a library's, is replaced."""
    if exc is None or depth > 8:
        return None
    text = "reworded " + hashlib.sha1(str(exc).encode()).hexdigest()[:10]
    try:
        new = copy.copy(exc)
        new.args = (text,)
    except Exception:  # noqa: BLE001 - an exception type that cannot be copied: any error will do
        new = RuntimeError(text)
    if hasattr(new, "message"):
        new.message = text
    new.__cause__ = _reword_chain(exc.__cause__, depth + 1)
    new.__context__ = _reword_chain(exc.__context__, depth + 1)
    new.__suppress_context__ = exc.__suppress_context__
    return new


def test_classification_reads_no_message_text(fault_runs):
    """Every phase a fault broke classifies the same once every message in its error chain is replaced."""
    checked = []
    for fault in FAULTS:
        result = fault_runs.result(("fault", fault))
        if result is None or result.broken is None:  # None: a Helix.app fault on a host without QEMU
            continue  # its verdict came from a check's data, not from an error
        _, exc = result.broken
        original, reworded = from_error("phase", exc), from_error("phase", _reword_chain(exc))
        assert "reworded " in reworded.message, fault
        assert (reworded.layer, reworded.cause) == (original.layer, original.cause), (fault, original.as_dict(),
                                                                                     reworded.as_dict())
        checked.append(fault)
    # The faults that break a phase (boot, ssh, stack, session, stream) were all among them (utmctl_no_gui
    # and the other preflight faults are caught by the doctor, whose checks name their causes as data).
    assert {"vm_crash_boot", "ssh_refused", "ssh_blackhole", "stack_fails", "api_5xx", "no_container",
            "ws_503", "host_key_changed"} <= set(checked), checked


# -- the offline verdict equals the live one ---------------------------------------------------------------


def test_analyze_reaches_the_live_stream_verdict(fault_runs):
    """`helix-e2e analyze` of each fault's recording gives the same stream verdict facts (stream errors,
    protocol errors, viewer events, unknown types, statuses before the first frame, time to first frame)
    as the live capture did: one sans-I/O core on both sides."""
    from harness.analysis.recording import VERDICT_KEYS, analyze_recording

    compared = []
    for fault in FAULTS:
        live = fault_runs.result(("fault", fault)).stream
        if live is None or not Path(live["recording"]).exists():
            continue  # no stream ran (an earlier phase broke)
        offline = analyze_recording(live["recording"], decode=False)
        for key in VERDICT_KEYS:
            assert offline[key] == live[key], (fault, key, offline[key], live[key])
        compared.append(fault)
    assert {"stream_error", "frames_stop", "superseded", "corrupt_h264", "replay_burst", "low_fps"} <= set(compared), \
        compared
def test_no_qemu_outlives_the_fault_runs(fault_runs):
    """The Helix.app fault runs started real QEMUs (the harness's, a stale one): none may be left."""
    if NO_QEMU:
        pytest.skip(NO_QEMU)
    fault_runs.wall_s()  # every run of the module has ended
    import psutil

    left = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "qemu-system" in " ".join(proc.cmdline()[:1]) and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{proc.pid} {' '.join(proc.cmdline())[:200]}")
        except psutil.Error:
            continue
    assert not left, left
