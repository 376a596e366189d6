"""Triage: one verdict per run, the root cause first, from findings, typed errors and the doctor."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness.verdict import checks
from harness.verdict.checks import Finding, classify_error, from_doctor, from_error
from harness.drivers.capture import CaptureError
from harness.drivers.ssh import HostKeyError
from harness.drivers.stack import StackError
from harness.drivers.utm import BootError, UtmError, UtmNoGuiError
from harness.errors import CommandError, HarnessError, PhaseTimeout
from harness.strategy import StrategyBroken
from harness.causes import CAUSES
from harness.verdict.triage import Verdict, strategy_findings, triage


def ok(check: str) -> Finding:
    return Finding(check=check, ok=True)


def bad(check: str, layer: str, cause: str, evidence=("line",), hint: str = "") -> Finding:
    return Finding(check=check, ok=False, message=f"{check} failed", layer=layer, cause=cause,
                   evidence=list(evidence), hint=hint)


def fake_strategy(broken=None, preflight=None):
    return SimpleNamespace(broken=broken, record=SimpleNamespace(
        preflight_failure="doctor failed" if preflight else "", preflight=preflight or []))


def test_all_ok_is_no_verdict():
    assert triage([ok("a"), ok("b")]) is None
    assert triage([]) is None
    assert triage([ok("a")], fake_strategy()) is None


def test_a_vm_crash_mid_stream_explains_the_broken_stream():
    findings = [
        ok("vm_boots_without_crash"),
        bad("vkcube_running", "desktop", "desktop_unreachable"),
        bad("stream_has_no_errors", "stream", "stream_ended"),
        bad("no_crash_after_streaming", "vm", "vm_crashed", ["new crash report QEMULauncher-x.ips: ..."]),
        bad("cli_stream_agrees_with_capture", "client", "cli_disagrees"),
    ]
    v = triage(findings)
    assert (v.layer, v.cause, v.check) == ("vm", "vm_crashed", "no_crash_after_streaming")
    assert v.evidence == ("new crash report QEMULauncher-x.ips: ...",)
    assert set(v.explains) == {"vkcube_running", "stream_has_no_errors", "cli_stream_agrees_with_capture"}
    assert "crash" in v.hint and not v.transient


def test_outermost_layer_wins_and_symptoms_come_last():
    findings = [
        bad("stream_fps_in_band", "stream", "low_fps"),
        bad("vkcube_running", "desktop", "exec_forbidden"),
        bad("cli_stream_agrees_with_capture", "client", "cli_disagrees"),
    ]
    assert triage(findings).cause == "exec_forbidden"
    # A static screen (desktop) is a symptom of a frozen stream; a missing decode of no frames at all.
    assert triage([bad("vkcube_running", "desktop", "static_screen"), bad("x", "stream", "frozen")]).cause == "frozen"
    assert triage([bad("vkcube_running", "client", "no_decode")]).cause == "no_decode"  # the only one


def test_oom_explains_the_dead_vkcube_and_the_closed_stream():
    findings = [
        bad("vkcube_running", "desktop", "vkcube_dies"),
        bad("stream_has_no_errors", "stream", "stream_ended"),
        bad("no_crash_after_streaming", "desktop", "container_oom", ["... was OOM-killed"]),
    ]
    assert triage(findings).cause == "container_oom"


def test_the_broken_phase_explains_the_later_skips():
    exc = UtmError("`utmctl start X` reported an Apple Event error (exit 0): Error from event: ... (OSStatus error "
                   "-1743.)", osstatus=-1743, transient=True)
    strat = fake_strategy(broken=("boot", exc))
    v = triage([], strat)  # every test after the boot was skipped: no finding, only the broken phase
    assert (v.layer, v.cause, v.check) == ("utm", "utmctl_osstatus", "phase:boot")
    assert v.transient and "rerun" in v.hint
    assert any("OSStatus error -1743" in e for e in v.evidence)
    # A test that failed on the same broken phase is not counted twice.
    same = from_error("vm_boots_without_crash", exc)
    assert triage([same], strat).check == "vm_boots_without_crash"


def test_a_failed_preflight_is_the_root_cause():
    preflight = [{"name": "dylib_paths", "status": "fail", "finding": "3 install name(s) point into a sysroot",
                  "fix": "run scripts/fix-qemu-paths.sh\nre-sign it"},
                 {"name": "disk", "status": "warn", "finding": "4 GiB free", "fix": ""}]
    v = triage([bad("later", "stream", "low_fps")], fake_strategy(preflight=preflight))
    assert (v.layer, v.cause, v.check) == ("host", "qemu_dylib_paths", "preflight:dylib_paths")
    assert v.hint == "run scripts/fix-qemu-paths.sh ; re-sign it"
    assert [f.check for f in strategy_findings(fake_strategy(preflight=preflight))] == ["preflight:dylib_paths"]


def test_from_doctor_maps_checks_to_layers():
    # The doctor names the cause of a no-GUI utmctl (the preflight record keeps it beside the JSON fields).
    no_gui = {"name": "utmctl", "status": "fail", "finding": "utmctl cannot reach UTM.app: it does not work from SSH "
              "sessions or before a GUI login", "fix": "log in", "cause": "utmctl_no_gui"}
    assert (from_doctor(no_gui).layer, from_doctor(no_gui).cause) == ("utm", "utmctl_no_gui")
    assert from_doctor({"name": "memory", "status": "ok", "finding": "8 GiB"}).ok
    assert from_doctor({"name": "known_hosts", "status": "fail", "finding": "missing"}).layer == "ssh"


def test_default_hints_fill_in_and_verdicts_validate_their_layer():
    v = triage([bad("stale", "host", "stale_qemu")])
    assert v.hint == CAUSES["stale_qemu"].hint == "installed QEMU is stale: rebuild and run fix-qemu-paths.sh, then restart the VM"
    assert triage([bad("x", "encoder", "resource_ids_zero", hint="own hint")]).hint == "own hint"
    with pytest.raises(ValueError):
        Verdict(layer="gpu", cause="x", evidence=(), hint="")
    d = v.as_dict()
    assert set(d) >= {"layer", "cause", "evidence", "hint", "transient"} and d["evidence"] == ["line"]
    assert v.summary().startswith("host/stale_qemu: ")


@pytest.mark.parametrize(
    "exc, layer, cause, transient",
    [
        (UtmNoGuiError("utmctl does not work from SSH sessions"), "utm", "utmctl_no_gui", False),
        (UtmError("OSStatus -1743", osstatus=-1743, transient=True), "utm", "utmctl_osstatus", True),
        (UtmError("OSStatus -10000", osstatus=-10000, transient=False), "utm", "utmctl_event_error", False),
        (HostKeyError("host key does not match known_hosts"), "ssh", "host_key_changed", False),
        # The drivers name these causes where they raise (tests/drivers prove they do); classification looks
        # them up in the table, whatever the message says.
        (PhaseTimeout("SSH to x not ready after 6s; last error: NoValidConnectionsError: [Errno None] Unable to "
                      "connect to port 2222 on 127.0.0.1", phase="ssh", cause="ssh_refused"), "ssh", "ssh_refused",
         True),
        (PhaseTimeout("SSH to x not ready after 6s; last error: SSHException: Error reading SSH protocol banner",
                      phase="ssh", cause="ssh_unresponsive"), "ssh", "ssh_unresponsive", False),
        (BootError("the VM went to `stopped` during boot; crash report: QEMULauncher-1.ips: QEMULauncher Library "
                   "missing dyld4::halt", cause="qemu_dylib_missing"), "host", "qemu_dylib_missing", False),
        (BootError("the VM went to `stopped` during boot; crash report: QEMULauncher-1.ips: QEMULauncher Abort "
                   "trap: 6 qemu_init", cause="vm_crashed_boot"), "vm", "vm_crashed_boot", False),
        (StackError("./stack start failed (exit 1): port is already allocated", cause="stack_start_failed"), "stack",
         "stack_start_failed", False),
        (PhaseTimeout("GET /api/v1/status kept answering 502 for 10s", phase="api", cause="api_5xx"), "api", "api_5xx",
         False),
        (PhaseTimeout("timed out after 8s waiting for the session's dev_container_id", phase="session",
                      cause="no_container"), "session", "no_container", False),
        (CommandError("`helix spectask start` did not finish within 8s", stdout="   Starting desktop container...\n",
                      phase="session", cause="no_container"), "session", "no_container", False),
        (CaptureError("WebSocket upgrade refused: HTTP 503 Service Unavailable: Sandbox not connected",
                      cause="ws_upgrade_refused"), "stream", "ws_upgrade_refused", False),
        # No cause named: the phase decides.
        (PhaseTimeout("anything at all", phase="api"), "api", "api_unreachable", False),
        (HarnessError("anything at all", phase="boot"), "vm", "boot_failed", False),
    ],
)
def test_typed_errors_are_classified(exc, layer, cause, transient):
    f = from_error("check", exc)
    assert (f.layer, f.cause) == (layer, cause)
    assert f.evidence and f.evidence[0].startswith(type(exc).__name__)
    assert triage([f]).transient is transient


def test_command_output_is_evidence_and_bugs_are_internal_errors():
    exc = StackError("./stack start failed (exit 1)", cause="stack_start_failed")
    exc.__cause__ = CommandError("`./stack start` exited 1", stdout="Creating\nError response from daemon: Bind for "
                                 "0.0.0.0:8080 failed: port is already allocated\n", exit_status=1)
    layer, cause, evidence, _ = classify_error(exc)
    assert (layer, cause) == ("stack", "stack_start_failed")
    assert any("port is already allocated" in line for line in evidence)
    f = from_error("check", KeyError("boom"))
    assert (f.layer, f.cause) == ("client", "internal_error")


def test_the_plugin_reruns_only_transient_infrastructure():
    from harness.plugin.hooks import _unwrap
    from harness.plugin.rerun import FINDING_KEY
    from harness.plugin.rerun import rerun_wanted as _rerun_wanted

    original = HostKeyError("host key does not match known_hosts")
    broken = StrategyBroken("the ssh phase failed earlier", phase="ssh")
    broken.__cause__ = original
    assert _unwrap(broken) is original

    def item(finding):
        return SimpleNamespace(stash={FINDING_KEY: finding} if finding else {})

    osstatus = from_error("vm_boots_without_crash", UtmError("OSStatus -1743", osstatus=-1743, transient=True))
    refused = from_error("x", PhaseTimeout("last error: Unable to connect to port 22", phase="ssh", cause="ssh_refused"))
    assert _rerun_wanted(item(osstatus)) and _rerun_wanted(item(refused))
    assert not _rerun_wanted(item(from_error("x", original)))  # infra, but not transient
    assert not _rerun_wanted(item(bad("stream_fps_in_band", "stream", "low_fps")))  # product: never
    assert not _rerun_wanted(item(None))


def _run(fps: float, sid: str, start_s: float = 1.0):
    capture = SimpleNamespace(timing={"fps": fps})
    return SimpleNamespace(capture=capture, session_id=sid, session_start_s=start_s)


def test_sessions_that_slow_down_blame_the_vm():
    s = SimpleNamespace(streams=[_run(40.0, "ses_a"), _run(28.0, "ses_b")], findings={})
    f = checks.sessions_stable(s)
    assert (f.ok, f.layer, f.cause) == (False, "vm", "slow_after_running")
    assert s.findings["sessions_do_not_slow_down"] is f  # recorded for the plugin's triage
    assert checks.sessions_stable(SimpleNamespace(streams=[_run(40.0, "a"), _run(37.0, "b")], findings={})).ok
    assert checks.sessions_stable(SimpleNamespace(streams=[_run(40.0, "a")], findings={})).ok
