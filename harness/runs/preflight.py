"""The doctor as the suite's preflight, in one place for the pytest fixture and the in-process runner.

It runs ``helix-e2e doctor``'s checks inside the run's timeline (phase ``preflight``) and writes what
they found into the run record: the checks that did not pass, the installed QEMU's VERSION marker
(the runtime version check compares against it), and the doctor's summary when a check failed.
"""

from __future__ import annotations

from pathlib import Path

from ..doctor import run_doctor
from ..errors import HarnessError
from ..strategy import Strategy
from ..verdict.checks import from_doctor


class PreflightFailed(HarnessError):
    """A doctor check failed: the run must not go on, and must not pass. Its cause is the first failed check's."""

    default_phase = "preflight"


def run_preflight(strategy: Strategy, reports_dir: Path) -> str:
    """Run the doctor's checks for the strategy's target; return the failure summary ("" when none failed)."""
    record = strategy.record
    with strategy.timeline.phase("preflight", "the doctor's checks (no VM needed)") as h:
        report = run_doctor(strategy.target, reports_dir=reports_dir)
        qv = report.get("qemu_version")
        if qv is not None and qv.data.get("binary_version"):
            record.qemu_binary_version = qv.data["binary_version"]
        record.preflight = [_as_dict(c) for c in report.checks if c.status != "ok"]
        if report.failed:
            record.preflight_failure = report.summary()
            h.skip(record.preflight_failure)
    return record.preflight_failure


def _as_dict(check) -> dict:
    """A doctor check as the record keeps it: its JSON fields, plus the cause it names, if any."""
    d = check.as_dict()
    cause = (check.data or {}).get("cause")
    if cause:
        d["cause"] = cause
    return d


def preflight_error(strategy: Strategy) -> PreflightFailed | None:
    """The error that fails a run whose preflight failed (``None`` when it did not)."""
    record = strategy.record
    failed = [from_doctor(c) for c in record.preflight if c.get("status") == "fail"]
    if not record.preflight_failure or not failed:
        return None
    first = failed[0]
    return PreflightFailed(f"preflight (helix-e2e doctor) failed: {record.preflight_failure}", cause=first.cause,
                           hint=first.hint or None)
