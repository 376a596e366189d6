"""Headless Chromium for the report tests: a page is loaded, laid out and looked at as a person would.

Chromium runs with the flags the network-less CI needs (``CHROMIUM_FLAGS``) and a fresh
``--user-data-dir``; the tests drive it over the DevTools protocol (JSON messages on a WebSocket,
through the ``websockets`` library): open a page at a window size, wait for its load event, evaluate
an expression in it (element positions, what is visible), take a screenshot of the first screen or
of the whole page. Every wait is bounded by a deadline; the browser runs in its own process group,
which :meth:`Browser.close` kills and reaps.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM = next((p for p in map(shutil.which, BROWSERS) if p), None)
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)
SKIP_REASON = "headless Chromium is not installed (Debian: apt-get install chromium; `make test` does it as root)"
#: Loopback only: never through a proxy from the environment.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))
#: The first screen a person sees.
FIRST_SCREEN = (1280, 800)


class BrowserError(AssertionError):
    pass


class Browser:
    """``with Browser(profile_dir) as b: page = b.open(url)``."""

    def __init__(self, profile_dir: Path, *, timeout: float = 30.0, executable: str | None = None) -> None:
        self.profile_dir = Path(profile_dir)
        self.timeout = timeout
        self.executable = executable or CHROMIUM
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._stderr: list[str] = []
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    def __enter__(self) -> "Browser":
        if self.executable is None:
            raise BrowserError(SKIP_REASON)
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        argv = [self.executable, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile_dir}", "--remote-debugging-port=0",
                "--hide-scrollbars", f"--window-size={FIRST_SCREEN[0]},{FIRST_SCREEN[1]}", "about:blank"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self._reader = threading.Thread(target=self._read_stderr, name="chromium-stderr", daemon=True)
        self._reader.start()
        if not self._ready.wait(self.timeout) or not self.port:
            self.close()
            raise BrowserError(f"Chromium did not open its DevTools port within {self.timeout:.0f}s:\n"
                               + "".join(self._stderr[-30:]))
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace")
            self._stderr.append(line)
            if "DevTools listening on ws://" in line and not self.port:
                hostport = line.split("ws://", 1)[1].split("/", 1)[0]
                self.port = int(hostport.rsplit(":", 1)[1])
                self._ready.set()
        self._ready.set()  # the browser exited: stop waiting

    def _page_ws(self) -> str:
        deadline = time.monotonic() + self.timeout
        while True:
            with _LOCAL.open(f"http://127.0.0.1:{self.port}/json/list", timeout=5) as resp:
                pages = [t for t in json.load(resp) if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            if time.monotonic() > deadline:
                raise BrowserError("Chromium has no page target")
            self._ready.wait(0.1)  # polling interval, not synchronisation

    def open(self, url: str, *, width: int = FIRST_SCREEN[0], height: int = FIRST_SCREEN[1]) -> "Page":
        page = Page(self._page_ws(), timeout=self.timeout)
        page.load(url, width=width, height=height)
        return page

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            self.proc.wait(timeout=30)
            if self.proc.stderr is not None:
                self.proc.stderr.close()
        if self._reader is not None:
            self._reader.join(timeout=10)


class Page:
    """One tab, driven over its DevTools WebSocket."""

    def __init__(self, ws_url: str, *, timeout: float) -> None:
        from websockets.sync.client import connect

        self.timeout = timeout
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(ws_url, max_size=None, open_timeout=timeout, proxy=None))
        self._id = 0
        self._events: list[dict[str, Any]] = []

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> "Page":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            msg = self._recv(deadline, method)
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._events.append(msg)

    def wait_event(self, name: str) -> dict[str, Any]:
        for i, msg in enumerate(self._events):
            if msg.get("method") == name:
                return self._events.pop(i)
        deadline = time.monotonic() + self.timeout
        while True:
            msg = self._recv(deadline, name)
            if msg.get("method") == name:
                return msg
            self._events.append(msg)

    def _recv(self, deadline: float, what: str) -> dict[str, Any]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BrowserError(f"no answer to {what} within {self.timeout:.0f}s")
        try:
            return json.loads(self.ws.recv(timeout=left))
        except TimeoutError:
            raise BrowserError(f"no answer to {what} within {self.timeout:.0f}s") from None

    def load(self, url: str, *, width: int, height: int) -> None:
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        self._events.clear()
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-able values)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}…: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    def html(self) -> str:
        """The page as rendered (after its scripts ran)."""
        return self.evaluate("document.documentElement.outerHTML")

    def screenshot(self, path: Path, *, full_page: bool = False) -> Path:
        """A PNG of the first screen, or of the whole page."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            w, h = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": w, "height": h, "scale": 1})
        data = self.call("Page.captureScreenshot", **params)["data"]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def box(self, selector: str) -> dict[str, float] | None:
        """The element's box on the page (``top``/``bottom`` from the top of the page), or ``None``."""
        return self.evaluate(
            "(() => { const e = document.querySelector(%s); if (!e) return null; const r = e.getBoundingClientRect();"
            " return {top: r.top + scrollY, bottom: r.bottom + scrollY, left: r.left, right: r.right,"
            " width: r.width, height: r.height, visible: !!(e.offsetParent || e.getClientRects().length)}; })()"
            % json.dumps(selector))
