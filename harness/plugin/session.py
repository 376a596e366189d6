"""One pytest session's helix-e2e state, held by a plugin object (not a module global).

``E2ESession`` is registered with pytest's plugin manager at configure time and kept in
``config.stash``; hooks that pytest does not hand a config (``pytest_runtest_logreport``, which also
runs on the xdist controller) are its methods. It owns the timeline, the run directory, the strategy
once the fixture made one, each streaming test's latest finding, the outcomes, the reruns and the
one verdict of the run.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from ..causes import CAUSES
from ..redact import redact
from ..timeline import Timeline
from ..verdict.checks import Finding
from ..verdict.triage import Verdict, triage
from .rerun import RERUN_POLICY

SESSION_KEY = pytest.StashKey["E2ESession"]()


def worker_id(config: pytest.Config) -> str:
    """The pytest-xdist worker id (gw0, gw1 …), or "" outside xdist workers."""
    return getattr(config, "workerinput", {}).get("workerid", "")


def is_xdist_controller(config: pytest.Config) -> bool:
    return not worker_id(config) and bool(getattr(config.option, "numprocesses", None)) and \
        config.pluginmanager.hasplugin("xdist") and getattr(config.option, "dist", "no") != "no"


def reports_latest(config: pytest.Config) -> Path:
    base = Path(config.getoption("e2e_report_dir"))
    if not base.is_absolute():
        base = Path(config.rootpath) / base
    return base / "latest"


#: The file that marks a folder as a report folder this harness made (and so may empty).
MARKER = ".helix-e2e-report"
#: Dated copies of reports/latest look like this (reports/20261202-162800).
DATED = re.compile(r"^\d{8}-\d{6}$")


class ReportDirError(pytest.UsageError):
    """A report folder the harness must not touch (not ours, a symlink, in use by another run)."""


def prepare_report_dir(path: Path, keep: tuple[str, ...] = ()) -> None:
    """Make ``path`` an empty report folder: create it, or empty it when it is one this harness made.
    A symlink, a file, or a non-empty folder without the marker is refused, never emptied."""
    if path.is_symlink():
        raise ReportDirError(f"{path} is a symlink ({os.readlink(path)}): the harness empties its report folder "
                             "and refuses to follow a link there; remove the link or pass --report-dir")
    if path.exists() and not path.is_dir():
        raise ReportDirError(f"{path} exists and is not a folder; remove it or pass --report-dir")
    if path.is_dir():
        entries = [c for c in path.iterdir() if c.name not in keep and c.name != MARKER]
        if entries and not _ours(path):
            raise ReportDirError(f"{path} holds files this harness did not write ({entries[0].name}, …): refusing to "
                                 "empty it; move them away or pass --report-dir")
        for child in entries:
            if child.is_symlink() or not child.is_dir():
                child.unlink()
            else:
                shutil.rmtree(child)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("written by helix-e2e; this folder is emptied at the start of each run\n")


def _ours(path: Path) -> bool:
    """A folder this harness made: it has the marker, or (from before the marker) our metrics.json."""
    if (path / MARKER).exists():
        return True
    try:
        import json

        return json.loads((path / "metrics.json").read_text()).get("schema", "").startswith("helix-e2e/")
    except (OSError, ValueError, AttributeError):
        return False


def lock_reports(base: Path):
    """One run at a time per reports folder: a second run in the same checkout would mix its files with ours."""
    from filelock import FileLock, Timeout

    base.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(base / ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ReportDirError(f"another helix-e2e run is writing {base} (lock {base / '.lock'}): wait for it to "
                             "finish, or give this run its own --report-dir") from None
    return lock


def publish_dated_copy(latest: Path, keep: int) -> Path | None:
    """Copy reports/latest to a dated folder beside it and prune the oldest beyond ``keep``."""
    dated = latest.parent / time.strftime("%Y%m%d-%H%M%S")
    try:
        shutil.copytree(latest, dated, dirs_exist_ok=True)
    except OSError:
        return None
    copies = sorted(p for p in latest.parent.iterdir()
                    if DATED.match(p.name) and p.is_dir() and not p.is_symlink() and (p / MARKER).exists())
    for old in copies[:max(0, len(copies) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return dated


class E2ESession:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.timeline = Timeline()
        self.strategy: Any = None
        self.sim: Any = None
        self.outcomes: dict[str, str] = {}
        #: nodeid → the Finding of that streaming test's latest attempt (what it asserted on, or why it could not run).
        self.findings: dict[str, Finding] = {}
        #: --rerun-infra: every rerun that happened (test, attempt, the transient verdict that allowed it).
        self.reruns: list[dict[str, Any]] = []
        #: The streaming tests this session selected (their node ids), in order.
        self.expected: list[str] = []
        #: Set when the run was interrupted (Ctrl-C, SIGTERM): whatever did not run never counts as a pass.
        self.interrupted = False
        self._run_dir: Path | None = None
        self._verdict: tuple[Verdict | None] | None = None

    @classmethod
    def of(cls, config: pytest.Config) -> "E2ESession":
        return config.stash[SESSION_KEY]

    def install(self) -> None:
        self.config.stash[SESSION_KEY] = self
        self.config.pluginmanager.register(self, "helix-e2e-session")

    def uninstall(self) -> None:
        self.config.pluginmanager.unregister(self)

    # -- the run directory ------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        """Where this process's artifacts go: reports/latest, or reports/latest/<worker> under xdist.
        Emptied once per run (lazily: only runs that use a target make one), and only when it is a
        report folder this harness made (see :func:`prepare_report_dir`)."""
        if self._run_dir is None:
            latest = reports_latest(self.config)
            wid = worker_id(self.config)
            if not wid:
                self._lock = lock_reports(latest.parent)
            here = latest / wid if wid else latest
            prepare_report_dir(here, keep=("report.html", "junit.xml"))  # those two are written by this run
            self._run_dir = here
        return self._run_dir

    def release(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()
            self._lock = None

    @property
    def has_run_dir(self) -> bool:
        return self._run_dir is not None

    # -- completeness and verdict ----------------------------------------------------------
    @property
    def not_run(self) -> list[str]:
        """Selected streaming tests with no outcome at all: they never ran."""
        return [n for n in self.expected if n not in self.outcomes]

    @property
    def all_skipped(self) -> bool:
        """Every selected streaming test has an outcome and every one was a skip: nothing was checked."""
        return bool(self.expected) and all(self.outcomes.get(n) == "skipped" for n in self.expected)

    @property
    def complete(self) -> bool:
        return not self.interrupted and not self.not_run

    def completion(self) -> dict[str, Any]:
        """metrics.json's view: ``complete``, ``interrupted`` and the tests that never ran."""
        return {"complete": self.complete, "interrupted": self.interrupted, "not_run": self.not_run,
                "expected": len(self.expected)}

    def _incomplete_finding(self) -> Finding | None:
        if self.complete:
            return None
        missing = self.not_run
        names = ", ".join(n.split("::")[-1] for n in missing[:9]) or "none"
        evidence = [f"{len(missing)} of {len(self.expected)} tests never ran: {names}"]
        if self.interrupted:
            return Finding(check="run", ok=False, message="the run was interrupted before it finished",
                           layer=CAUSES["run_interrupted"].layer, cause="run_interrupted", evidence=evidence)
        return Finding(check="run", ok=False, message=f"{len(missing)} selected tests never ran",
                       layer=CAUSES["tests_not_run"].layer, cause="tests_not_run", evidence=evidence)

    def verdict(self) -> Verdict | None:
        """The run's verdict, from the streaming tests' findings, the strategy and whether every test ran
        (computed once, at session finish). A run that did not finish is never a pass."""
        if self._verdict is None:
            findings = list(self.findings.values())
            incomplete = self._incomplete_finding()
            if incomplete is not None:
                findings.append(incomplete)
            v = triage(findings, self.strategy) if (self.strategy is not None or incomplete) else None
            self._verdict = (v,)
        return self._verdict[0]

    def rerun_summary(self) -> dict | None:
        allowed = self.config.getoption("e2e_rerun_infra") or 0
        if not allowed:
            return None
        return {"allowed": allowed, "policy": RERUN_POLICY, "reruns": list(self.reruns)}

    # -- hooks pytest does not hand a config ----------------------------------------------
    def pytest_keyboard_interrupt(self, excinfo) -> None:
        self.interrupted = True

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Outcomes per test (runs on the xdist controller too, which sees no makereport)."""
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            self.outcomes[report.nodeid] = report.outcome
        if report.outcome == "rerun":  # pytest-rerunfailures, allowed by rerun.rerun_wanted
            finding = self.findings.get(report.nodeid)
            self.reruns.append({
                "test": report.nodeid, "attempt": getattr(report, "rerun", 0) + 1,
                "verdict": f"{finding.layer}/{finding.cause}" if finding else "",
                "reason": redact(finding.message) if finding else "",
            })
