"""Scale-out: `pytest -m streaming -n 2` drives two simulators in parallel, one per worker,
and the results merge into one report, one JUnit file and one metrics.json keyed by target."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_two_workers_two_simulators(tmp_path):
    reports = tmp_path / "reports"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "streaming", str(ROOT / "tests/streaming"),
         "-n", "2", "--stream-duration", "3", "--report-dir", str(reports), "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "9 passed" in out, out[-2000:]
    latest = reports / "latest"
    metrics = json.loads((latest / "metrics.json").read_text())
    assert sorted(metrics["targets"]) == ["sim@gw0", "sim@gw1"], metrics.keys()
    for m in metrics["targets"].values():
        assert m["phases"].get("boot") is not None  # each worker booted its own simulated VM
    assert len(metrics["tests"]) == 9 and set(metrics["tests"].values()) == {"passed"}
    suite = ET.parse(latest / "junit.xml").getroot()
    assert len(suite.findall(".//testcase")) == 9
    report = (latest / "report.html").read_text()
    assert len(report) > 10_000
    assert "Verdict per target" in report and "sim@gw0" in report and "sim@gw1" in report
    assert (latest / "gw0").is_dir() and (latest / "gw1").is_dir()
