"""Hooks of the helix-e2e pytest plugin: markers, skips on a broken target, progress, reports."""

from __future__ import annotations

import functools
import html
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

from ..verdict.checks import Finding, from_error
from ..redact import install_logging_filter, redact
from ..report.extras import KINDS, build_extras
from ..report.metrics import build_metrics, junit_properties, provenance, write_json
from ..report.summary import append_history, read_history, render_summary, trend_html
from ..verdict.triage import TRANSIENT_CAUSES, TRANSIENT_LAYERS, Verdict, triage
from .fixtures import RUN_DIR_KEY, STRATEGY_KEY, reports_latest, run_dir, timeline, worker_id

MARKERS = {
    "e2e_artifacts(*kinds)": "attach run artifacts to this test's report (kinds: " + ", ".join(KINDS) + ")",
    "streaming": "the end-to-end streaming suite (needs a target: the simulator by default)",
    "faults": "fault-injection tests against the simulator",
    "soak": "long soak runs (not in the default test run)",
}
_OUTCOMES = pytest.StashKey[dict]()
_CONFIG: dict = {}  # the current pytest config, for hooks that are not handed one
_PROGRESS = pytest.StashKey[object]()
#: nodeid → the Finding of that streaming test's latest attempt (what it asserted on, or why it could not run).
_FINDINGS = pytest.StashKey[dict]()
#: The run's verdict (computed once, at session finish).
_VERDICT = pytest.StashKey[object]()
#: --rerun-infra: every rerun that happened (test, attempt, the transient verdict that allowed it).
_RERUNS = pytest.StashKey[list]()
#: On each streaming test item: the Finding of its latest attempt.
FINDING_KEY = pytest.StashKey[Finding]()
RERUN_POLICY = ("only transient infrastructure failures are rerun (layer host, utm or ssh; cause "
                + " or ".join(sorted(TRANSIENT_CAUSES)) + "); product failures are never retried")


def _wants_reports(config: pytest.Config) -> bool:
    markexpr = config.getoption("markexpr", "") or ""
    return "streaming" in markexpr or bool(config.getoption("e2e_target"))


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    config.stash[_OUTCOMES] = {}
    config.stash[_FINDINGS] = {}
    config.stash[_RERUNS] = []
    _CONFIG["config"] = config
    install_logging_filter()
    # `pytest -m streaming` writes an HTML report and JUnit by default (pytest-html reads this later).
    if _wants_reports(config) and not getattr(config.option, "collectonly", False):
        base = Path(config.getoption("e2e_report_dir"))
        if not base.is_absolute():
            base = Path(config.rootpath) / base
        latest = base / "latest"
        latest.mkdir(parents=True, exist_ok=True)
        if hasattr(config.option, "htmlpath") and not config.option.htmlpath:
            config.option.htmlpath = str(latest / "report.html")
            config.option.self_contained_html = True
        if not config.option.xmlpath:
            config.option.xmlpath = str(latest / "junit.xml")
    if _is_xdist_controller(config):
        run_dir(config)  # empty reports/latest once, before the workers write into latest/<worker>/
    if not worker_id(config):  # a worker's output goes nowhere a person sees
        printer = _ProgressPrinter(config)
        config.stash[_PROGRESS] = printer
        timeline(config).subscribe(printer)


def _is_xdist_controller(config: pytest.Config) -> bool:
    return not worker_id(config) and bool(getattr(config.option, "numprocesses", None)) and \
        config.pluginmanager.hasplugin("xdist") and getattr(config.option, "dist", "no") != "no"


def pytest_unconfigure(config: pytest.Config) -> None:
    printer = config.stash.get(_PROGRESS, None)
    if printer is not None:
        printer.close()
    latest = config.stash.get(RUN_DIR_KEY, None)
    if latest is not None and latest.exists() and not worker_id(config):
        dated = latest.parent / time.strftime("%Y%m%d-%H%M%S")
        try:
            shutil.copytree(latest, dated, dirs_exist_ok=True)
        except OSError:
            pass


def _uses_strategy(item: pytest.Item) -> bool:
    return "strategy" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reruns = config.getoption("e2e_rerun_infra") or 0
    if reruns < 0:
        raise pytest.UsageError(f"--rerun-infra takes a count >= 0, got {reruns}")
    if reruns and not config.pluginmanager.hasplugin("rerunfailures"):
        raise pytest.UsageError("--rerun-infra needs the pytest-rerunfailures plugin (pip install pytest-rerunfailures)")
    if reruns:
        for item in items:
            if _uses_strategy(item) and item.get_closest_marker("flaky") is None:
                # pytest-rerunfailures does the rerun; the condition lets transient infrastructure through only.
                item.add_marker(pytest.mark.flaky(reruns=reruns, condition=functools.partial(_rerun_wanted, item)))
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


def pytest_runtest_setup(item: pytest.Item) -> None:
    strat = item.config.stash.get(STRATEGY_KEY, None)
    if strat is not None and strat.broken is not None and _uses_strategy(item):
        verdict = triage([], strat)
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
    """The Finding a streaming test produced (its check recorded it on the strategy), or why it could not run."""
    name = _check_name(item)
    if report.when == "setup":
        return from_error(name, _unwrap(call.excinfo.value)) if report.failed and call.excinfo else None
    recorded = strat.findings.get(name)
    if recorded is None and strat.stream is not None:
        recorded = strat.stream.findings.get(name)
    if recorded is not None and recorded.ok == report.passed:
        return recorded
    if report.failed and call.excinfo is not None:
        return from_error(name, _unwrap(call.excinfo.value))
    return None


def _rerun_wanted(item: pytest.Item, error: BaseException | None = None) -> bool:
    """pytest-rerunfailures' condition: rerun a transient infrastructure failure only, never a product one."""
    finding = item.stash.get(FINDING_KEY, None)
    return bool(finding is not None and not finding.ok and finding.layer in TRANSIENT_LAYERS
                and finding.cause in TRANSIENT_CAUSES)


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
    strat = item.config.stash.get(STRATEGY_KEY, None)
    if strat is not None and item.get_closest_marker("streaming") and report.when in ("setup", "call"):
        if report.when == "setup":  # a new attempt
            if FINDING_KEY in item.stash:
                del item.stash[FINDING_KEY]
            item.config.stash[_FINDINGS].pop(item.nodeid, None)
        finding = _finding_of(item, report, call, strat)
        if finding is not None:
            item.stash[FINDING_KEY] = finding
            item.config.stash[_FINDINGS][item.nodeid] = finding
    if report.when == "call" and strat is not None and item.get_closest_marker("streaming"):
        for key, value in junit_properties(strat).items():
            report.user_properties.append((key, value))
        mark = item.get_closest_marker("e2e_artifacts")
        keep = item.config.getoption("e2e_keep_artifacts")
        if mark is not None and (report.failed or keep == "always"):
            latest = item.config.stash.get(RUN_DIR_KEY, None)
            if latest is not None:
                dest = latest / _slug(item.nodeid)
                extra = getattr(report, "extras", [])
                report.extras = extra + build_extras(tuple(mark.args), strat, dest)
    for i, (key, value) in enumerate(list(getattr(report, "user_properties", []))):
        report.user_properties[i] = (key, redact(str(value)))
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Outcomes per test (runs on the xdist controller too, which sees no makereport)."""
    config = _CONFIG.get("config")
    if config is None:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        config.stash[_OUTCOMES][report.nodeid] = report.outcome
    if report.outcome == "rerun":  # pytest-rerunfailures, allowed by _rerun_wanted
        finding = config.stash[_FINDINGS].get(report.nodeid)
        config.stash[_RERUNS].append({
            "test": report.nodeid, "attempt": getattr(report, "rerun", 0) + 1,
            "verdict": f"{finding.layer}/{finding.cause}" if finding else "",
            "reason": redact(finding.message) if finding else "",
        })


def _slug(nodeid: str) -> str:
    import hashlib
    import re

    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", nodeid).strip("-")
    if len(slug) > 100:
        slug = slug[:80] + "-" + hashlib.sha1(nodeid.encode()).hexdigest()[:10]
    return slug


def _verdict(config: pytest.Config) -> Verdict | None:
    """The run's verdict, from the streaming tests' findings and the strategy (computed once)."""
    if _VERDICT not in config.stash:
        strat = config.stash.get(STRATEGY_KEY, None)
        config.stash[_VERDICT] = triage(list(config.stash[_FINDINGS].values()), strat) if strat is not None else None
    return config.stash[_VERDICT]


def _rerun_summary(config: pytest.Config) -> dict | None:
    allowed = config.getoption("e2e_rerun_infra") or 0
    if not allowed:
        return None
    return {"allowed": allowed, "policy": RERUN_POLICY, "reruns": list(config.stash[_RERUNS])}


def _h(value: object) -> str:
    return html.escape(redact(str(value)))


def verdict_html(verdict: Verdict | None, reruns: dict | None = None) -> str:
    """The verdict block at the top of the HTML report."""
    if verdict is None:
        block = "<p class='e2e-verdict e2e-verdict-ok'><b>All checks passed</b>: nothing to triage.</p>"
    else:
        transient = " (transient infrastructure)" if verdict.transient else ""
        explains = f"<p>Explains: {_h(', '.join(verdict.explains))}</p>" if verdict.explains else ""
        block = (f"<p class='e2e-verdict'><b>Root cause: layer <code>{_h(verdict.layer)}</code>, cause "
                 f"<code>{_h(verdict.cause)}</code></b>{transient}: {_h(verdict.message)}</p>"
                 f"<p><b>Hint:</b> {_h(verdict.hint)}</p>"
                 f"<pre class='e2e-evidence'>{_h(chr(10).join(verdict.evidence))}</pre>{explains}")
    if reruns is not None:
        done = "; ".join(f"{r['test']} (attempt {r['attempt']}: {r['verdict']})" for r in reruns["reruns"]) or "none"
        block += f"<p><b>--rerun-infra {reruns['allowed']}</b>: {_h(reruns['policy'])}. Reruns: {_h(done)}</p>"
    return f"<h2>Verdict</h2>{block}"


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_summary(prefix, summary, postfix, session) -> None:
    config = session.config
    strat = config.stash.get(STRATEGY_KEY, None)
    if strat is not None:
        prefix.append(verdict_html(_verdict(config), _rerun_summary(config)))
        rows = "".join(f"<tr><th style='text-align:left'>{k}</th><td>{redact(str(v))}</td></tr>"
                       for k, v in provenance(strat).items())
        prefix.append(f"<h2>Provenance</h2><table class='e2e-provenance'>{rows}</table>")
    if strat is None and _is_xdist_controller(config):
        prefix.append(_merged_verdicts_html(reports_latest(config) / "metrics.json"))
    if strat is not None or _is_xdist_controller(config):
        trend = trend_html(read_history(reports_latest(config).parent / "history.jsonl"))
        if trend:
            postfix.append(trend)


def _merged_verdicts_html(path: Path) -> str:
    """Under xdist: one verdict line per target, from the merged metrics.json."""
    import html
    import json

    try:
        targets = json.loads(path.read_text()).get("targets") or {}
    except (OSError, ValueError):
        return ""
    rows = []
    for name, m in sorted(targets.items()):
        t = m.get("triage")
        text = (f"{t.get('layer')} / {t.get('cause')} — {t.get('hint', '')}" if isinstance(t, dict) and t
                else "all checks passed")
        rows.append(f"<tr><th style='text-align:left'>{html.escape(name)}</th><td>{html.escape(redact(text))}</td></tr>")
    return f"<h2>Verdict per target</h2><table class='e2e-verdicts'>{''.join(rows)}</table>" if rows else ""


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    strat = config.stash.get(STRATEGY_KEY, None)
    latest = config.stash.get(RUN_DIR_KEY, None)
    if _is_xdist_controller(config) and latest is not None:
        _merge_worker_metrics(config, latest)
        return
    if strat is None or latest is None:
        return
    xml = getattr(config, "_xml", None) or config.stash.get(_junit_key(), None)
    if xml is not None:
        for key, value in provenance(strat).items():
            xml.add_global_property(key, redact(str(value)))
    metrics = build_metrics(strat, outcomes=config.stash[_OUTCOMES], triage=_verdict(config),
                            reruns=_rerun_summary(config))
    write_json(latest / "metrics.json", metrics)
    (latest / "summary.md").write_text(render_summary(metrics))
    if not worker_id(config):
        append_history(reports_latest(config).parent / "history.jsonl", metrics)


def _merge_worker_metrics(config: pytest.Config, latest: Path) -> None:
    """One metrics.json keyed by target (each xdist worker drove its own target)."""
    import json

    targets = {}
    for path in sorted(latest.glob("*/metrics.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        name = (data.get("target") or {}).get("name") or path.parent.name
        targets[name] = data
    outcomes = config.stash[_OUTCOMES]
    merged = {"schema": "helix-e2e/metrics/1", "tests": outcomes, "targets": targets}
    write_json(latest / "metrics.json", merged)
    summaries = [render_summary({**m, "tests": m.get("tests") or {}}) for m in targets.values()]
    (latest / "summary.md").write_text("\n".join(summaries))
    for m in targets.values():
        append_history(latest.parent / "history.jsonl", m)


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    strat = config.stash.get(STRATEGY_KEY, None)
    if strat is None:
        return
    tr = terminalreporter
    tr.section("helix-e2e phases")
    for line in strat.timeline.table().splitlines():
        tr.write_line(line)
    if strat.broken is not None:
        tr.write_line(redact(f"target broken in the {strat.broken[0]} phase: {strat.broken[1]}"), red=True)
    tr.section("helix-e2e verdict")
    verdict = _verdict(config)
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
    reruns = _rerun_summary(config)
    if reruns is not None:
        tr.write_line(f"--rerun-infra {reruns['allowed']}: {reruns['policy']}")
        for r in reruns["reruns"]:
            tr.write_line(redact(f"  reran {r['test']} (attempt {r['attempt']}): {r['verdict']}"), yellow=True)
    for err in strat.teardown_errors:
        tr.write_line(redact(f"teardown: {err}"), yellow=True)
    latest = config.stash.get(RUN_DIR_KEY, None)
    if latest is not None:
        tr.write_line(f"reports: {latest}")


def _junit_key():
    try:
        from _pytest.junitxml import xml_key
    except ImportError:  # pragma: no cover - older pytest
        return pytest.StashKey[object]()
    return xml_key


class _ProgressPrinter:
    """One line per phase, plus a 'still waiting' line while a phase waits, so a long boot never
    looks like a hang. Writes to a dup of the terminal taken at configure time (before output
    capture resumes), so it shows while fixtures and tests run."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        try:
            self.fd: int | None = os.dup(sys.__stdout__.fileno())
        except (OSError, ValueError, AttributeError):
            self.fd = None
        self.tty = bool(self.fd is not None and os.isatty(self.fd))
        self.interval = 5.0 if self.tty else 15.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._active: list = []
        self._thread: threading.Thread | None = None

    def _write(self, text: str) -> None:
        if self.fd is None or self.config.getoption("verbose", 0) < 0 and not text.startswith("❌"):
            return
        data = ("\n" + redact(text)).encode("utf-8", "replace")
        with self._lock:
            try:
                os.write(self.fd, data)
            except OSError:
                pass

    def __call__(self, event: str, record) -> None:
        if event == "start":
            self._active.append(record)
            self._write(f"⏳ {record.name}: {record.what} …")
            self._ensure_thread()
        elif event == "end":
            if record in self._active:
                self._active.remove(record)
            mark = {"ok": "✅", "failed": "❌", "skipped": "⏭️"}.get(record.outcome, "•")
            extra = f": {record.error}" if record.error else ""
            self._write(f"{mark} {record.name} {record.outcome} in {record.duration_s:.1f}s{extra}")

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._tick, name="e2e-progress", daemon=True)
            self._thread.start()

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            for record in list(self._active):
                if record.duration_s < self.interval:
                    continue
                detail = f": {record.detail}" if record.detail else ""
                self._write(f"   … {record.name} still waiting for {record.what} ({record.duration_s:.0f}s){detail}")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self.fd is not None:
            try:
                os.write(self.fd, b"\n") if self._active else None
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None
