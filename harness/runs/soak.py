"""Soak: N sessions back to back in one VM, to catch the VM that gets slow after running a while.

Each iteration is the strategy's own ``stack_up → streaming → stack_up`` round trip (start a
session, vkcube, a stream, stop), measured; with ``reboot_every`` the VM is power-cycled through
the same state machine. The verdict compares the last third with the first third, reports the
slope of every figure, and checks that a reboot restores the first iteration's figures
(macos-frame-export.md §7: "fresh boot fast, after running sometimes slow, after reboot fast").
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from ..errors import HarnessError
from ..analysis.logscan import scan_text
from ..strategy import Status, Strategy

log = logging.getLogger(__name__)

#: Figures recorded per iteration; the direction says which way is worse.
FIGURES = {
    "fps": "lower",
    "fps_min_window": "lower",
    "ttff_s": "higher",  # session start → first frame
    "jitter_p99_ms": "higher",
    "stalls": "higher",
    "guest_load1": "higher",
    "guest_mem_used_mb": "higher",
    "qemu_rss_mb": "higher",
    "qemu_cpu_percent": "higher",
    "host_log_growth_bytes": "higher",
    "frame_drops": "higher",
}


@dataclass
class SoakMargins:
    fps_drop: float = 0.15  # last third's fps may be at most 15 % below the first third's
    ttff_rise: float = 0.50  # time-to-first-frame at most +50 %
    reboot_restore: float = 0.15  # after a reboot, fps within 15 % of iteration 1


@dataclass
class SoakResult:
    iterations: list[dict[str, Any]] = field(default_factory=list)
    reboots: list[int] = field(default_factory=list)  # iteration indexes that followed a reboot
    slopes: dict[str, float | None] = field(default_factory=dict)
    thirds: dict[str, dict[str, float | None]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"iterations": self.iterations, "reboots": self.reboots, "slopes": self.slopes,
                "thirds": self.thirds, "problems": self.problems, "ok": self.ok}


def _qemu_process(strategy: Strategy) -> psutil.Process | None:
    """The host process serving the frame-export port: QEMU (QEMULauncher) on a real Mac."""
    port = strategy.target.frame_export.port
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return psutil.Process(conn.pid)
    except (psutil.Error, OSError):
        return None
    return None


def _guest_stats(strategy: Strategy) -> dict[str, float | None]:
    res = strategy.drivers.ssh.run("cat /proc/loadavg; grep -E '^(MemTotal|MemAvailable):' /proc/meminfo", timeout=20,
                           phase="soak", check=False)
    out: dict[str, float | None] = {"guest_load1": None, "guest_mem_used_mb": None}
    parts = res.stdout.split()
    try:
        out["guest_load1"] = float(parts[0])
    except (IndexError, ValueError):
        pass
    mem = dict(re.findall(r"^(MemTotal|MemAvailable):\s+(\d+)", res.stdout, re.M))
    if "MemTotal" in mem and "MemAvailable" in mem:
        out["guest_mem_used_mb"] = round((int(mem["MemTotal"]) - int(mem["MemAvailable"])) / 1024, 1)
    return out


def measure_iteration(strategy: Strategy, index: int) -> dict[str, Any]:
    """One session round trip, measured."""
    strategy.ensure(Status.stack_up)
    qemu = _qemu_process(strategy)
    cpu_t0 = sum(qemu.cpu_times()[:2]) if qemu else None
    wall0 = time.monotonic()
    log_before = strategy.drivers.host.snapshot()
    strategy.transition(Status.streaming)
    run = strategy.record.stream
    cap = run.capture
    t = cap.timing or {}
    host_bytes = strategy.drivers.host.new_log_bytes(log_before)
    drops = scan_text(host_bytes).drops
    row: dict[str, Any] = {
        "iteration": index,
        "session_id": run.session_id,
        "fps": t.get("fps"),
        "fps_min_window": t.get("fps_min_window"),
        "ttff_s": round(cap.first_frame_wall - run.session_started_wall, 3)
        if cap.first_frame_wall and run.session_started_wall else None,
        "jitter_p99_ms": (t.get("jitter_ms") or {}).get("p99"),
        "stalls": len(t.get("stalls") or []),
        "host_log_growth_bytes": len(host_bytes),
        "frame_drops": sum(drops.values()) if drops else 0,
        "stream_end": cap.end,
    }
    row.update(_guest_stats(strategy))
    if qemu is not None:
        try:
            row["qemu_rss_mb"] = round(qemu.memory_info().rss / 2**20, 1)
            elapsed = time.monotonic() - wall0
            row["qemu_cpu_percent"] = round(100 * (sum(qemu.cpu_times()[:2]) - cpu_t0) / elapsed, 1) if elapsed else None
        except psutil.Error:
            row["qemu_rss_mb"] = row["qemu_cpu_percent"] = None
    strategy.transition(Status.stack_up)  # stop vkcube and the session
    return row


def slope(values: list[float | None]) -> float | None:
    """Least-squares slope per iteration (None with fewer than 2 points)."""
    pts = [(i, v) for i, v in enumerate(values) if isinstance(v, (int, float))]
    if len(pts) < 2:
        return None
    n = len(pts)
    mx = sum(i for i, _ in pts) / n
    my = sum(v for _, v in pts) / n
    den = sum((i - mx) ** 2 for i, _ in pts)
    return round(sum((i - mx) * (v - my) for i, v in pts) / den, 4) if den else None


def _mean(values) -> float | None:
    vals = [v for v in values if isinstance(v, (int, float))]
    return sum(vals) / len(vals) if vals else None


def evaluate(result: SoakResult, margins: SoakMargins) -> SoakResult:
    rows = result.iterations
    result.problems.clear()
    for name in FIGURES:
        result.slopes[name] = slope([r.get(name) for r in rows])
    # Compare thirds within the same boot: the segment before the first reboot.
    segment = rows if not result.reboots else rows[: result.reboots[0]]
    k = max(1, len(segment) // 3)
    if len(segment) >= 3:
        first, last = segment[:k], segment[-k:]
        for name in FIGURES:
            result.thirds[name] = {"first": _mean(r.get(name) for r in first), "last": _mean(r.get(name) for r in last)}
        f = result.thirds["fps"]
        if f["first"] and f["last"] is not None and f["last"] < f["first"] * (1 - margins.fps_drop):
            result.problems.append(
                f"fps fell from {f['first']:.1f} (first third) to {f['last']:.1f} (last third): "
                f"more than {margins.fps_drop:.0%} — the VM slows down after running (slope {result.slopes['fps']}/session)"
            )
        tt = result.thirds["ttff_s"]
        if tt["first"] and tt["last"] is not None and tt["last"] > tt["first"] * (1 + margins.ttff_rise):
            result.problems.append(
                f"time to first frame rose from {tt['first']:.2f}s to {tt['last']:.2f}s: more than "
                f"{margins.ttff_rise:.0%} (slope {result.slopes['ttff_s']}s/session)"
            )
    if result.reboots and rows and isinstance(rows[0].get("fps"), (int, float)):
        base = rows[0]["fps"]
        for idx in result.reboots:
            after = rows[idx].get("fps") if idx < len(rows) else None
            if not isinstance(after, (int, float)) or after < base * (1 - margins.reboot_restore):
                result.problems.append(
                    f"after the reboot before iteration {idx + 1}, fps was {after} — a reboot did not restore the "
                    f"first iteration's {base:.1f}"
                )
    for r in rows:
        if r.get("stream_end") not in ("duration", None):
            result.problems.append(f"iteration {r['iteration'] + 1}: the stream ended early ({r['stream_end']})")
    return result


def run_soak(strategy: Strategy, sessions: int, *, reboot_every: int = 0, margins: SoakMargins | None = None,
             on_iteration=None) -> SoakResult:
    if sessions < 1:
        raise HarnessError("--soak-sessions must be at least 1", phase="config")
    result = SoakResult()
    for i in range(sessions):
        if reboot_every and i and i % reboot_every == 0:
            with strategy.timeline.phase("soak_reboot", f"a reboot before iteration {i + 1}"):
                strategy.transition(Status.off)
            result.reboots.append(i)
        row = measure_iteration(strategy, i)
        result.iterations.append(row)
        if on_iteration:
            on_iteration(row)
    return evaluate(result, margins or SoakMargins())


def chart_svg(result: SoakResult, figure: str, width: int = 420, height: int = 120) -> str:
    """One figure per iteration as a line chart (reboots marked)."""
    values = [r.get(figure) for r in result.iterations]
    pts = [(i, v) for i, v in enumerate(values) if isinstance(v, (int, float))]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="10" '
             f'font-family="sans-serif" class="soak-chart"><text x="4" y="12">{figure} per iteration</text>']
    if pts:
        lo = min(v for _, v in pts)
        hi = max(v for _, v in pts)
        span = (hi - lo) or 1.0
        n = max(1, len(values) - 1)

        def xy(i, v):
            return 30 + (width - 40) * i / n, height - 16 - (height - 36) * (v - lo) / span

        for idx in result.reboots:
            x, _ = xy(idx, lo)
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="16" y2="{height - 16}" stroke="#ef6c00" '
                         'stroke-dasharray="3,2"><title>reboot</title></line>')
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in pts))
        parts.append(f'<polyline class="series" fill="none" stroke="#1565c0" stroke-width="2" points="{line}"/>')
        for i, v in pts:
            x, y = xy(i, v)
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="#1565c0"><title>#{i + 1}: {v}</title></circle>')
        parts.append(f'<text x="2" y="{height - 16}">{lo:g}</text><text x="2" y="26">{hi:g}</text>')
    parts.append("</svg>")
    return "".join(parts)
