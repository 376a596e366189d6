"""The soak is an instrument that works: it trips on the simulator's `slow_after_running`,
sees a reboot restore the speed, and passes a clean simulator for 10 iterations."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from childrun import REPO as ROOT
from childrun import Finished, run_pytest


def fast_sim_target(tmp_path: Path) -> Path:
    """The default simulator target with its modelled delays (boot, session start) shortened."""
    text = (ROOT / "fixtures/targets/sim.toml").read_text()
    path = tmp_path / "fast-sim.toml"
    path.write_text(text.replace("[sim]\n", "[sim]\ndelay_scale = 0.3\n", 1))
    return path


def run_soak(tmp_path: Path, *args: str, duration: float = 3) -> tuple[Finished, dict, Path]:
    run = run_pytest("--target", str(fast_sim_target(tmp_path)), "-q", "--no-preflight", *args, suite="soak",
                     report_dir=tmp_path / "r", stream_duration=duration, timeout=400)
    path = tmp_path / "r/latest/soak.json"
    assert path.is_file(), f"the soak wrote no soak.json:\n{run.tail()}"
    return run, json.loads(path.read_text()), tmp_path


#: The two soaks (each a child pytest, mostly waiting on its own simulator) run side by side.
SOAKS = {
    # 3 sessions on one boot (slower each time), then a reboot, then 2 more sessions.
    "slow": ("--soak-sessions", "5", "--soak-reboot-every", "3", "--sim-fault", "slow_after_running"),
    "clean": ("--soak-sessions", "10"),
}


@pytest.fixture(scope="module")
def soaks(tmp_path_factory):
    with ThreadPoolExecutor(max_workers=len(SOAKS), thread_name_prefix="soak") as pool:
        futures = {name: pool.submit(run_soak, tmp_path_factory.mktemp(f"soak-{name}"), *args)
                   for name, args in SOAKS.items()}
        yield futures


def test_soak_trips_on_slow_after_running_and_a_reboot_makes_it_fast_again(soaks):
    run, soak, tmp_path = soaks["slow"].result(timeout=450)
    assert run.returncode == 1, run.tail()
    [case] = run.junit()
    assert (case.name, case.outcome) == ("test_vm_does_not_slow_down_after_running", "failed"), run.tail()
    for said in (case.message, "\n".join(soak["problems"])):  # the verdict, in the JUnit failure and soak.json
        assert "the VM slows down after running" in said
        assert "did not restore" not in said
    fps = [r["fps"] for r in soak["iterations"]]
    assert soak["reboots"] == [3]
    assert fps[2] < fps[0] * 0.6 and soak["slopes"]["fps"] is not None  # slow after running …
    assert fps[3] > fps[0] * 0.85  # … fast again after the reboot
    charts = (tmp_path / "r/latest/soak-charts.html").read_text()
    assert "fps per iteration" in charts and 'class="series"' in charts and "reboot" in charts


def test_clean_simulator_passes_ten_iterations(soaks):
    run, soak, _ = soaks["clean"].result(timeout=450)
    assert run.returncode == 0, run.tail()
    assert [(c.name, c.outcome) for c in run.junit()] == [("test_vm_does_not_slow_down_after_running", "passed")]
    assert len(soak["iterations"]) == 10 and soak["ok"]
    assert all(30 <= r["fps"] <= 60 for r in soak["iterations"])
