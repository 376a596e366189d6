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


def test_soak_trips_on_slow_after_running(tmp_path):
    proc, soak = run_soak(tmp_path, "--soak-sessions", "4", "--sim-fault", "slow_after_running")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-2000:]
    assert "the VM slows down after running" in out
    fps = [r["fps"] for r in soak["iterations"]]
    assert fps[-1] < fps[0] * 0.5 and soak["slopes"]["fps"] < 0
    charts = (tmp_path / "r/latest/soak-charts.html").read_text()
    assert "fps per iteration" in charts and 'class="series"' in charts


def test_reboot_makes_it_fast_again(tmp_path):
    proc, soak = run_soak(tmp_path, "--soak-sessions", "4", "--soak-reboot-every", "2",
                          "--sim-fault", "slow_after_running")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]
    fps = [r["fps"] for r in soak["iterations"]]
    assert soak["reboots"] == [2]
    assert fps[1] < fps[0] * 0.8  # slow after running …
    assert fps[2] > fps[0] * 0.85  # … fast again after the reboot


def test_clean_simulator_passes_ten_iterations(tmp_path):
    proc, soak = run_soak(tmp_path, "--soak-sessions", "10")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]
    assert len(soak["iterations"]) == 10 and soak["ok"]
    assert all(30 <= r["fps"] <= 60 for r in soak["iterations"])
