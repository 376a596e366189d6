"""Other viewers of the same session are normal traffic (issue 11): a second viewer that joins and leaves
while the suite streams, and a third that stays until the suite's capture has ended, leave the suite green,
and the third receives upstream's 6-byte 0x54 "left" for every viewer that went away.

The viewers are real WebSocket clients (``websockets``) speaking through the same sans-I/O stream core as
the capture (``harness.protocols.stream``, client role), against a simulator kept up with ``helix-e2e sim up``
while a child pytest runs the streaming suite against it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from childrun import REPO, child_env, outcomes, pytest_argv, read_junit
from harness.deadline import poll_until
from harness.protocols import stream as sp

EXE = Path(sys.executable).parent / "helix-e2e"
#: The suite's stream: long enough that a viewer can join, stay a second and leave inside it.
SUITE_STREAM_S = 6
pytestmark = pytest.mark.timeout(300)


@dataclass
class Viewer:
    """One extra viewer: what it received, in order, with the raw bytes of every 0x54."""

    name: str
    self_id: int | None = None
    joined: list[int] = field(default_factory=list)
    left: list[int] = field(default_factory=list)
    left_sizes: list[int] = field(default_factory=list)
    frames: int = 0
    error: str = ""
    done: threading.Event = field(default_factory=threading.Event)


async def _watch(viewer: Viewer, url: str, token: str, init: sp.Init, *, stay_s: float | None,
                 until: threading.Event) -> None:
    import websockets

    conn = sp.StreamConnection(sp.Role.CLIENT)
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                                  max_size=None, open_timeout=10) as ws:
        _, payload = conn.send(init)
        await ws.send(payload)
        end = time.monotonic() + stay_s if stay_s is not None else None
        while not until.is_set() and (end is None or time.monotonic() < end):
            try:
                data = await asyncio.wait_for(ws.recv(), timeout=0.2)
            except asyncio.TimeoutError:
                continue
            except websockets.ConnectionClosed:
                return
            kind = sp.Kind.TEXT if isinstance(data, str) else sp.Kind.BINARY
            event = conn.receive(kind, data)
            if isinstance(event, sp.SelfId):
                viewer.self_id = event.client_id
            elif isinstance(event, sp.RemoteUserLeft):
                viewer.left.append(event.user_id)
                viewer.left_sizes.append(len(data))
            elif isinstance(event, sp.RemoteUser) and event.action == sp.REMOTE_USER_JOINED:
                viewer.joined.append(event.user_id)
            elif isinstance(event, sp.VideoFrame):
                viewer.frames += 1


def _start(viewer: Viewer, url: str, token: str, init: sp.Init, *, stay_s: float | None = None,
           until: threading.Event | None = None) -> threading.Thread:
    def run() -> None:
        import websockets

        end = time.monotonic() + 60
        try:
            while True:
                try:
                    asyncio.run(_watch(viewer, url, token, init, stay_s=stay_s, until=until or threading.Event()))
                    return
                except websockets.InvalidStatus as exc:  # 503 "Sandbox not connected": the desktop is starting
                    if exc.response.status_code != 503 or time.monotonic() > end:
                        raise
                    time.sleep(0.3)
        except Exception as exc:  # noqa: BLE001 - reported by the test's assertions
            viewer.error = f"{type(exc).__name__}: {exc}"
        finally:
            viewer.done.set()

    thread = threading.Thread(target=run, name=f"viewer-{viewer.name}", daemon=True)
    thread.start()
    return thread


def _sessions(api_url: str, token: str) -> list[dict]:
    """The sessions the API lists ([] while the stack is not up yet)."""
    req = urllib.request.Request(f"{api_url}/api/v1/sessions", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())["sessions"]
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return []


def test_other_viewers_leave_the_suite_green(tmp_path):
    sim = subprocess.Popen([str(EXE), "sim", "up", "--json", "--root", str(tmp_path / "sim")],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    suite = None
    stop_c = threading.Event()
    threads: list[threading.Thread] = []
    try:
        info = json.loads(sim.stdout.readline())
        api, token = info["api_url"].rstrip("/"), info["api_key"]
        suite = subprocess.Popen(
            pytest_argv("--target", info["target_file"], "-q", report_dir=tmp_path / "r",
                        stream_duration=SUITE_STREAM_S),
            cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        session = poll_until(lambda: _sessions(api, token) or None, timeout=120, interval=0.1, max_interval=0.2,
                             what="the suite's session")[0]["session_id"]
        url = api.replace("http", "ws", 1) + f"/api/v1/external-agents/{session}/ws/stream"

        def init(unique: str) -> sp.Init:
            return sp.Init(session_id=session, width=1280, height=720, fps=40, bitrate=4000,
                           extra={"client_unique_id": unique})

        # C stays until the suite's capture has ended (the session's stop ends its socket).
        c = Viewer("C")
        threads.append(_start(c, url, token, init("viewer-c"), until=stop_c))
        poll_until(lambda: (c.self_id is not None and c.frames > 0) or c.done.is_set(), timeout=60,
                   interval=0.1, max_interval=0.2, what="viewer C's first frame")
        assert not c.done.is_set(), f"viewer C ended before its first frame: {c.error or 'the server closed it'}"
        # Wait for the suite's own viewers (its capture and the CLI's stream) to join, then B joins, watches a
        # second and leaves while they stream.
        poll_until(lambda: len(set(c.joined) - {c.self_id}) >= 2, timeout=60, interval=0.1, max_interval=0.2,
                   what="the suite's two viewers joining")
        b = Viewer("B")
        threads.append(_start(b, url, token, init("viewer-b"), stay_s=1.0))
        assert b.done.wait(30), "viewer B never finished"
        assert not b.error and b.self_id is not None and b.frames > 0, b
        out, _ = suite.communicate(timeout=240)
    finally:
        stop_c.set()
        for t in threads:
            t.join(timeout=10)
        if suite is not None and suite.poll() is None:
            suite.kill()
            suite.wait()
        sim.send_signal(signal.SIGTERM)
        sim.wait(timeout=30)

    assert suite.returncode == 0, out[-4000:]
    results = outcomes(read_junit(tmp_path / "r/latest/junit.xml"))
    assert len(results) == 9 and set(results.values()) == {"passed"}, results
    # C saw B (and the suite's own viewers) come and go: one 6-byte left each.
    assert not c.error, c.error
    assert b.self_id in c.joined and b.self_id in c.left, (b.self_id, c.joined, c.left)
    others = set(c.joined) - {c.self_id}
    assert others and others <= set(c.left), (others, c.left)
    assert c.left_sizes and set(c.left_sizes) == {6}, c.left_sizes
    # The suite's capture recorded the extra viewers as viewer events, not as errors.
    metrics = json.loads((tmp_path / "r/latest/metrics.json").read_text())
    events = metrics["viewer_events"]
    assert events["joins"] >= 1 and b.self_id in events["left_ids"], events
    assert metrics["stream_tally"].get("protocol_error_count", 0) == 0, metrics["stream_tally"]
