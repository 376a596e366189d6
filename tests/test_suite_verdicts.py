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
