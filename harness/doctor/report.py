"""The doctor's result types: one :class:`Check` per check, a :class:`DoctorReport` over all of them, and
how a report renders (``helix-e2e doctor`` text, ``--json``, the one-line skip reason).

A change to what a check *finds* goes to the module that runs it (:mod:`.qemu`, :mod:`.host`,
:mod:`.credentials`); a change to how findings are shown goes here. The small helpers at the end are shared
by every check module: the OS name, and the ``ok`` a check reports for a simulator target that is not yet
started.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import HarnessError

if TYPE_CHECKING:
    from ..config import TargetConfig

__all__ = [
    "OK", "WARN", "FAIL", "STATUSES", "Check", "DoctorReport", "DoctorError",
    "host_system", "sim_unprovisioned", "skipped_for_sim",
]

OK, WARN, FAIL = "ok", "warn", "fail"
STATUSES = (OK, WARN, FAIL)


class DoctorError(HarnessError):
    """A doctor input is unusable (source checkout, git, log text)."""

    default_phase = "doctor"


@dataclass(frozen=True)
class Check:
    """One verdict. ``finding`` is one line; ``fix`` may hold several lines (shell commands).

    ``data`` carries machine-readable extras for Python callers (e.g. ``binary_version``, ``vm_status``,
    ``offending``); it is not part of the JSON output.
    """

    name: str
    status: str
    finding: str
    fix: str = ""
    data: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise DoctorError(f"check {self.name}: status {self.status!r} is not one of {STATUSES}")
        if "\n" in self.finding:
            object.__setattr__(self, "finding", " ".join(self.finding.split()))

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "finding": self.finding, "fix": self.fix}


@dataclass
class DoctorReport:
    checks: list[Check]
    target: str = ""

    @property
    def failed(self) -> list[Check]:
        """The failed checks (empty, hence falsy, when nothing failed)."""
        return [c for c in self.checks if c.status == FAIL]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.status == WARN]

    def get(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def as_dict(self) -> dict[str, list[dict[str, str]]]:
        return {"checks": [c.as_dict() for c in self.checks]}

    def summary(self) -> str:
        """One line for a skip reason: the failed checks and their findings."""
        failed = self.failed
        if not failed:
            return f"doctor: all {len(self.checks)} checks passed ({len(self.warnings)} warnings)"
        parts = "; ".join(f"{c.name}: {c.finding}" for c in failed)
        return f"doctor: {len(failed)} check(s) failed: {parts} (run `helix-e2e doctor` for fixes)"

    def render_text(self) -> str:
        width = max((len(c.name) for c in self.checks), default=0)
        lines = [f"helix-e2e doctor: target {self.target}" if self.target else "helix-e2e doctor"]
        for c in self.checks:
            label = c.status if c.status == OK else c.status.upper()
            lines.append(f"{label:<5} {c.name:<{width}}  {c.finding}")
            if c.status != OK and c.fix:
                pad = " " * 6
                first, *rest = c.fix.splitlines()
                lines.append(f"{pad}fix: {first}")
                lines += [f"{pad}  {line}" for line in rest]
        counts = {s: sum(c.status == s for c in self.checks) for s in STATUSES}
        lines.append(f"{counts[OK]} ok, {counts[WARN]} warning(s), {counts[FAIL]} failed")
        return "\n".join(lines)


# -- shared by the check modules -------------------------------------------------------------------------
def host_system(system: str | None) -> str:
    """``system`` when a test gives one, else ``platform.system()`` (``Darwin`` on a Mac)."""
    return platform.system() if system is None else system


def sim_unprovisioned(target: TargetConfig) -> bool:
    """A simulator target before the simulator filled in its connection settings (vm.id among them; for
    provider helix-app, [vm] qemu: the simulator's launcher)."""
    if target.vm.provider == "helix-app":
        return target.is_sim and not target.vm.qemu
    return target.is_sim and not target.vm.id


def skipped_for_sim(name: str, what: str) -> Check:
    return Check(name, OK, f"skipped: simulator target not started (the simulator provides {what})")
