"""The reports reach people: `make e2e` refreshes the history page, the nightly publishes both pages and
the summary, `make test` installs the browser its tests need, and failures render expanded."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _recipe(target: str) -> str:
    text = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", text, re.M)
    assert match, f"no {target} target"
    return match.group(1)


def test_make_e2e_rewrites_the_history_page_and_keeps_pytests_status():
    recipe = _recipe("e2e")
    assert "helix-e2e history reports --html reports/history.html" in recipe
    assert "|| status=$$?" in recipe and "exit $$status" in recipe
    assert recipe.index("-m pytest") < recipe.index("helix-e2e history")


def test_make_test_installs_chromium_for_the_browser_tests():
    text = (ROOT / "Makefile").read_text()
    assert re.search(r"^DEBS :=.*\bchromium:chromium\b", text, re.M)
    assert "debs" in re.search(r"^setup:(.*)$", text, re.M).group(1)
    assert re.search(r"^test: setup", text, re.M)


def test_the_nightly_publishes_both_pages_and_the_summary():
    text = (ROOT / ".github" / "workflows" / "nightly-macos.yml").read_text()
    assert "helix-e2e history" in text and "tail -n +31" in text  # the last 30 nights
    upload = text[text.index("name: Upload the report pages"):]
    assert "reports/latest/report.html" in upload and "reports/history.html" in upload
    assert 'cat reports/latest/summary.md >> "$GITHUB_STEP_SUMMARY"' in text


def test_failures_render_expanded_and_passes_collapsed():
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    collapsed = {x.strip() for x in ini["render_collapsed"].split(",")}
    assert "passed" in collapsed and not collapsed & {"failed", "error", "all"}
