"""Scale-out: `pytest -m streaming -n 2` drives two simulators in parallel, one per worker,
and the results merge into one report, one JUnit file and one metrics.json keyed by target."""

from __future__ import annotations

import json

from childrun import outcomes, run_pytest


def test_two_workers_two_simulators(tmp_path):
    reports = tmp_path / "reports"
    run = run_pytest("-n", "2", "-q", report_dir=reports, stream_duration=3, timeout=300)
    assert run.returncode == 0, run.tail()
    latest = reports / "latest"
    metrics = json.loads((latest / "metrics.json").read_text())
    assert sorted(metrics["targets"]) == ["sim@gw0", "sim@gw1"], metrics.keys()
    for m in metrics["targets"].values():
        assert m["phases"].get("boot") is not None  # each worker booted its own simulated VM
    assert len(metrics["tests"]) == 9 and set(metrics["tests"].values()) == {"passed"}
    cases = run.junit()
    assert len(cases) == 9 and set(outcomes(cases).values()) == {"passed"}, run.tail()
    report = (latest / "report.html").read_text()
    assert len(report) > 10_000
    assert "Verdict per target" in report and "sim@gw0" in report and "sim@gw1" in report
    assert (latest / "gw0").is_dir() and (latest / "gw1").is_dir()
