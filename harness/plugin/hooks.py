"""Hooks of the helix-e2e pytest plugin: markers, skips on a broken target, findings, reports.

The session's state lives in :class:`harness.plugin.session.E2ESession`; the HTML blocks, the
metrics and the xdist merge live in ``harness.report``; the terminal's progress lines in
``plugin.progress``; the ``--rerun-infra`` policy in ``plugin.rerun``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shlex
import sys
from typing import Any

import pytest

from ..errors import HarnessError
from ..redact import install_logging_filter, redact
from ..report.extras import KINDS, build_extras
from ..report.html import page_blocks, report_data_bytes
from ..report.measures import report_title
from ..report.merge import merge_worker_metrics
from ..report.metrics import build_metrics, junit_properties, write_json
from ..report.summary import append_history, read_history, render_summary, trend_html
from ..verdict.checks import Finding, from_error
from ..verdict.triage import triage
from .interrupts import install_sigterm, restore_sigterm
from .progress import ProgressPrinter
from .rerun import FINDING_KEY, mark_for_reruns
from .session import SESSION_KEY, E2ESession, is_xdist_controller, publish_dated_copy, reports_latest, worker_id

log = logging.getLogger(__name__)

#: Every marker the plugin and this project's tests use, declared in one place.
MARKERS = {
    "e2e_artifacts(*kinds)": "attach run artifacts to this test's report (kinds: " + ", ".join(KINDS) + ")",
    "streaming": "the end-to-end streaming suite (needs a target: the simulator by default)",
    "faults": "fault-injection tests against the simulator",
    "soak": "long soak runs (not in the default test run)",
}
_PROGRESS = pytest.StashKey[ProgressPrinter]()
_SIGTERM = pytest.StashKey[object]()
#: pytest-html's report object (its title is set once the verdict is known) and the run's metrics.
_HTML_REPORT = pytest.StashKey[Any]()
_METRICS = pytest.StashKey[dict]()


def _wants_reports(config: pytest.Config) -> bool:
    markexpr = config.getoption("markexpr", "") or ""
    return "streaming" in markexpr or bool(config.getoption("e2e_target"))


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    session = E2ESession(config)
    session.install()
    config.stash[_SIGTERM] = install_sigterm()
    install_logging_filter()
    # `pytest -m streaming` writes an HTML report and JUnit by default (pytest-html reads this later).
    if _wants_reports(config) and not getattr(config.option, "collectonly", False):
        latest = reports_latest(config)
        if not worker_id(config):
            session.run_dir  # noqa: B018 - refuse a folder that is not ours, and lock it, before anything writes there
        if hasattr(config.option, "htmlpath") and not config.option.htmlpath:
            config.option.htmlpath = str(latest / "report.html")
            config.option.self_contained_html = True
        if not config.option.xmlpath:
            config.option.xmlpath = str(latest / "junit.xml")
    if not worker_id(config):  # a worker's output goes nowhere a person sees
        printer = ProgressPrinter(config)
        config.stash[_PROGRESS] = printer
        session.timeline.subscribe(printer)


def pytest_unconfigure(config: pytest.Config) -> None:
    restore_sigterm(config.stash.get(_SIGTERM, None))
    printer = config.stash.get(_PROGRESS, None)
    if printer is not None:
        printer.close()
    session = config.stash.get(SESSION_KEY, None)
    if session is None:
        return
    if session.has_run_dir and session.run_dir.exists() and not worker_id(config):
        publish_dated_copy(session.run_dir, keep=config.getoption("e2e_keep_reports"))
    session.release()
    session.uninstall()


def _uses_strategy(item: pytest.Item) -> bool:
    return "strategy" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mark_for_reruns(config, items, _uses_strategy)
    # Soak runs are long: only when asked for with `-m soak`.
    if "soak" not in (config.getoption("markexpr", "") or ""):
        soak = [i for i in items if i.get_closest_marker("soak")]
        if soak:
            config.hook.pytest_deselected(items=soak)
            items[:] = [i for i in items if not i.get_closest_marker("soak")]
    for item in items:
        for mark in item.iter_markers("e2e_artifacts"):
            unknown = [k for k in mark.args if k not in KINDS]
            if unknown or mark.kwargs or not mark.args:
                raise pytest.UsageError(
                    f"{item.nodeid}: @pytest.mark.e2e_artifacts takes artifact kinds from {', '.join(KINDS)}; "
                    f"got args {mark.args} kwargs {mark.kwargs}"
                )


def pytest_collection_finish(session: pytest.Session) -> None:
    """Check the target config once, before any test (a bad config is one usage error line, not one
    traceback per test); then note the streaming tests this run must run (an xdist worker runs only what
    it is sent: the controller, which sees every outcome, counts them instead)."""
    if any("target" in getattr(i, "fixturenames", ()) for i in session.items):
        from .fixtures import requested_target

        try:
            requested_target(session.config)
        except HarnessError as exc:
            raise pytest.UsageError(f"helix-e2e: {redact(str(exc))}") from None
    if worker_id(session.config):
        return
    E2ESession.of(session.config).expected = [i.nodeid for i in session.items
                                              if i.get_closest_marker("streaming") is not None]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids) -> None:
    """Under xdist the controller learns what was collected from the workers."""
    e2e = E2ESession.of(node.config)
    for nodeid in ids:
        if nodeid not in e2e.expected:
            e2e.expected.append(nodeid)


def pytest_runtest_setup(item: pytest.Item) -> None:
    strat = E2ESession.of(item.config).strategy
    if strat is not None and strat.broken is not None and _uses_strategy(item):
        verdict = triage([], strat)  # the broken phase alone: is it transient infrastructure?
        if getattr(item, "execution_count", 1) > 1 and verdict is not None and verdict.transient:
            # A --rerun-infra rerun after transient infrastructure: start again from a powered-off VM.
            strat.reset(f"{item.nodeid}: {verdict.layer}/{verdict.cause}")
            return
        phase, exc = strat.broken
        pytest.skip(f"target broken in the {phase} phase: {redact(str(exc))}")


def _check_name(item: pytest.Item) -> str:
    name = getattr(item, "originalname", None) or item.name
    return name[len("test_"):] if name.startswith("test_") else name


def _unwrap(exc: BaseException) -> BaseException:
    """The original failure behind a StrategyBroken (the phase that broke)."""
    from ..strategy import StrategyBroken

    return exc.__cause__ if isinstance(exc, StrategyBroken) and exc.__cause__ is not None else exc


def _finding_of(item: pytest.Item, report: pytest.TestReport, call, strat) -> Finding | None:
    """The Finding a streaming test produced (its check recorded it on the run record), or why it could not run."""
    name = _check_name(item)
    if report.when == "setup":
        return from_error(name, _unwrap(call.excinfo.value)) if report.failed and call.excinfo else None
    record = strat.record
    recorded = record.findings.get(name)
    if recorded is None and record.stream is not None:
        recorded = record.stream.findings.get(name)
    if recorded is not None and recorded.ok == report.passed:
        return recorded
    if report.failed and call.excinfo is not None:
        return from_error(name, _unwrap(call.excinfo.value))
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    # Never let a secret reach the terminal, JUnit or HTML through a failure message or captured output.
    if report.longrepr is not None and not isinstance(report.longrepr, tuple):
        text = str(report.longrepr)
        clean = redact(text)
        if clean != text:
            report.longrepr = clean
    elif isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:  # a skip: (path, line, reason)
        path, lineno, reason = report.longrepr
        report.longrepr = (path, lineno, redact(str(reason)))
    report.sections = [(title, redact(content)) for title, content in report.sections]
    session = E2ESession.of(item.config)
    strat = session.strategy
    streaming = item.get_closest_marker("streaming") is not None
    if strat is not None and streaming and report.when in ("setup", "call"):
        if report.when == "setup":  # a new attempt
            if FINDING_KEY in item.stash:
                del item.stash[FINDING_KEY]
            session.findings.pop(item.nodeid, None)
        finding = _finding_of(item, report, call, strat)
        if finding is not None:
            item.stash[FINDING_KEY] = finding
            session.findings[item.nodeid] = finding
    if report.when == "call" and strat is not None and streaming:
        for key, value in junit_properties(strat.record, strat.timeline).items():
            report.user_properties.append((key, value))
            item.user_properties.append((key, value))  # junitxml writes the teardown report's, copied from the item
        mark = item.get_closest_marker("e2e_artifacts")
        keep = item.config.getoption("e2e_keep_artifacts")
        if mark is not None and (report.failed or keep == "always") and session.has_run_dir:
            dest = session.run_dir / _slug(item.nodeid)
            extra = getattr(report, "extras", [])
            report.extras = extra + build_extras(tuple(mark.args), strat.record, strat.target, strat.timeline, dest)
    for i, (key, value) in enumerate(list(getattr(report, "user_properties", []))):
        report.user_properties[i] = (key, redact(str(value)))
    return report


def _slug(nodeid: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", nodeid).strip("-")
    if len(slug) > 100:
        slug = slug[:80] + "-" + hashlib.sha1(nodeid.encode()).hexdigest()[:10]
    return slug


@pytest.hookimpl(optionalhook=True)
def pytest_html_report_title(report) -> None:
    """Keep pytest-html's report object: its title gets the verdict once the run is over."""
    config = getattr(report, "config", None)
    if config is not None:
        config.stash[_HTML_REPORT] = report


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_summary(prefix, summary, postfix, session) -> None:
    config = session.config
    e2e = E2ESession.of(config)
    strat = e2e.strategy
    metrics = config.stash.get(_METRICS, None)
    if metrics is None and strat is not None:  # no run dir (no report wanted): render from the record
        metrics = build_metrics(strat.record, strat.target, strat.timeline, status=strat.status.name,
                                broken=strat.broken, outcomes=e2e.outcomes, triage=e2e.verdict(),
                                reruns=e2e.rerun_summary(), phase_limits=_phase_limits(strat),
                                command_line=_command_line(config))
    if metrics is not None:
        report = config.stash.get(_HTML_REPORT, None)
        if report is not None:
            report.title = report_title(metrics)
        reruns = e2e.rerun_summary() if strat is not None else None
        try:
            prefix.extend(page_blocks(metrics, reruns=reruns, other_bytes=report_data_bytes(report)))
        except Exception as exc:  # noqa: BLE001 - a report block never changes a verdict
            log.warning("the report's evidence could not be rendered: %s", exc)
    if strat is not None or is_xdist_controller(config):
        trend = trend_html(read_history(reports_latest(config).parent / "history.jsonl"))
        if trend:
            postfix.append(trend)


def _phase_limits(strat) -> dict[str, float]:
    limits = {}
    for name in strat.timeline.durations():
        try:
            limits[name] = strat.phase_timeout(name)
        except (HarnessError, KeyError):
            continue  # a phase with no timeout of its own (the simulator's start, the preflight)
    return limits


def _command_line(config: pytest.Config) -> str:
    """The exact command that ran this session (provenance)."""
    argv = getattr(sys, "orig_argv", None) or [sys.executable, *config.invocation_params.args]
    return redact(shlex.join(str(a) for a in argv))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus) -> None:
    config = session.config
    e2e = E2ESession.of(config)
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        e2e.interrupted = True
    if not e2e.complete and session.exitstatus == pytest.ExitCode.OK:
        # Tests that never ran count: an incomplete run never exits 0.
        session.exitstatus = pytest.ExitCode.INTERRUPTED if e2e.interrupted else pytest.ExitCode.TESTS_FAILED
    if e2e.all_skipped and session.exitstatus == pytest.ExitCode.OK:
        # Nothing was checked: a run of skips is never green.
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    strat = e2e.strategy
    if is_xdist_controller(config) and e2e.has_run_dir:
        config.stash[_METRICS] = merge_worker_metrics(e2e.run_dir, e2e.outcomes, completion=e2e.completion())
        return
    if strat is None or not e2e.has_run_dir:
        return
    latest = e2e.run_dir
    metrics = build_metrics(strat.record, strat.target, strat.timeline, status=strat.status.name,
                            broken=strat.broken, outcomes=e2e.outcomes, triage=e2e.verdict(),
                            reruns=e2e.rerun_summary(), completion=e2e.completion(),
                            phase_limits=_phase_limits(strat), command_line=_command_line(config))
    config.stash[_METRICS] = metrics
    write_json(latest / "metrics.json", metrics)
    (latest / "summary.md").write_text(render_summary(metrics))
    if not worker_id(config):
        append_history(reports_latest(config).parent / "history.jsonl", metrics)


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    e2e = E2ESession.of(config)
    strat = e2e.strategy
    if strat is None and e2e.complete and not e2e.all_skipped:
        return
    tr = terminalreporter
    tr.section("helix-e2e phases")
    for line in e2e.timeline.table().splitlines():
        tr.write_line(line)
    if strat is not None and strat.broken is not None:
        tr.write_line(redact(f"target broken in the {strat.broken[0]} phase: {strat.broken[1]}"), red=True)
    tr.section("helix-e2e verdict")
    verdict = e2e.verdict()
    if not e2e.complete:
        tr.write_line(f"INCOMPLETE RUN: {len(e2e.not_run)} of {len(e2e.expected)} tests never ran"
                      + (" (interrupted)" if e2e.interrupted else ""), red=True)
    if e2e.all_skipped:
        tr.write_line(f"NOTHING CHECKED: all {len(e2e.expected)} selected streaming tests were skipped", red=True)
    if verdict is None:
        tr.write_line("all checks passed: nothing to triage", green=True)
    else:
        transient = " (transient infrastructure)" if verdict.transient else ""
        tr.write_line(redact(f"root cause: {verdict.layer}/{verdict.cause}{transient}: {verdict.message}"), red=True)
        for line in verdict.evidence[:6]:
            tr.write_line(redact(f"  evidence: {line}"))
        tr.write_line(redact(f"  hint: {verdict.hint}"))
        if verdict.explains:
            tr.write_line(f"  explains: {', '.join(verdict.explains)}")
    reruns = e2e.rerun_summary()
    if reruns is not None:
        tr.write_line(f"--rerun-infra {reruns['allowed']}: {reruns['policy']}")
        for r in reruns["reruns"]:
            tr.write_line(redact(f"  reran {r['test']} (attempt {r['attempt']}): {r['verdict']}"), yellow=True)
    for err in strat.record.teardown_errors if strat is not None else ():
        tr.write_line(redact(f"teardown: {err}"), yellow=True)
    if e2e.has_run_dir:
        tr.write_line(f"reports: {e2e.run_dir}")
