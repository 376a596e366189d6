"""The streaming suite must turn red, with the reason, when the product is wrong.

Each case runs the real suite in a child pytest against a simulator set up to misbehave, and reads
the outcome and the reason from the junit.xml and metrics.json it wrote.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from childrun import Finished, run_pytest


def run_suite(tmp_path: Path, *args: str, timeout: float = 240) -> Finished:
    return run_pytest("-o", "console_output_style=classic", "-rfEs", *args, report_dir=tmp_path / "reports",
                      stream_duration=4, timeout=timeout)


@pytest.mark.parametrize(
    "args, failing_test, reason",
    [
        (["--sim-qemu", "v10-ignore", "-k", "qemu_rejects"], "test_qemu_rejects_resource_id_zero",
         "verdict `ignored`: no reply: v10-style builds have no FRAME_REQUEST handler"),
        (["--sim-fps", "20", "-k", "fps_in_band"], "test_stream_fps_in_band", "is outside the 30–60 band"),
    ],
    ids=["qemu-v10-ignore", "sim-fps-20"],
)
def test_suite_fails_with_the_reason(tmp_path, args, failing_test, reason):
    run = run_suite(tmp_path, *args)
    assert run.returncode == 1, run.tail()
    cases = {c.nodeid: c for c in run.junit()}
    nodeid = f"tests/streaming/test_streaming.py::{failing_test}"
    assert nodeid in cases and cases[nodeid].outcome == "failed", run.tail()
    assert reason in cases[nodeid].message, cases[nodeid].message
    assert run.metrics()["tests"][nodeid] == "failed"


def test_a_helix_app_simulator_without_qemu_is_an_error_not_a_run_of_skips(tmp_path):
    """Asked for the Helix.app simulator on a host with no qemu-system-aarch64: every test errors with the
    reason and the run exits non-zero (nine skips and exit 0 would be a green run that did not run)."""
    import sys

    bare = tmp_path / "bin"  # a PATH with this Python and nothing else: no QEMU to find
    bare.mkdir()
    (bare / "python").symlink_to(sys.executable)
    run = run_pytest("--sim-provider", "helix-app", report_dir=tmp_path / "reports", stream_duration=3,
                     env={"PATH": str(bare)}, timeout=120)
    assert run.returncode not in (0, 5), run.tail()
    cases = run.junit()
    assert len(cases) == 9 and {c.outcome for c in cases} == {"error"}, run.tail()
    assert all("qemu-system-aarch64" in c.message for c in cases), cases[0].message


def test_a_run_where_every_test_skipped_is_not_green(tmp_path):
    """Whatever made them skip, nine skips checked nothing: the run exits non-zero and says so."""
    (tmp_path / "skip_everything.py").write_text(
        "import pytest\n\n\ndef pytest_runtest_setup(item):\n    pytest.skip('skipped by the test')\n")
    run = run_pytest("-p", "skip_everything", report_dir=tmp_path / "reports", stream_duration=3,
                     env={"PYTHONPATH": str(tmp_path)}, timeout=120)
    assert run.returncode == 1, run.tail()
    assert {c.outcome for c in run.junit()} == {"skipped"} and len(run.junit()) == 9, run.tail()
    assert "NOTHING CHECKED: all 9 selected streaming tests were skipped" in run.output, run.tail()


def test_a_failed_preflight_fails_the_run_with_the_doctors_finding(tmp_path):
    """A doctor check that fails (here QEMU's dylibs point into a build sysroot) errors every test with its
    finding and exits non-zero: the suite is never skipped into a green run."""
    run = run_suite(tmp_path, "--sim-fault", "sysroot_paths", timeout=120)
    assert run.returncode == 1, run.tail()
    cases = run.junit()
    assert len(cases) == 9 and {c.outcome for c in cases} == {"error"}, run.tail()
    assert all("dylib_paths" in c.message for c in cases), cases[0].message
    metrics = run.metrics()
    assert metrics["triage"]["cause"] == "qemu_dylib_paths", metrics["triage"]
    assert set(metrics["tests"].values()) == {"failed"}  # none passed, none skipped
