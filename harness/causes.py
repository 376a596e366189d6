"""The one table of causes: every reason a run can fail, the layer it blames, whether it is
transient, how it ranks in triage, and what to do about it.

A cause is attached where a failure is known: a driver raises its error with ``cause=…`` (the SSH
driver knows "refused" from "no banner"), a check returns a finding naming its cause, a simulator
fault names the cause it must produce. Everything else (the layer, the hint, the ranking, whether
``--rerun-infra`` may rerun it) is looked up here, so adding a cause is one row, and no verdict ever
depends on the wording of a message.

Ranks: a *catastrophe* explains every failure after it (QEMU died, the VM stopped, SSH was lost);
a *symptom* follows from other failures and is the verdict only when nothing else failed; every
other cause is an ordinary *failure*, ranked by layer (outermost first).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Layers a failure can be blamed on (public: metrics.json ``triage.layer``), outermost first.
LAYERS = ("host", "utm", "vm", "ssh", "stack", "api", "session", "desktop", "encoder", "frame_export", "stream",
          "client")

FAILURE, CATASTROPHE, SYMPTOM = "failure", "catastrophe", "symptom"


@dataclass(frozen=True, slots=True)
class Cause:
    name: str
    layer: str
    hint: str = ""
    transient: bool = False  # goes away by itself: only these are rerun by --rerun-infra
    rank: str = FAILURE

    def __post_init__(self) -> None:
        if self.layer not in LAYERS:
            raise ValueError(f"cause {self.name}: layer {self.layer!r} is not one of {LAYERS}")
        if self.rank not in (FAILURE, CATASTROPHE, SYMPTOM):
            raise ValueError(f"cause {self.name}: unknown rank {self.rank!r}")


_ROWS: tuple[Cause, ...] = (
    # -- host: the Mac, its QEMU build, the preflight -----------------------------------------------
    Cause("qemu_dylib_paths", "host", "QEMU still loads build-machine sysroot dylibs: run fix-qemu-paths.sh on the "
          "installed QEMU (otool -L must show only @rpath/… paths), then restart the VM"),
    Cause("qemu_dylib_missing", "host", "dyld could not load QEMU's libraries (build-machine sysroot paths): run "
          "fix-qemu-paths.sh on the installed QEMU and check `otool -L` shows only @rpath/… paths", rank=CATASTROPHE),
    Cause("qemu_version", "host", "the QEMU binary carries no usable VERSION marker: rebuild it from the helix "
          "branch of qemu-utm"),
    Cause("stale_qemu", "host", "installed QEMU is stale: rebuild and run fix-qemu-paths.sh, then restart the VM"),
    Cause("no_hvf", "host", "this Mac has no Hypervisor.framework support: run on Apple Silicon"),
    Cause("frame_export_port_busy", "host", "another process holds QEMU's frame-export port: stop it or change "
          "[frame_export] port"),
    Cause("usercreds", "host", "create ~/helix/.env.usercreds with HELIX_API_KEY, HELIX_URL, HELIX_PROJECT, "
          "HELIX_UBUNTU_AGENT"),
    Cause("low_disk", "host", "free disk space for the VM and the reports"),
    Cause("low_memory", "host", "free memory for the VM (close other VMs or apps)"),
    Cause("preflight_failed", "host", "run `helix-e2e doctor` and fix what it reports"),
    Cause("config_failed", "host", "fix the target config (the error names the key)"),
    Cause("host_failed", "host", "fix the Mac host setup (run `helix-e2e doctor`)"),
    # Helix.app (provider "helix-app"): the harness runs the app's bundled QEMU itself (helix-app-vm.md §5 B)
    Cause("helix_app_running", "host", "Helix.app is running: its killStaleQEMU would SIGKILL the harness's QEMU and "
          "it uses the same ports. Quit it (menu Helix → Quit, or `osascript -e 'quit app \"Helix\"'`), then kill "
          "the pid in the evidence if it stays (SIGTERM only stops its VM), and rerun"),
    Cause("stale_qemu_pid", "host", "a QEMU from an earlier run (or from Helix.app) still holds the QMP port or "
          "qemu.pid: stop the pid in the evidence (`kill PID`; `lsof -ti tcp:41444` finds it), remove the stale "
          "qemu.pid, and rerun"),
    Cause("helix_app_port_busy", "host", "another process holds one of Helix.app's ports (SSH 41222, API 41080, "
          "QMP 41444, frame export 41937): stop it, or move the ports in [vm]"),
    Cause("helix_app_bundle", "host", "the bundled QEMU is not the 75 KB wrapper that loads "
          "libqemu-aarch64-softmmu.dylib via rpath @executable_path/../Frameworks: reinstall Helix.app or fix "
          "[vm] app / [vm] qemu"),
    Cause("helix_app_files", "host", "a file Helix.app's QEMU needs is missing (EDK2 firmware, the Vulkan ICD, the "
          "VM disk): reinstall Helix.app, let it download the VM image once, or fix [vm] firmware_dir / vulkan_icd "
          "/ vm_dir"),
    # -- utm: UTM.app and utmctl -------------------------------------------------------------------
    Cause("utmctl_no_gui", "utm", "run the harness in the Mac's logged-in GUI session (utmctl needs Apple Events), "
          "and grant the terminal Automation permission for UTM"),
    Cause("utmctl_osstatus", "utm", "transient infrastructure failure: rerun (pytest --rerun-infra N reruns only "
          "these); if it persists, answer UTM's Automation permission dialog in the GUI session", transient=True),
    Cause("utmctl_event_error", "utm", "UTM refused the Apple Event: read the OSStatus in the evidence"),
    Cause("utmctl_unusable", "utm", "check UTM.app and utmctl in the GUI session"),
    Cause("utmctl_failed", "utm", "check UTM.app and utmctl in the GUI session"),
    # -- vm: the QEMU process and the guest as a whole ------------------------------------------------
    Cause("vm_crashed_boot", "vm", "QEMU crashed while booting: read the QEMULauncher .ips report",
          rank=CATASTROPHE),
    Cause("qemu_crashed", "vm", "QEMU crashed: read the QEMULauncher .ips report and QEMU's helix-debug.log",
          rank=CATASTROPHE),
    Cause("vm_crashed", "vm", "the VM crashed mid-run: read the QEMULauncher .ips report (its crashed thread names the "
          "failing QEMU code) and the end of helix-debug.log", rank=CATASTROPHE),
    Cause("vm_not_started", "vm", "the VM is not running after boot: read UTM's window and QEMU's log",
          rank=CATASTROPHE),
    Cause("boot_failed", "vm", "read the VM's crash reports and QEMU's log"),
    Cause("boot_timeout", "vm", "the VM did not finish booting within the boot phase's timeout and nothing crashed: "
          "on a slow host raise [timeouts] boot or --timeout-scale; otherwise look at the VM's console in UTM"),
    Cause("qemu_exit_at_start", "vm", "QEMU exited as it started: read its last stderr lines in the evidence "
          "(`-spice: invalid option` or an unknown property: not Helix.app's qemu-utm build, set [vm] qemu to the "
          "bundled one; SIGKILL / `Code Signature Invalid`: re-sign the app; `Could not open …edk2…`: firmware "
          "missing)", rank=CATASTROPHE),
    Cause("edk2_no_boot", "vm", "QEMU runs and answers QMP but the guest never answered SSH (Helix.app's `boot timed "
          "out`): EDK2 most likely ran out of PCI resources (hostmem=512M with ipa-granule-size=0x1000 on M1: "
          "`Out Of Resource!`, a UEFI shell, no virtio disk). Read QEMU's console log; use [vm] hostmem = \"256M\"",
          rank=CATASTROPHE),
    Cause("qemu_deadlock", "vm", "QEMU's main loop is deadlocked (the BQL deadlock: alive at ~0% CPU while SSH, HTTP "
          "and the QMP greeting all time out). Sample it before killing it (`sample PID 5` or `lldb -p PID -o 'bt "
          "all'`: virgl_resource_destroy_func → CFRelease holding the BQL), then kill it; run a qemu-utm with the BQL "
          "fix (Helix.app >= 2.7.10) and keep hostmem 1024M on hosts with more than 16 GB", rank=CATASTROPHE),
    Cause("qemu_hung", "vm", "QEMU spins the CPU without answering QMP, SSH or HTTP: sample it (`sample PID 5`), then "
          "kill it and report the stacks", rank=CATASTROPHE),
    Cause("guest_panicked", "vm", "QMP reported GUEST_PANICKED: the guest kernel panicked; read QEMU's console log "
          "(the serial output) for the panic", rank=CATASTROPHE),
    Cause("qmp_failed", "vm", "QEMU's QMP monitor did not answer as expected: read QEMU's stderr log"),
    Cause("power_off_failed", "vm", "the VM did not power off: stop it in UTM by hand"),
    Cause("slow_after_running", "vm", "each new session on this VM is slower: restart the VM between runs and report "
          "it"),
    # -- ssh -----------------------------------------------------------------------------------------
    Cause("ssh_refused", "ssh", "nothing listens on the guest's SSH port (sshd not up yet, or UTM's port forward "
          "missing); transient while booting: rerun", transient=True),
    Cause("ssh_unresponsive", "ssh", "the SSH port accepts connections but never sends a banner: a wedged sshd or a "
          "stale port forward; restart the VM / check UTM's port forward to the guest's :22"),
    Cause("host_key_changed", "ssh", "the guest's host key changed: if the VM was re-created, remove its known_hosts "
          "line (ssh-keygen -R '[HOST]:PORT'); otherwise treat it as an attack"),
    Cause("ssh_key", "ssh", "set [ssh] key to an existing private key"),
    Cause("known_hosts", "ssh", "add the guest's host key to known_hosts or set [ssh] trust_on_first_use"),
    Cause("ssh_lost", "ssh", "SSH to the guest died mid-run: the VM hung or its network went away", rank=CATASTROPHE),
    Cause("ssh_failed", "ssh", "check the guest's sshd and UTM's port forward"),
    # -- stack / api -----------------------------------------------------------------------------------
    Cause("stack_start_failed", "stack", "`./stack start` failed: read the compose output in the evidence"),
    Cause("no_sandbox", "stack", "COMPOSE_PROFILES=code-macos must be set so the sandbox-macos service runs"),
    Cause("stack_failed", "stack", "read the compose output and `docker compose ps` in the guest"),
    Cause("api_5xx", "api", "the API answers 5xx: read `docker compose logs api` in the guest"),
    Cause("api_unreachable", "api", "read the API container's logs"),
    Cause("api_failed", "api", "read the API container's logs"),
    # -- session -----------------------------------------------------------------------------------------
    Cause("no_session_id", "session", "`spectask start` gave no ses_ id: read its output"),
    Cause("no_container", "session", "the session never got a desktop container: read the sandbox's logs "
          "(docker compose logs sandbox-macos)"),
    Cause("cli_build_failed", "session", "is Go installed in the guest and does ~/helix/api build by hand?"),
    Cause("session_start_timeout", "session", "`spectask start --wait` did not return: the session never got ready"),
    Cause("no_agent", "session", "the task has no agent: set DefaultHelixAppID on the project (Project settings → "
          "default agent), or start it with an agent (`spectask start --agent`, older CLIs)"),
    Cause("task_failed", "session", "the spec task failed before it got a session: read its error in the evidence "
          "and the API's logs"),
    Cause("session_failed", "session", "read the sandbox's logs"),
    # -- desktop -------------------------------------------------------------------------------------------
    Cause("container_not_running", "desktop", "read the desktop container's logs"),
    Cause("container_oom", "desktop", "the desktop container was OOM-killed: give the VM/desktop more memory",
          rank=CATASTROPHE),
    Cause("container_restarted", "desktop", "the desktop container restarted mid-run: read its logs",
          rank=CATASTROPHE),
    Cause("exec_forbidden", "desktop", "the desktop's exec allowlist refused vkcube"),
    Cause("vkcube_failed", "desktop", "vkcube did not start"),
    Cause("vkcube_dies", "desktop", "vkcube exited: check the desktop's Vulkan/Wayland setup (docker logs of the "
          "desktop)"),
    Cause("desktop_unreachable", "desktop", "read the desktop container's logs", rank=SYMPTOM),
    Cause("static_screen", "desktop", "vkcube is not rendering into the stream: check the desktop's compositor",
          rank=SYMPTOM),
    Cause("desktop_failed", "desktop", "read the desktop container's logs"),
    # -- encoder -----------------------------------------------------------------------------------------
    Cause("no_idr_first", "encoder", "the encoder's first frame must be an IDR with SPS and PPS"),
    Cause("corrupt_h264", "encoder", "the encoder produced damaged access units: check VideoToolbox / the encoder's "
          "errors"),
    Cause("no_resource_ids", "encoder", "is GST_DEBUG=vsockenc:5 set in the desktop container?"),
    Cause("resource_ids_zero", "encoder", "vsockenc fell back to resource_id=0 because buffers are not DMA-BUF "
          "backed; use scanout mode"),
    Cause("cli_h264_no_headers", "encoder", "the CLI's .h264 must start with SPS/PPS"),
    # -- frame_export: QEMU's HXFR port --------------------------------------------------------------------
    Cause("qemu_ignored", "frame_export", "this QEMU (v10-style) has no FRAME_REQUEST handler: re-add the "
          "resource_id=0 reject path"),
    Cause("qemu_accepted", "frame_export", "this QEMU (v7-style) falls back to the DisplaySurface instead of "
          "rejecting resource_id=0"),
    Cause("qemu_unreachable", "frame_export", "QEMU's frame export is not listening: check helix-port / "
          "HELIX_FRAME_EXPORT_PORT"),
    Cause("qemu_protocol_error", "frame_export", "QEMU's frame export answered bytes that are not HXFR: check the "
          "port and the QEMU build"),
    Cause("qemu_reset", "frame_export", "QEMU's frame export reset the connection: QEMU may have crashed on the "
          "request (read the .ips report and helix-debug.log)"),
    Cause("qemu_unexpected_msg", "frame_export", "QEMU sent the scanout stream something other than "
          "FRAME_RESPONSE, which the API treats as fatal: check the QEMU build's frame-export replies"),
    Cause("bad_error_code", "frame_export", "the frame export's ERROR reply must carry a negative error code"),
    # -- stream --------------------------------------------------------------------------------------------
    Cause("ws_upgrade_refused", "stream", "the API did not upgrade the WebSocket (`Sandbox not connected`: no tunnel "
          "to the desktop)"),
    Cause("no_first_frame", "stream", "the server kept the socket open (status `starting_video`) but no video "
          "frame came within the first-frame timeout: read the desktop's pipeline logs (scanout source, encoder)"),
    Cause("stream_error", "stream", "the desktop could not start its video pipeline: read the StreamError text and "
          "the desktop logs"),
    Cause("superseded", "stream", "another viewer with the same client_id took the stream over"),
    Cause("frames_stop", "stream", "frames stopped while the socket stayed open: the desktop's pipeline stalled"),
    Cause("low_fps", "stream", "the stream is below the FPS band: check the desktop's frame rate and the encoder "
          "load"),
    Cause("high_fps", "stream", "the stream is above the FPS band: check the desktop's frame rate settings"),
    Cause("fps_dip", "stream", "a 1-s window fell far below the band: check the host's load during the stream"),
    Cause("stall", "stream", "frames stopped arriving for a while: check the network path and the encoder"),
    Cause("frozen", "stream", "the picture froze while frames kept coming: the compositor or app stopped rendering"),
    Cause("black", "stream", "the stream carried black pictures: the capture source lost the screen"),
    Cause("protocol_error", "stream", "the server sent malformed stream messages: read the recording"),
    Cause("cli_no_frames", "stream", "`helix spectask stream` received no frames: read its output", rank=SYMPTOM),
    Cause("stream_ended", "stream", "read the stream recording and the desktop's pipeline logs", rank=SYMPTOM),
    Cause("no_frames", "stream", "read the stream recording and the desktop's pipeline logs", rank=SYMPTOM),
    Cause("too_few_frames", "stream", "stream longer (--stream-duration) or check the frame rate", rank=SYMPTOM),
    Cause("stream_failed", "stream", "read the stream recording and the desktop's pipeline logs"),
    Cause("protocol_failed", "stream", "read the stream recording"),
    # -- client: the harness's own side ------------------------------------------------------------------------
    Cause("no_decode", "client", "the stream was not decoded: read the analysis error in the log", rank=SYMPTOM),
    Cause("cli_failed", "client", "the CLI stream did not run: read its error", rank=SYMPTOM),
    Cause("cli_disagrees", "client", "the CLI's statistics disagree with the native capture: compare both "
          "recordings", rank=SYMPTOM),
    Cause("cli_h264_missing", "client", "the CLI's .h264 could not be fetched from the guest", rank=SYMPTOM),
    Cause("no_native_fps", "client", "the native capture measured no FPS to compare with", rank=SYMPTOM),
    Cause("internal_error", "client", "a harness bug: report it with the log", rank=SYMPTOM),
    Cause("run_interrupted", "client", "the run was interrupted (Ctrl-C, SIGTERM, a CI cancel) before every test "
          "ran: what did run proves nothing about the rest; rerun it"),
    Cause("tests_not_run", "client", "the session stopped before every test ran (a session timeout, -x or a crash "
          "of the harness): the run is incomplete; rerun it"),
    Cause("sim_failed", "client", "the simulator did not start: run `python -m helix_sim up --json` by hand"),
    Cause("teardown_failed", "client", "a problem on the harness side: read its log"),
)

#: name → Cause. The one table.
CAUSES: dict[str, Cause] = {c.name: c for c in _ROWS}

#: Catastrophes, most basic first: a lower index explains a higher one.
CATASTROPHE_ORDER: tuple[str, ...] = ("qemu_dylib_missing", "qemu_exit_at_start", "vm_crashed_boot",
                                      "edk2_no_boot", "qemu_deadlock", "qemu_hung", "guest_panicked", "qemu_crashed",
                                      "vm_crashed", "vm_not_started", "ssh_lost", "container_oom",
                                      "container_restarted")

#: The cause of a phase that failed with an error that carries none (the phase is all we know).
PHASE_CAUSES: dict[str, str] = {
    "config": "config_failed", "preflight": "preflight_failed", "host": "host_failed", "utm": "utmctl_failed",
    "power_off": "power_off_failed", "boot": "boot_failed", "ssh": "ssh_failed", "stack": "stack_failed",
    "api": "api_unreachable", "build": "session_failed", "session": "session_failed", "desktop": "desktop_failed",
    "stream": "stream_failed", "protocol": "protocol_failed", "teardown": "teardown_failed", "sim": "sim_failed",
}

#: What to do when the cause is unknown, per layer.
LAYER_HINTS: dict[str, str] = {
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


def cause(name: str) -> Cause:
    """The table row of ``name``; an unknown name is a harness bug (KeyError names it)."""
    try:
        return CAUSES[name]
    except KeyError:
        raise KeyError(f"unknown cause {name!r}: add it to harness/causes.py") from None


def phase_cause(phase: str | None) -> Cause:
    """The fallback cause of a failed phase that raised no cause of its own."""
    return CAUSES[PHASE_CAUSES.get(phase or "", "internal_error")]


def transient_causes() -> frozenset[str]:
    return frozenset(c.name for c in _ROWS if c.transient)
