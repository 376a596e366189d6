"""The soak is an instrument that works: it trips on the simulator's `slow_after_running`,
sees a reboot restore the speed, and passes a clean simulator for 10 iterations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fast_sim_target(tmp_path: Path) -> Path:
    """The default simulator target with its modelled delays (boot, session start) shortened."""
    text = (ROOT / "fixtures/targets/sim.toml").read_text()
    path = tmp_path / "fast-sim.toml"
    path.write_text(text.replace("[sim]\n", "[sim]\ndelay_scale = 0.3\n", 1))
    return path


def run_soak(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "soak", str(ROOT / "tests/soak"),
         "--target", str(fast_sim_target(tmp_path)), "--stream-duration", "3", "--report-dir", str(tmp_path / "r"),
         "-q", "--no-preflight", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=400,
    )
    soak = json.loads((tmp_path / "r/latest/soak.json").read_text())
    return proc, soak


def test_soak_trips_on_slow_after_running_and_a_reboot_makes_it_fast_again(tmp_path):
    # 3 sessions on one boot (slower each time), then a reboot, then 2 more sessions.
    proc, soak = run_soak(tmp_path, "--soak-sessions", "5", "--soak-reboot-every", "3",
                          "--sim-fault", "slow_after_running")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-2000:]
    assert "the VM slows down after running" in out
    assert "did not restore" not in out
    fps = [r["fps"] for r in soak["iterations"]]
    assert soak["reboots"] == [3]
    assert fps[2] < fps[0] * 0.6 and soak["slopes"]["fps"] is not None  # slow after running …
    assert fps[3] > fps[0] * 0.85  # … fast again after the reboot
    charts = (tmp_path / "r/latest/soak-charts.html").read_text()
    assert "fps per iteration" in charts and 'class="series"' in charts and "reboot" in charts


def test_clean_simulator_passes_ten_iterations(tmp_path):
    proc, soak = run_soak(tmp_path, "--soak-sessions", "10")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]
    assert len(soak["iterations"]) == 10 and soak["ok"]
    assert all(30 <= r["fps"] <= 60 for r in soak["iterations"])
