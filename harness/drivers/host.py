"""The Mac host's own evidence: crash reports and QEMU's helix-debug.log.

Before the VM starts we snapshot the crash-report dir and the log size; afterwards only new
`.ips` reports and the bytes appended since then count (macos-frame-export.md §2, §3).
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

from ..config import HostConfig, expand
from ..errors import HarnessError
from ..protocols.ips import CrashReport, parse_ips


@dataclass(frozen=True)
class HostSnapshot:
    crash_reports: dict[str, float]  # name -> mtime
    log_size: int


class HostArtifacts:
    """The crash-report dir and QEMU's host log. A VM provider may point them elsewhere: Helix.app's QEMU
    logs to its own stderr (a file the provider writes), and its crashes are ``qemu-system-aarch64-*.ips``."""

    def __init__(self, cfg: HostConfig) -> None:
        self.cfg = cfg
        self.crash_dir = Path(expand(cfg.crash_dir))
        self.debug_log = Path(expand(cfg.helix_debug_log))
        self.crash_globs: tuple[str, ...] = (cfg.crash_glob,)

    def use_log(self, path: "str | os.PathLike[str]") -> None:
        """Read QEMU's host log from ``path`` instead of ``[host] helix_debug_log``."""
        self.debug_log = Path(path)

    def use_crash_globs(self, *globs: str) -> None:
        """Count crash reports whose names match any of ``globs`` (instead of ``[host] crash_glob``)."""
        self.crash_globs = tuple(globs)

    def _reports(self) -> dict[str, float]:
        if not self.crash_dir.is_dir():
            return {}
        out = {}
        try:
            entries = list(os.scandir(self.crash_dir))
        except OSError as exc:
            raise HarnessError(f"cannot list crash-report dir {self.crash_dir}: {exc.strerror}", phase="host") from None
        for entry in entries:
            if any(fnmatch.fnmatch(entry.name, glob) for glob in self.crash_globs):
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
