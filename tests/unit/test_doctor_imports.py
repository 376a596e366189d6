"""`helix-e2e doctor` stays cheap to start: it never imports the decoder, the SSH or Docker stacks, or
aiohttp unless a check really needs one (issue 15 measures its cold start)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import ENV_OVERRIDES, TARGET_ENV

REPO = Path(__file__).resolve().parents[2]
#: Modules a `doctor --json` run must not load (each costs tens to hundreds of milliseconds).
HEAVY = ("av", "numpy", "cv2", "paramiko", "docker", "aiohttp")

# Runs the CLI in a fresh interpreter, then reports on stderr which heavy modules got loaded.
PROBE = """
import json, sys
from harness.cli import main
code = main(sys.argv[1:])
heavy = json.loads({heavy!r})
print("HEAVY=" + json.dumps(sorted(m for m in heavy if m in sys.modules)), file=sys.stderr)
print("CODE=" + str(code), file=sys.stderr)
"""


def _doctor_in_fresh_python(tmp_path: Path, *argv: str) -> tuple[list[str], int, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_OVERRIDES and k != TARGET_ENV}
    env["HOME"] = str(tmp_path)  # no ~/.ssh/known_hosts: the defaults target has nothing for paramiko to load
    script = PROBE.format(heavy=json.dumps(HEAVY))
    proc = subprocess.run(
        [sys.executable, "-c", script, "doctor", "--json", "--report-dir", str(tmp_path / "reports"), *argv],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    lines = dict(line.split("=", 1) for line in proc.stderr.splitlines() if line.startswith(("HEAVY=", "CODE=")))
    assert "HEAVY" in lines, proc.stderr
    return json.loads(lines["HEAVY"]), int(lines["CODE"]), proc.stdout


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(("--target", str(REPO / "fixtures" / "targets" / "sim.toml")), id="sim-target"),
        pytest.param((), id="defaults"),
        pytest.param(("--qemu-binary", str(REPO / "fixtures" / "macho" / "qemu-ok")), id="qemu-binary"),
    ],
)
def test_doctor_json_imports_nothing_heavy(tmp_path, argv):
    loaded, code, out = _doctor_in_fresh_python(tmp_path, *argv)
    assert [c["name"] for c in json.loads(out)["checks"]]  # the doctor really ran
    assert code in (0, 1)
    assert loaded == [], f"`helix-e2e doctor --json` imported {loaded}"


def test_importing_the_doctor_imports_nothing_heavy():
    script = (
        "import json, sys\nimport harness.doctor\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, check=True)
    assert json.loads(proc.stdout) == []
