"""The CI recipes: both workflows pass actionlint and keep the promises the runner docs make."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"


def _actionlint() -> str:
    exe = shutil.which("actionlint") or str(Path(sys.executable).parent / "actionlint")
    assert Path(exe).exists(), "actionlint is not installed (pip install '.[test]')"
    return exe


def test_workflows_pass_actionlint():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} >= {"ci.yml", "nightly-macos.yml"}
    proc = subprocess.run([_actionlint(), *map(str, files)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n")
    proc = subprocess.run([_actionlint(), str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0


def test_nightly_runs_on_self_hosted_apple_silicon_and_keeps_reports():
    text = (WORKFLOWS / "nightly-macos.yml").read_text()
    assert "runs-on: [self-hosted, macOS, ARM64]" in text
    assert "helix-e2e doctor" in text and "make e2e" in text and "-m soak" in text
    assert "actions/upload-artifact" in text and "if: always()" in text
    assert "GITHUB_STEP_SUMMARY" in text and "summary.md" in text
    ci = (WORKFLOWS / "ci.yml").read_text()
    assert "make test" in ci
