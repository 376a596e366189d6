"""The Mac host's own evidence: crash reports and QEMU's helix-debug.log.

Before the VM starts we snapshot the crash-report dir and the log size; afterwards only new
`.ips` reports and the bytes appended since then count (macos-frame-export.md §2, §3).
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..config import HostConfig, expand
from ..errors import HarnessError


@dataclass(frozen=True)
class HostSnapshot:
    crash_reports: dict[str, float]  # name -> mtime
    log_size: int


_PLUMBING = frozenset({"__pthread_kill", "pthread_kill", "abort", "__abort", "raise", "__pthread_kill_impl"})


@dataclass
class CrashReport:
    path: str
    process: str = ""
    indicator: str = ""  # e.g. "Abort trap: 6"
    signal: str = ""
    frames: list[str] = field(default_factory=list)
    parse_error: str = ""

    def interesting_frames(self) -> list[str]:
        """The crashed thread's frames without the libc/pthread abort plumbing at the top."""
        frames = [f for f in self.frames if f not in _PLUMBING]
        return frames or self.frames

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "process": self.process,
            "indicator": self.indicator,
            "signal": self.signal,
            "frames": self.frames,
            "parse_error": self.parse_error,
        }

    def summary(self) -> str:
        top = ", ".join(self.interesting_frames()[:3])
        return f"{Path(self.path).name}: {self.process or '?'} {self.indicator or self.signal or ''} {top}".strip()


def parse_ips(path: str | os.PathLike[str], limit: int = 4 << 20) -> CrashReport:
    """An `.ips` file: one JSON header line, then a JSON body (macOS 12+). Tolerant of garbage."""
    report = CrashReport(path=str(path))
    try:
        with open(path, "rb") as fh:
            raw = fh.read(limit).decode("utf-8", "replace")
    except OSError as exc:
        report.parse_error = f"unreadable: {exc.strerror}"
        return report
    header_text, _, body_text = raw.partition("\n")
    try:
        header = json.loads(header_text)
        report.process = str(header.get("app_name") or header.get("name") or "")
    except ValueError:
        header = {}
    try:
        body = json.loads(body_text) if body_text.strip() else {}
    except ValueError as exc:
        report.parse_error = f"body is not JSON: {exc}"
        return report
    if not isinstance(body, dict):
        report.parse_error = "body is not a JSON object"
        return report
    report.process = str(body.get("procName") or report.process)
    term = body.get("termination") or {}
    if isinstance(term, dict):
        report.indicator = str(term.get("indicator") or "")
        report.signal = str(term.get("namespace") or "")
    exc_info = body.get("exception") or {}
    if isinstance(exc_info, dict) and not report.signal:
        report.signal = str(exc_info.get("signal") or exc_info.get("type") or "")
    threads = body.get("threads") or []
    if isinstance(threads, list):
        crashed = next((t for t in threads if isinstance(t, dict) and t.get("triggered")), None)
        if crashed is None and threads and isinstance(threads[0], dict):
            crashed = threads[0]
        for frame in (crashed or {}).get("frames", [])[:8] if isinstance(crashed, dict) else []:
            if isinstance(frame, dict) and frame.get("symbol"):
                report.frames.append(str(frame["symbol"]))
    return report


class HostArtifacts:
    def __init__(self, cfg: HostConfig) -> None:
        self.cfg = cfg
        self.crash_dir = Path(expand(cfg.crash_dir))
        self.debug_log = Path(expand(cfg.helix_debug_log))

    def _reports(self) -> dict[str, float]:
        if not self.crash_dir.is_dir():
            return {}
        out = {}
        try:
            entries = list(os.scandir(self.crash_dir))
        except OSError as exc:
            raise HarnessError(f"cannot list crash-report dir {self.crash_dir}: {exc.strerror}", phase="host") from None
        for entry in entries:
            if fnmatch.fnmatch(entry.name, self.cfg.crash_glob):
                try:
                    out[entry.name] = entry.stat().st_mtime
                except OSError:
                    continue
        return out

    def _log_size(self) -> int:
        try:
            return self.debug_log.stat().st_size
        except OSError:
            return 0

    def snapshot(self) -> HostSnapshot:
        return HostSnapshot(crash_reports=self._reports(), log_size=self._log_size())

    def new_crash_reports(self, since: HostSnapshot) -> list[CrashReport]:
        now = self._reports()
        new = [n for n, m in now.items() if n not in since.crash_reports or m > since.crash_reports[n]]
        return [parse_ips(self.crash_dir / n) for n in sorted(new)]

    def new_log_bytes(self, since: HostSnapshot, limit: int = 64 << 20) -> bytes:
        """Only the bytes appended to helix-debug.log since the snapshot (a truncated log restarts at 0)."""
        size = self._log_size()
        start = since.log_size if size >= since.log_size else 0
        if size <= start:
            return b""
        with open(self.debug_log, "rb") as fh:
            fh.seek(start)
            return fh.read(min(size - start, limit))

    def describe(self) -> dict[str, str]:
        """The host for provenance: OS and version, and the machine model (``sysctl hw.model`` on a Mac)."""
        import platform
        import subprocess

        host_os, model = platform.platform(), platform.node()
        if platform.system() == "Darwin":
            host_os = f"macOS {platform.mac_ver()[0]} ({platform.machine()})"
            try:
                model = subprocess.run(["sysctl", "-n", "hw.model"], capture_output=True, text=True,
                                       timeout=5).stdout.strip() or model
            except (OSError, subprocess.SubprocessError):
                pass
        return {"host": host_os, "host_model": model}
