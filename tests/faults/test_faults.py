"""Every known failure is injected, detected, classified and explained, and the harness never hangs.

One test per fault of ``helix_sim.config.FAULTS``: a whole run (own simulator, short stream, the
sim's faster delays) through ``harness.runs.runner.run_once``, whose triage must blame the fault's layer
on the first run, with the cause, the evidence that proves it and a hint; ``replay_burst`` is not a
fault and must pass. Every phase must end within its own timeout (+ slack), so no fault hangs a run.
Two more tests drive the pytest plugin itself (``--sim-fault`` / ``HELIX_E2E_SIM_FAULT``, the verdict
in the terminal, HTML and metrics.json, and ``--rerun-infra``).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from childrun import child_env, pytest_argv
from harness.redact import redact
from harness.runs.runner import run_once
from helix_sim.config import FAULTS
from harness.verdict.triage import TRANSIENT_CAUSES

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]

#: What each fault's verdict must say besides its layer (FAULTS): the cause, a phrase of the evidence
#: (the lines that prove it) and a phrase of the hint (what to do). ``None``: the run must pass.
EXPECT: dict[str, tuple[str, str, str] | None] = {
    "vm_crash_boot": ("vm_crashed_boot", "QEMULauncher-", ".ips"),
    "vm_crash_stream": ("vm_crashed", "QEMULauncher-", ".ips"),
    "utmctl_osstatus": ("utmctl_osstatus", "OSStatus error -1743", "rerun"),
    "utmctl_no_gui": ("utmctl_no_gui", "does not work from SSH sessions", "GUI session"),
    "ssh_refused": ("ssh_refused", "Unable to connect", "port forward"),
    "ssh_blackhole": ("ssh_unresponsive", "SSH to", "never sends a banner"),
    "host_key_changed": ("host_key_changed", "does not match known_hosts", "ssh-keygen -R"),
    "stack_fails": ("stack_start_failed", "port is already allocated", "compose"),
    "api_5xx": ("api_5xx", "kept answering 502", "logs api"),
    "no_container": ("no_container", "Starting desktop container", "sandbox"),
    "exec_forbidden": ("exec_forbidden", "command not allowed: vkcube", "allowlist"),
    "vkcube_dies": ("vkcube_dies", "pkill -0 -f vkcube", "vkcube"),
    "ws_503": ("ws_upgrade_refused", "Sandbox not connected", "Sandbox not connected"),
    "stream_error": ("stream_error", "StreamError: failed to start", "pipeline"),
    "frames_stop": ("frames_stop", "last frame", "stopped sending"),
    "superseded": ("superseded", "4000", "client_id"),
    "low_fps": ("low_fps", "fps_windows=", "FPS band"),
    "frozen": ("frozen", "duration_s", "identical content"),
    "black": ("black", "black_frames=", "black"),
    "corrupt_h264": ("corrupt_h264", "decode_errors=", "encoder"),
    "replay_burst": None,
    "resource_ids_zero": ("resource_ids_zero", "Buffer is not DMA-BUF backed",
                          "vsockenc fell back to resource_id=0 because buffers are not DMA-BUF backed; use scanout mode"),
    "qemu_ignores_zero": ("qemu_ignored", "sent: 48584652", "FRAME_REQUEST handler"),
    "qemu_accepts_zero": ("qemu_accepted", "received: 48584652", "DisplaySurface"),
    "stale_qemu": ("stale_qemu", "[HELIX] VERSION: 2026-02-04-stale-build",
                   "installed QEMU is stale: rebuild and run fix-qemu-paths.sh"),
    "sysroot_paths": ("qemu_dylib_paths", "install name", "fix-qemu-paths.sh"),
    "container_oom": ("container_oom", "OOM-killed", "memory"),
    "slow_after_running": ("slow_after_running", "session 2", "restart the VM"),
}

#: run_once arguments a fault needs besides the defaults: resource_ids_zero is vsockenc's fault (shm
#: mode); a VM that slows down as it runs shows from its second session.
RUN_OPTIONS: dict[str, dict] = {
    "resource_ids_zero": {"target": {"video_mode": "shm"}},
    "slow_after_running": {"sessions": 2},
}

#: Rough seconds per run on a 2-core host, only to start the longest first.
COST = {
    "slow_after_running": 17, "api_5xx": 13, "no_container": 12, "vkcube_dies": 12, "corrupt_h264": 12,
    "frozen": 12, "low_fps": 12, "frames_stop": 12, "qemu_ignores_zero": 12, "black": 11, "replay_burst": 10,
    "resource_ids_zero": 10, "container_oom": 9, "exec_forbidden": 9, "stale_qemu": 9, "qemu_accepts_zero": 9,
    "superseded": 8, "utmctl_osstatus": 8, "ssh_refused": 8, "ssh_blackhole": 8, "stream_error": 7, "ws_503": 7,
    "vm_crash_stream": 6, "stack_fails": 3, "host_key_changed": 2, "vm_crash_boot": 2, "sysroot_paths": 2,
    "utmctl_no_gui": 1, "product_not_rerun": 20, "osstatus_rerun": 16,
}
#: All fault tests together, on this 2-core host (issue budget: 4 minutes).
BUDGET_S = 240.0


def cost(key) -> float:
    return COST.get(key[1], 10)


def make_job(kind: str, value: str):
    if kind == "fault":
        return lambda: run_once(faults=[value], stream_duration=3.0, **_options(value))
    return lambda: run_plugin(value)


def _options(fault: str) -> dict:
    opts = dict(RUN_OPTIONS.get(fault, {}))
    opts.setdefault("target", None)
    return opts


def test_every_fault_has_an_expectation():
    assert set(EXPECT) == set(FAULTS)
    for name, expected in EXPECT.items():
        if expected is None:
            assert FAULTS[name].layer == "client", name  # not a fault: nothing to blame


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_is_detected_and_explained(fault, fault_runs):
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
    cause, evidence, hint = expected
    v = result.verdict
    assert v is not None, f"{fault} went unnoticed: {[f.as_dict() for f in result.findings]}"
    assert (v.layer, v.cause) == (FAULTS[fault].layer, cause), v.as_dict()
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
