"""The streaming suite must turn red, with the reason, when the product is wrong.

Each case runs the real suite in a child pytest against a simulator set up to misbehave.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_suite(tmp_path: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "streaming", str(ROOT / "tests/streaming"),
        "--stream-duration", "4", "--report-dir", str(tmp_path / "reports"), "-o", "console_output_style=classic",
        "-rfEs", *args,
    ]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


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
    proc = run_suite(tmp_path, *args)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert f"FAILED tests/streaming/test_streaming.py::{failing_test}" in out, out[-3000:]
    assert reason in out, out[-3000:]
    metrics = (tmp_path / "reports/latest/metrics.json").read_text()
    assert failing_test in metrics
