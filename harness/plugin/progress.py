"""The terminal's live progress lines: one per phase, plus a 'still waiting' line while a phase waits."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from ..redact import redact


class ProgressPrinter:
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
