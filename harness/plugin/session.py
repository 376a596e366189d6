"""One pytest session's helix-e2e state, held by a plugin object (not a module global).

``E2ESession`` is registered with pytest's plugin manager at configure time and kept in
``config.stash``; hooks that pytest does not hand a config (``pytest_runtest_logreport``, which also
runs on the xdist controller) are its methods. It owns the timeline, the run directory, the strategy
once the fixture made one, each streaming test's latest finding, the outcomes, the reruns and the
one verdict of the run.
"""

from __future__ import annotations

import shutil
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
        Emptied once per run (lazily: only runs that use a target make one)."""
        if self._run_dir is None:
            latest = reports_latest(self.config)
            wid = worker_id(self.config)
            here = latest / wid if wid else latest
            if here.exists():
                for child in here.iterdir():
                    if child.name in ("report.html", "junit.xml"):  # written by pytest-html/junitxml this run
                        continue
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            here.mkdir(parents=True, exist_ok=True)
            self._run_dir = here
        return self._run_dir

    @property
    def has_run_dir(self) -> bool:
        return self._run_dir is not None

    # -- completeness and verdict ----------------------------------------------------------
    @property
    def not_run(self) -> list[str]:
        """Selected streaming tests with no outcome at all: they never ran."""
        return [n for n in self.expected if n not in self.outcomes]

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
