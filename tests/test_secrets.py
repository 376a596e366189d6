"""No secret in any artifact of a streaming run, passing or failing.

The simulator's API key (read from its ``.env.usercreds`` while the child run goes on; the same
key ``sim up --json`` prints) must not appear in any file the run writes — report.html,
junit.xml, metrics.json, summaries, log excerpts, the dated copy — nor in the recording's text
messages or the terminal output; nor may any ``hl-…`` token. The failing run has every output
path switched on (DEBUG logs of all libraries, logs in JUnit, locals in tracebacks, all
artifacts), so failure messages and captured logs are in the reports.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from childrun import CASE_TIMEOUT, ChildPytest, child_env, pytest_argv
from harness.protocols.recording import KIND_TEXT, RecordingReader

pytestmark = pytest.mark.timeout(2 * CASE_TIMEOUT + 30)

#: A Helix user API key as text (the hint text "hl-…" is no token).
HL_TOKEN = re.compile(rb"hl-[A-Za-z0-9_-]{6,}")
TEXT_SUFFIXES = {".html", ".xml", ".json", ".jsonl", ".md", ".txt", ".log", ".svg", ".csv", ".toml"}


def findings(run: ChildPytest) -> list[str]:
    return grep_artifacts(run.reports, bytes(run.output), run.api_keys)


def grep_artifacts(reports: Path, output: bytes, api_keys: list[str]) -> list[str]:
    """Where the API keys or any hl- token occur: every file under ``reports``, the recordings'
    text messages, and the terminal output."""
    keys = [k.encode() for k in api_keys]
    assert keys and all(k.startswith(b"hl-") for k in keys), "the simulator's API key was never seen"
    out = []

    def grep(where: str, data: bytes, *, text: bool) -> None:
        for key in keys:
            if key in data:
                out.append(f"{where}: the API key")
        if text:
            out.extend(f"{where}: token {m.group()[:6].decode()}…" for m in HL_TOKEN.finditer(data))

    files = [p for p in reports.rglob("*") if p.is_file()]
    assert files, "the run wrote no artifacts"
    for path in files:
        grep(str(path.relative_to(reports)), path.read_bytes(), text=path.suffix in TEXT_SUFFIXES)
    for rec in reports.rglob("*.hxwsrec"):
        with rec.open("rb") as fh:
            texts = [r.data for r in RecordingReader(fh) if r.kind == KIND_TEXT]
        assert texts, f"{rec} has no text message to check"
        for i, data in enumerate(texts):
            grep(f"{rec.name} text message {i}", data, text=True)
    grep("terminal output", output, text=True)
    return out


def _artifacts_complete(run: ChildPytest) -> None:
    latest = run.latest
    for name in ("report.html", "junit.xml", "metrics.json", "stream.hxwsrec"):
        assert (latest / name).is_file(), f"no {name} in {latest}"
    dated = run.dated_dirs()
    assert dated and (dated[-1] / "report.html").is_file(), "no dated copy of the reports"


def test_no_secret_in_a_passing_run(passing_run: ChildPytest) -> None:
    assert passing_run.returncode == 0, passing_run.tail()
    _artifacts_complete(passing_run)
    assert findings(passing_run) == []


def test_no_secret_in_a_failing_run(failing_run: ChildPytest) -> None:
    assert failing_run.returncode == 1, failing_run.tail()
    _artifacts_complete(failing_run)
    junit = (failing_run.latest / "junit.xml").read_text()
    html = (failing_run.latest / "report.html").read_text()
    # Not vacuous: the failure and the captured DEBUG logs are in the reports, and the key did
    # reach a log record (the WebSocket handshake's Authorization header), masked.
    assert "test_stream_fps_in_band" in junit and "<failure" in junit
    assert "Captured log" in html and "harness." in junit
    assert "Bearer ***" in junit, "no masked Authorization header in the captured logs: is DEBUG logging on?"
    assert (failing_run.latest / "tests-streaming-test_streaming.py-test_resource_ids_nonzero").is_dir()
    assert findings(failing_run) == []


def test_finder_finds_a_planted_key(tmp_path: Path, passing_run: ChildPytest) -> None:
    """The grep itself works: a key planted in a copy of the artifacts is found."""
    import shutil

    reports = tmp_path / "reports"
    shutil.copytree(passing_run.reports, reports)
    key = passing_run.api_keys[0]
    with (reports / "latest" / "metrics.json").open("a") as fh:
        fh.write(key)
    got = grep_artifacts(reports, b"", passing_run.api_keys)
    assert any("metrics.json: the API key" in f for f in got) and any("token hl-" in f for f in got)
    assert "terminal output: the API key" in grep_artifacts(reports, key.encode(), passing_run.api_keys)


LEAKY_TESTS = '''
import logging, sys
import pytest
from harness.redact import register

KEY = "hl-" + "feedfacecafebeef" * 2
register(KEY)


def test_prints_and_logs_a_traceback():
    print("stdout:", KEY)
    sys.stderr.write("stderr: " + KEY + "\\n")
    try:
        raise RuntimeError("boom " + KEY)
    except RuntimeError:
        logging.getLogger("harness.leaky").exception("it failed")
    assert False, "failed with " + KEY


def test_skips():
    pytest.skip("skipped: " + KEY)
'''


def test_captured_output_tracebacks_and_skip_reasons_are_redacted(tmp_path: Path) -> None:
    """Output paths that bypass log messages: captured stdout/stderr, logged tracebacks, skip reasons."""
    import subprocess

    (tmp_path / "test_leaky.py").write_text(LEAKY_TESTS)
    proc = subprocess.run(
        pytest_argv("-rA", "-o", "junit_logging=all", "--junitxml", "junit.xml", "--html", "report.html",
                    "--self-contained-html", "test_leaky.py", suite=None),
        cwd=tmp_path, env=child_env(), capture_output=True, timeout=60,
    )
    assert proc.returncode == 1, proc.stdout.decode(errors="replace")[-2000:]
    outputs = {"terminal": proc.stdout + proc.stderr, "junit.xml": (tmp_path / "junit.xml").read_bytes(),
               "report.html": (tmp_path / "report.html").read_bytes()}
    for where, data in outputs.items():
        assert b"feedface" not in data, f"the key leaked into {where}"
    assert b"stdout: ***" in outputs["junit.xml"] and b"RuntimeError: boom ***" in outputs["junit.xml"]
    assert b"skipped: ***" in outputs["terminal"]
