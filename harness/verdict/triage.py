"""One verdict per run: which layer broke, why, the lines that prove it, and what to do.

:func:`triage` reads the run's :class:`~harness.verdict.checks.Finding` list (what the checks, or the tests,
produced) and the strategy (its broken phase and its preflight), and picks the *root cause*:

1. a failed preflight (the doctor) — nothing after it ran;
2. a catastrophe that explains everything after it: QEMU could not start or crashed, the VM stopped,
   the desktop container was OOM-killed or restarted, SSH died;
3. any other failure, outermost layer first (``host`` … ``client``, :data:`harness.verdict.checks.LAYERS`):
   a broken ``ssh`` phase explains the ``stream`` checks that could not run;
4. symptoms last (a static screen, an undecodable or missing stream, the CLI disagreeing): they are
   the verdict only when nothing else failed.

Every other failed check is listed in ``explains``. A verdict is *transient* when its layer is
``host``, ``utm`` or ``ssh`` and its cause is one that goes away by itself (an Apple Event OSStatus,
SSH refused while the guest boots): only those are rerun by ``--rerun-infra``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from .checks import LAYERS, Finding, from_doctor, from_error

__all__ = ["Verdict", "triage", "TRANSIENT_LAYERS", "TRANSIENT_CAUSES", "HINTS", "strategy_findings"]

#: Layers whose failures may be transient infrastructure (issue: --rerun-infra).
TRANSIENT_LAYERS = frozenset({"host", "utm", "ssh"})
#: Causes that go away by themselves: an Apple Event OSStatus (UTM busy, permission dialog), SSH
#: refused while the guest is still booting.
TRANSIENT_CAUSES = frozenset({"utmctl_osstatus", "ssh_refused"})

#: Causes that explain every later failure (the VM, QEMU or the desktop container died), most basic first.
_CATASTROPHES = ("qemu_dylib_missing", "vm_crashed_boot", "qemu_crashed", "vm_crashed", "vm_not_started",
                 "ssh_lost", "container_oom", "container_restarted")
#: Causes that follow from other failures: the verdict only when nothing else failed.
_SYMPTOMS = frozenset({"static_screen", "no_decode", "cli_failed", "cli_disagrees", "cli_no_frames",
                       "cli_h264_missing", "no_native_fps", "stream_ended", "no_frames", "too_few_frames",
                       "internal_error", "desktop_unreachable"})

#: What to do, per cause, when the finding carries no hint of its own.
HINTS = {
    "qemu_dylib_paths": "QEMU still loads build-machine sysroot dylibs: run fix-qemu-paths.sh on the installed "
                        "QEMU (otool -L must show only @rpath/… paths), then restart the VM",
    "qemu_dylib_missing": "dyld could not load QEMU's libraries: run fix-qemu-paths.sh on the installed QEMU",
    "stale_qemu": "installed QEMU is stale: rebuild and run fix-qemu-paths.sh, then restart the VM",
    "utmctl_no_gui": "run the harness in the Mac's logged-in GUI session (utmctl needs Apple Events), "
                     "and grant the terminal Automation permission for UTM",
    "utmctl_osstatus": "UTM refused the Apple Event (OSStatus): transient; rerun (--rerun-infra), and answer "
                       "UTM's Automation permission dialog if one is open",
    "vm_crashed_boot": "QEMU crashed while booting: read the QEMULauncher .ips report",
    "qemu_crashed": "QEMU crashed: read the QEMULauncher .ips report and QEMU's helix-debug.log",
    "vm_crashed": "the VM crashed mid-run: read the QEMULauncher .ips report (its crashed thread names the "
                  "failing QEMU code) and the end of helix-debug.log",
    "ssh_refused": "nothing listens on the guest's SSH port: is sshd up and UTM's port forward to :22 set?",
    "ssh_unresponsive": "the SSH port accepts but never answers: restart the VM, check UTM's port forward",
    "host_key_changed": "the guest's host key changed: if the VM was re-created, remove its known_hosts line "
                        "(ssh-keygen -R '[HOST]:PORT'); otherwise treat it as an attack",
    "stack_start_failed": "`./stack start` failed: read the compose output in the evidence",
    "api_5xx": "the API answers 5xx: read `docker compose logs api` in the guest",
    "no_container": "the session never got a desktop container: read the sandbox's logs "
                    "(docker compose logs sandbox-macos)",
    "exec_forbidden": "the desktop's exec allowlist refused vkcube",
    "vkcube_dies": "vkcube exited: check the desktop's Vulkan/Wayland setup (docker logs of the desktop)",
    "ws_upgrade_refused": "the API did not upgrade the WebSocket (`Sandbox not connected`: no tunnel to the desktop)",
    "stream_error": "the desktop could not start its video pipeline: read the StreamError text and the desktop logs",
    "frames_stop": "frames stopped while the socket stayed open: the desktop's pipeline stalled",
    "superseded": "another viewer with the same client_id took the stream over",
    "low_fps": "the stream is below the FPS band: check the desktop's frame rate and the encoder load",
    "frozen": "the picture froze while frames kept coming: the compositor or app stopped rendering",
    "black": "the stream carried black pictures: the capture source lost the screen",
    "corrupt_h264": "the encoder produced damaged access units: check VideoToolbox / the encoder's errors",
    "resource_ids_zero": "vsockenc fell back to resource_id=0 because buffers are not DMA-BUF backed; use scanout mode",
    "qemu_ignored": "this QEMU (v10-style) has no FRAME_REQUEST handler: re-add the resource_id=0 reject path",
    "qemu_accepted": "this QEMU (v7-style) falls back to the DisplaySurface instead of rejecting resource_id=0",
    "container_oom": "the desktop container was OOM-killed: give the VM/desktop more memory",
    "slow_after_running": "each new session on this VM is slower: restart the VM between runs and report it",
}
_LAYER_HINTS = {
    "host": "fix the Mac host setup (run `helix-e2e doctor`)",
    "utm": "check UTM.app and utmctl in the GUI session",
    "vm": "read the VM's crash reports and QEMU's log",
    "ssh": "check the guest's sshd and UTM's port forward",
    "stack": "read the compose output and `docker compose ps` in the guest",
    "api": "read the API container's logs",
    "session": "read the sandbox's logs",
    "desktop": "read the desktop container's logs",
    "encoder": "read the encoder (vsockenc / QEMU) lines in the logs",
    "frame_export": "check the QEMU build's frame-export handler (helix-e2e probe-frame-export)",
    "stream": "read the stream recording and the desktop's pipeline logs",
    "client": "a problem on the harness side: read its log",
}


@dataclass(frozen=True)
class Verdict:
    """The run's root cause: the blamed ``layer`` (one of ``checks.LAYERS``), a short ``cause``, the
    ``evidence`` (lines and bytes that prove it) and a ``hint`` (what to do)."""

    layer: str
    cause: str
    evidence: tuple[str, ...]
    hint: str
    check: str = ""  # the check (or preflight/phase) that found it
    message: str = ""
    explains: tuple[str, ...] = field(default=())  # the other failed checks this explains

    def __post_init__(self) -> None:
        if self.layer not in LAYERS:
            raise ValueError(f"verdict layer {self.layer!r} is not one of {LAYERS}")
        object.__setattr__(self, "evidence", tuple(self.evidence))
        object.__setattr__(self, "explains", tuple(self.explains))

    @property
    def transient(self) -> bool:
        """Worth a rerun: transient infrastructure, never a product failure."""
        return self.layer in TRANSIENT_LAYERS and self.cause in TRANSIENT_CAUSES

    def summary(self) -> str:
        """One line: ``layer/cause: message (hint: …)``."""
        text = f"{self.layer}/{self.cause}: {self.message or self.check}"
        return f"{text} (hint: {self.hint})" if self.hint else text

    def as_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "cause": self.cause, "evidence": list(self.evidence), "hint": self.hint,
                "check": self.check, "message": self.message, "transient": self.transient,
                "explains": list(self.explains)}


def strategy_findings(strategy: Any) -> list[Finding]:
    """The failures a strategy knows of by itself: its failed preflight checks and its broken phase."""
    out: list[Finding] = []
    if strategy is None:
        return out
    if getattr(strategy, "preflight_failure", ""):
        for check in strategy.facts.get("preflight") or []:
            if check.get("status") == "fail":
                out.append(from_doctor(check))
    broken = getattr(strategy, "broken", None)
    if broken is not None:
        phase, exc = broken
        out.append(from_error(f"phase:{phase}", exc))
    return out


def _rank(item: tuple[int, Finding]) -> tuple[int, int, int, int]:
    index, f = item
    if f.check.startswith("preflight:"):
        tier = 0
    elif f.cause in _CATASTROPHES:
        tier = 1
    elif f.cause in _SYMPTOMS:
        tier = 3
    else:
        tier = 2
    sub = _CATASTROPHES.index(f.cause) if tier == 1 else 0
    layer = LAYERS.index(f.layer) if f.layer in LAYERS else len(LAYERS)
    return tier, sub, layer, index


def triage(findings: Iterable[Finding], strategy: Any = None) -> Verdict | None:
    """The root cause of a run, or ``None`` when every finding is ok.

    ``strategy`` (optional) adds what it knows without a finding: a failed preflight and the broken
    phase (the tests after it were skipped, so no check reported it)."""
    items = list(findings)
    failed = [f for f in items if not f.ok]
    for extra in strategy_findings(strategy):
        if extra.check.startswith("preflight:") and any(f.check == extra.check for f in failed):
            continue
        if extra.check.startswith("phase:") and any(f.cause == extra.cause and f.layer == extra.layer for f in failed):
            continue  # a check already reported the broken phase
        failed.append(extra)
    if not failed:
        return None
    ordered = sorted(enumerate(failed), key=_rank)
    root = ordered[0][1]
    others = []
    for _, f in ordered[1:]:
        if f.check != root.check and f.check not in others:
            others.append(f.check)
    hint = root.hint or HINTS.get(root.cause) or _LAYER_HINTS.get(root.layer, "")
    evidence = list(root.evidence) or [root.message]
    return Verdict(layer=root.layer, cause=root.cause, evidence=tuple(evidence), hint=hint, check=root.check,
                   message=root.message, explains=tuple(others))
