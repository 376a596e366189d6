"""The Mac host, by job: "UTM.app" with its VM lifecycle and the utmctl control server (:mod:`.utm_app`),
the utmctl emulator (:mod:`.utmctl`, run as ``python -m helix_sim.host.utmctl``), QEMU's HXFR
frame-export server and its helix-debug.log lines (:mod:`.qemu`), the QEMU framework binary on disk
(:mod:`.qemu_binary`) and the crash reports in DiagnosticReports (:mod:`.crash_reports`).
"""
