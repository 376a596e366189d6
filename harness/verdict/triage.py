"""One verdict per run: which layer broke, why, the lines that prove it, and what to do.

:func:`triage` reads the run's :class:`~harness.verdict.checks.Finding` list (what the checks, or the tests,
produced) and the strategy (its broken phase and its preflight), and picks the *root cause*:

1. a failed preflight (the doctor) — nothing after it ran;
2. a catastrophe that explains everything after it: QEMU could not start or crashed, the VM stopped,
   the desktop container was OOM-killed or restarted, SSH died;
3. any other failure, outermost layer first (``host`` … ``client``, :data:`harness.verdict.checks.LAYERS`):
   a broken ``ssh`` phase explains the ``stream`` checks that could not run;
4. symptoms last (a static screen, an undecodable or missing stream, the CLI disagreeing): they are
   the verdict only when nothing else failed.

Every other failed check is listed in ``explains``. A verdict is *transient* when its layer is
``host``, ``utm`` or ``ssh`` and its cause is one that goes away by itself (an Apple Event OSStatus,
SSH refused while the guest boots): only those are rerun by ``--rerun-infra``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from ..causes import CATASTROPHE, CATASTROPHE_ORDER, CAUSES, LAYER_HINTS, LAYERS, SYMPTOM, transient_causes
from .checks import Finding, from_doctor, from_error

__all__ = ["Verdict", "triage", "TRANSIENT_LAYERS", "TRANSIENT_CAUSES", "strategy_findings"]

#: Causes that go away by themselves (an Apple Event OSStatus, SSH refused while the guest boots):
#: only these are rerun by --rerun-infra (the ``transient`` column of :mod:`harness.causes`).
TRANSIENT_CAUSES = transient_causes()
#: The layers of those causes.
TRANSIENT_LAYERS = frozenset(CAUSES[c].layer for c in TRANSIENT_CAUSES)


@dataclass(frozen=True)
class Verdict:
    """The run's root cause: the blamed ``layer`` (one of ``checks.LAYERS``), a short ``cause``, the
    ``evidence`` (lines and bytes that prove it) and a ``hint`` (what to do)."""

    layer: str
    cause: str
    evidence: tuple[str, ...]
    hint: str
    check: str = ""  # the check (or preflight/phase) that found it
    message: str = ""
    explains: tuple[str, ...] = field(default=())  # the other failed checks this explains

    def __post_init__(self) -> None:
        if self.layer not in LAYERS:
            raise ValueError(f"verdict layer {self.layer!r} is not one of {LAYERS}")
        object.__setattr__(self, "evidence", tuple(self.evidence))
        object.__setattr__(self, "explains", tuple(self.explains))

    @property
    def transient(self) -> bool:
        """Worth a rerun: transient infrastructure, never a product failure."""
        return self.cause in TRANSIENT_CAUSES and CAUSES[self.cause].layer == self.layer

    def summary(self) -> str:
        """One line: ``layer/cause: message (hint: …)``."""
        text = f"{self.layer}/{self.cause}: {self.message or self.check}"
        return f"{text} (hint: {self.hint})" if self.hint else text

    def as_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "cause": self.cause, "evidence": list(self.evidence), "hint": self.hint,
                "check": self.check, "message": self.message, "transient": self.transient,
                "explains": list(self.explains)}


def strategy_findings(strategy: Any) -> list[Finding]:
    """The failures a strategy knows of by itself: its failed preflight checks and its broken phase."""
    out: list[Finding] = []
    if strategy is None:
        return out
    record = strategy.record
    if record.preflight_failure:
        for check in record.preflight:
            if check.get("status") == "fail":
                out.append(from_doctor(check))
    broken = getattr(strategy, "broken", None)
    if broken is not None:
        phase, exc = broken
        out.append(from_error(f"phase:{phase}", exc))
    return out


def _rank(item: tuple[int, Finding]) -> tuple[int, int, int, int]:
    index, f = item
    row = CAUSES.get(f.cause)
    kind = row.rank if row is not None else "failure"
    if f.check.startswith("preflight:"):
        tier = 0
    elif kind == CATASTROPHE:
        tier = 1
    elif kind == SYMPTOM:
        tier = 3
    else:
        tier = 2
    sub = CATASTROPHE_ORDER.index(f.cause) if tier == 1 and f.cause in CATASTROPHE_ORDER else 0
    layer = LAYERS.index(f.layer) if f.layer in LAYERS else len(LAYERS)
    return tier, sub, layer, index


def triage(findings: Iterable[Finding], strategy: Any = None) -> Verdict | None:
    """The root cause of a run, or ``None`` when every finding is ok.

    ``strategy`` (optional) adds what it knows without a finding: a failed preflight and the broken
    phase (the tests after it were skipped, so no check reported it)."""
    items = list(findings)
    failed = [f for f in items if not f.ok]
    for extra in strategy_findings(strategy):
        if extra.check.startswith("preflight:") and any(f.check == extra.check for f in failed):
            continue
        if extra.check.startswith("phase:") and any(f.cause == extra.cause and f.layer == extra.layer for f in failed):
            continue  # a check already reported the broken phase
        failed.append(extra)
    if not failed:
        return None
    ordered = sorted(enumerate(failed), key=_rank)
    root = ordered[0][1]
    others = []
    for _, f in ordered[1:]:
        if f.check != root.check and f.check not in others:
            others.append(f.check)
    row = CAUSES.get(root.cause)
    hint = root.hint or (row.hint if row is not None else "") or LAYER_HINTS.get(root.layer, "")
    evidence = list(root.evidence) or [root.message]
    return Verdict(layer=root.layer, cause=root.cause, evidence=tuple(evidence), hint=hint, check=root.check,
                   message=root.message, explains=tuple(others))
