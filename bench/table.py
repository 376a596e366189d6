"""The one table ``python -m bench`` prints: metric, measured, reference, ratio/goal, status."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Row:
    metric: str
    measured: str
    reference: str
    goal: str
    ok: bool | None  # None: could not run

    @property
    def status(self) -> str:
        return "ERROR" if self.ok is None else "PASS" if self.ok else "FAIL"


HEADER = ("metric", "measured", "reference", "ratio/goal", "status")


def render(rows: list[Row]) -> str:
    cells = [HEADER] + [(r.metric, r.measured, r.reference, r.goal, r.status) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    lines = []
    for n, c in enumerate(cells):
        lines.append("  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
