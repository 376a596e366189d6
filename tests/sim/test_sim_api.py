"""The sim's Helix API: REST shapes and codes, auth, exec, and the WebSocket stream on a real loopback socket.

A real :class:`UtmHost` (with a do-nothing guest), :class:`DockerEngine` and :class:`QemuFrameExport`
sit behind the API, as in the simulator. Clients are the ones the harness uses: aiohttp for REST and
``websockets`` for the stream (aiohttp's client where WS control frames must be seen).
Fault timings are shortened with ``SimConfig.delay_scale``, the WS ping interval with ``SimConfig.ws_ping_interval_s``.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass

import aiohttp
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from harness.protocols.stream import (
    FLAG_REPLAY,
    RemoteUserLeft,
    StreamStatus,
    ConnectionComplete,
    CursorName,
    Init,
    Ping,
    Pong,
    RemoteUser,
    SelfId,
    StreamError,
    StreamInit,
    VideoFrame,
    parse_binary,
    parse_text,
)
from helix_sim.desktop import pipeline as desktop_pipeline
from helix_sim.guest.helix.cli import main as helix_main
from helix_sim.guest.helix.timing import CliTiming
from helix_sim.stack.api.models import NO_AGENT_ERROR
from helix_sim.stack.api import RUNNER_TOKEN, HelixApiServer, new_id
from helix_sim.config import SimConfig
from helix_sim.stack.docker_engine import DockerEngine
from helix_sim.host.utm_app import UtmHost
from helix_sim.host.qemu import QemuFrameExport

pytestmark = pytest.mark.timeout(60)

W, H = 448, 256
ULID = r"[0-9abcdefghjkmnpqrstvwxyz]{26}"
VKCUBE = {"command": ["vkcube", "--wsi", "wayland", "--present_mode", "1"], "background": True,
          "env": {"WAYLAND_DISPLAY": "wayland-0", "XDG_RUNTIME_DIR": "/run/user/1000"}}


async def wait_until(check, timeout: float = 5.0, what: str = "condition", interval: float = 0.02):
    end = time.monotonic() + timeout
    while True:
        value = await check() if asyncio.iscoroutinefunction(check) else check()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def nal_types(au: bytes) -> list[int]:
    types, i = [], au.find(b"\x00\x00\x01")
    while i >= 0 and i + 3 < len(au):
        types.append(au[i + 3] & 0x1F)
        i = au.find(b"\x00\x00\x01", i + 3)
    return types


def video_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sim-video-")]


class _Guest:
    def boot(self):
        return None

    def shutdown(self):
        return None


@dataclass
class Sim:
    config: SimConfig
    api: HelixApiServer
    engine: DockerEngine
    qemu: QemuFrameExport
    host: UtmHost
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.api.url

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.api_key}"}

    def ws_url(self, sid: str, query: str = "") -> str:
        return f"ws://127.0.0.1:{self.api.port}/api/v1/external-agents/{sid}/ws/stream{query}"

    async def new_session(self, *, wait: bool = True) -> str:
        r = await self.http.post("/api/v1/spec-tasks/from-prompt", json={"prompt": "Testing RevDial connectivity",
                                                                        "project_id": self.config.project_id})
        assert r.status == 201
        task = await r.json()
        r = await self.http.post(f"/api/v1/spec-tasks/{task['id']}/start-planning")
        assert r.status == 200
        sid = await self.planning_session(task["id"])
        if wait:
            async def has_container():
                data = await (await self.http.get(f"/api/v1/sessions/{sid}?skipInteractions=1")).json()
                return data["config"]["dev_container_id"]

            await wait_until(has_container, 10, "dev_container_id")
        return sid

    async def planning_session(self, task_id: str) -> str:
        """The orchestrator gives the queued task its planning session (``planning_session_id``)."""
        async def sid():
            return (await (await self.http.get(f"/api/v1/spec-tasks/{task_id}")).json()).get("planning_session_id")

        return await wait_until(sid, 5, "planning_session_id")

    async def exec(self, sid: str, body: dict) -> tuple[int, object]:
        r = await self.http.post(f"/api/v1/external-agents/{sid}/exec", json=body)
        return r.status, (await r.json() if r.content_type == "application/json" else await r.text())

    async def stream(self, sid: str, *, query: str = "", init: Init | None = None, session_id: bool = True, **kw):
        ws = await websockets.connect(self.ws_url(sid, query), additional_headers=self.auth, max_size=None, **kw)
        await ws.send((init or Init(sid if session_id else "", W, H, 40, 4000)).to_text())
        return ws


@pytest.fixture
async def make_sim(tmp_path):
    made: list[Sim] = []

    async def make(*, online: bool = True, **cfg) -> Sim:
        cfg.setdefault("width", W)
        cfg.setdefault("height", H)
        cfg.setdefault("boot_delay_s", 0.05)
        cfg.setdefault("sandbox_delay_s", 0.1)
        cfg.setdefault("session_delay_s", 0.1)
        cfg.setdefault("video_grace_s", 0.3)
        root = tmp_path / f"sim{len(made)}"
        config = SimConfig(root=root, **cfg)
        engine = DockerEngine(config, root / "docker.sock")
        qemu = QemuFrameExport(config, root / "host" / "helix-debug.log")
        api_holder: list[HelixApiServer] = []

        async def power_off():
            await api_holder[0].stop()

        host = UtmHost(config, root / "host", qemu=qemu, guest=_Guest(), engine=engine, on_power_off=power_off)
        api = HelixApiServer(config, engine, qemu, host)
        api_holder.append(api)
        host.start_vm()
        await host.wait_status("started", 5)
        await api.start(0)
        if online:
            api.sandbox_online()
        http = aiohttp.ClientSession(api.url, headers={"Authorization": f"Bearer {config.api_key}"})
        sim = Sim(config, api, engine, qemu, host, http)
        made.append(sim)
        return sim

    yield make
    for sim in made:
        await sim.http.close()
        await sim.api.stop()
        await sim.host.close()
    assert not video_threads()


async def recv(ws, timeout: float = 5.0):
    msg = await asyncio.wait_for(ws.recv(), timeout)
    return parse_text(msg) if isinstance(msg, str) else parse_binary(msg)


async def next_video(ws, timeout: float = 5.0) -> VideoFrame:
    while True:
        ev = await recv(ws, timeout)
        if isinstance(ev, VideoFrame):
            return ev


# --------------------------------------------------------------------------- REST


def test_ids_are_prefixed_lowercase_ulids():
    ids = {new_id("ses") for _ in range(50)}
    assert len(ids) == 50 and all(re.fullmatch(rf"ses_{ULID}", i) for i in ids)


async def test_auth_and_unauthenticated_endpoints(make_sim):
    sim = await make_sim()
    url, key = sim.url, sim.config.api_key
    async with aiohttp.ClientSession() as s:
        r = await s.get(f"{url}/api/v1/status")
        assert (r.status, await r.text()) == (401, "unauthorized\n")
        for kw in (
            {"headers": {"Authorization": f"Bearer {key}"}},
            {"headers": {"x-api-key": key}},
            {"headers": {"api-key": key}},
            {"headers": {"Cookie": f"access_token={key}"}},
            {"params": {"access_token": key}},
            {"headers": {"Authorization": f"Bearer {RUNNER_TOKEN}"}},
        ):
            r = await s.get(f"{url}/api/v1/status", **kw)
            assert r.status == 200, kw
            status = await r.json()
            assert {"admin", "user", "slug", "config"} <= status.keys()
        assert (await s.get(f"{url}/api/v1/status", headers={"Authorization": "Bearer hl-wrong"})).status == 401
        assert (await s.get(f"{url}/api/v1/sandboxes")).status == 401
        assert (await s.get(f"{url}/api/v1/config")).status == 200
        assert (await s.get(f"{url}/api/v1/health")).status == 200
        r = await s.get(f"{url}/api/v1/nope")
        assert (r.status, await r.text()) == (404, "404 page not found\n")


async def test_api_5xx_fault(make_sim):
    sim = await make_sim(faults={"api_5xx"})
    assert (await sim.http.get("/api/v1/status")).status == 502
    assert (await sim.http.get("/api/v1/sandboxes")).status == 200


async def test_sandbox_reports_desktop_versions_after_delay(make_sim):
    sim = await make_sim(online=False, sandbox_delay_s=0.3)
    assert await (await sim.http.get("/api/v1/sandboxes")).json() == []
    sim.api.sandbox_online()
    boxes = await (await sim.http.get("/api/v1/sandboxes")).json()
    assert len(boxes) == 1 and boxes[0]["status"] == "online" and "desktop_versions" not in boxes[0]

    async def versions():
        return (await (await sim.http.get("/api/v1/sandboxes")).json())[0].get("desktop_versions")

    assert "ubuntu" in await wait_until(versions, 3, "desktop_versions")
    box = (await (await sim.http.get("/api/v1/sandboxes")).json())[0]
    for key in ("id", "created", "updated", "ip_address", "hostname", "status", "last_seen", "gpu_vendor",
                "render_node", "active_sandboxes", "max_sandboxes", "privileged_mode", "helix_version"):
        assert key in box


async def test_spec_task_session_lifecycle(make_sim):
    sim = await make_sim(session_delay_s=0.3)
    r = await sim.http.post("/api/v1/spec-tasks/from-prompt", json={"prompt": "Testing RevDial connectivity"})
    assert r.status == 201
    task = await r.json()
    assert re.fullmatch(rf"spt_{ULID}", task["id"]) and "planning_session_id" not in task  # omitempty
    assert task["status"] == "backlog" and task["helix_app_id"] == sim.config.agent_id  # the project's default
    assert (await sim.http.post("/api/v1/spec-tasks/from-prompt", json={})).status == 400
    r = await sim.http.post(f"/api/v1/spec-tasks/{task['id']}/start-planning")
    assert r.status == 200
    queued = await r.json()  # answered before the orchestrator picks it up
    assert queued["status"] == "queued_spec_generation" and "status_updated_at" in queued
    sid = await sim.planning_session(task["id"])
    assert re.fullmatch(rf"ses_{ULID}", sid)
    got = await (await sim.http.get(f"/api/v1/spec-tasks/{task['id']}")).json()
    assert got["planning_session_id"] == sid and got["status"] == "spec_generation" and "metadata" not in got
    r = await sim.http.post(f"/api/v1/spec-tasks/{task['id']}/start-planning")
    assert (r.status, await r.text()) == (400, "task is not in backlog status (current: spec_generation)\n")
    assert (await sim.http.get("/api/v1/spec-tasks/spt_nope")).status == 404

    session = await (await sim.http.get(f"/api/v1/sessions/{sid}")).json()
    assert session["id"] == sid and session["config"]["dev_container_id"] == ""
    assert session["config"]["status_message"]  # still provisioning, with a status message
    for key in ("mode", "type", "name", "project_id", "interactions", "owner", "created", "updated"):
        assert key in session
    assert session["interactions"] and session["project_id"] == sim.config.project_id

    async def container_id():
        return (await (await sim.http.get(f"/api/v1/sessions/{sid}?skipInteractions=1")).json())["config"]["dev_container_id"]

    cid = await wait_until(container_id, 5, "container")
    session = await (await sim.http.get(f"/api/v1/sessions/{sid}?skipInteractions=1")).json()
    cfg = session["config"]
    assert cfg["container_id"] == cid and cfg["container_name"] == f"ubuntu-external-{sid[4:]}"
    assert cfg["external_agent_status"] == "running" and session["interactions"] == []
    container = sim.engine.get(cfg["container_name"])
    assert container is not None and container.id == cid and container.running
    assert container.labels["helix.sandbox"] == "helix-sandbox-macos-1"

    listing = await (await sim.http.get("/api/v1/sessions")).json()
    assert {"sessions", "page", "pageSize", "totalCount", "totalPages"} <= listing.keys()
    entry = listing["sessions"][0]
    assert entry["session_id"] == sid and entry["metadata"]["dev_container_id"] == cid
    assert entry["metadata"]["spec_task_id"] == task["id"]

    assert (await sim.http.get("/api/v1/sessions/ses_nope")).status == 404
    r = await sim.http.delete(f"/api/v1/sessions/{sid}/stop-external-agent")
    assert r.status == 200
    assert await r.json() == {"message": "external Zed agent stopped", "session_id": sid}
    assert sim.engine.get(cid) is None
    # A desktop already stopped is not an error: 400 is only for a session that is not zed_external.
    r = await sim.http.delete(f"/api/v1/sessions/{sid}/stop-external-agent")
    assert r.status == 200 and (await r.json())["session_id"] == sid
    assert (await sim.http.delete("/api/v1/sessions/ses_nope/stop-external-agent")).status == 404
    # POST /sessions/{id}/resume starts the desktop again (SessionResumeResponse).
    r = await sim.http.post(f"/api/v1/sessions/{sid}/resume")
    assert r.status == 200
    resumed = await r.json()
    assert resumed["session_id"] == sid and resumed["status"] == "resumed"
    assert resumed["screenshot_url"] == f"/api/v1/sessions/{sid}/screenshot"
    assert resumed["dev_container_id"] == await container_id() and resumed["dev_container_id"] != cid
    assert (await sim.http.get(f"/api/v1/external-agents/{sid}/screenshot")).status == 200
    assert (await (await sim.http.post(f"/api/v1/sessions/{sid}/resume")).json())["dev_container_id"] == \
        resumed["dev_container_id"]  # already running: the same container
    r = await sim.http.post("/api/v1/sessions/ses_nope/resume")
    assert (r.status, await r.text()) == (404, "session not found: not found\n")
    sim.api._sessions[sid].agent_type = ""
    r = await sim.http.delete(f"/api/v1/sessions/{sid}/stop-external-agent")
    assert (r.status, await r.text()) == (400, "session does not have an external Zed agent\n")
    r = await sim.http.post(f"/api/v1/sessions/{sid}/resume")
    assert (r.status, await r.text()) == (400, "only external agent sessions can be resumed\n")


async def test_no_container_fault(make_sim):
    sim = await make_sim(faults={"no_container"}, session_delay_s=0.1)
    sid = await sim.new_session(wait=False)
    deadline = time.monotonic() + 1.0  # ten times the session delay: it never comes
    while time.monotonic() < deadline:
        cfg = (await (await sim.http.get(f"/api/v1/sessions/{sid}")).json())["config"]
        assert cfg["dev_container_id"] == "" and cfg["container_id"] == ""
        await asyncio.sleep(0.1)
    assert cfg["status_message"]
    assert not [c for c in sim.engine.containers() if c.name.startswith("ubuntu-external-")]


async def test_slow_after_running_fault(make_sim):
    sim = await make_sim(faults={"slow_after_running"}, fps=40)
    first = await sim.new_session()
    second = await sim.new_session()
    f1, f2 = sim.api.session_desktop(first).fps, sim.api.session_desktop(second).fps
    assert f1 == 40 and f2 == pytest.approx(40 * 0.7)


# --------------------------------------------------------------------------- exec and screenshot


async def test_exec_allowlist_and_vkcube(make_sim):
    sim = await make_sim()
    sid = await sim.new_session()
    assert await sim.exec(sid, {"command": ["kitty"]}) == (403, "command not allowed: kitty\n")
    assert await sim.exec(sid, {"command": ["echo", "hi"]}) == (200, {"success": True, "exit_code": 0, "output": "hi"})
    status, body = await sim.exec(sid, VKCUBE)
    assert status == 200 and body["success"] is True and body["pid"] > 0
    assert await sim.exec(sid, {"command": ["pkill", "-0", "-f", "vkcube"]}) == (200, {"success": True, "exit_code": 0})
    assert (await sim.exec(sid, {"command": ["pkill", "-f", "vkcube"]}))[1]["exit_code"] == 0
    # never reaped: the killed vkcube is a zombie that pkill still finds
    assert await sim.exec(sid, {"command": ["pkill", "-0", "-f", "vkcube"]}) == (200, {"success": True, "exit_code": 0})
    status, body = await sim.exec(sid, {"command": ["cat", f"/proc/{body['pid']}/status"]})
    assert status == 200 and "\nState:\tZ (zombie)\n" in body["output"]
    r = await sim.http.post("/api/v1/external-agents/ses_nope/exec", json={"command": ["echo"]})
    assert (r.status, await r.text()) == (404, "Session not found\n")


async def test_exec_forbidden_fault(make_sim):
    sim = await make_sim(faults={"exec_forbidden"})
    sid = await sim.new_session()
    assert await sim.exec(sid, VKCUBE) == (403, "command not allowed: vkcube\n")


async def test_vkcube_dies_fault(make_sim):
    sim = await make_sim(faults={"vkcube_dies"})
    sid = await sim.new_session()
    status, body = await sim.exec(sid, VKCUBE)
    assert status == 200 and body["success"] is True
    # The zombie: pkill -0 -f vkcube exits 0; the state is readable with an allowed command (cat /proc/PID/…).
    assert (await sim.exec(sid, {"command": ["pkill", "-0", "-f", "vkcube"]}))[1]["exit_code"] == 0
    status, stat = await sim.exec(sid, {"command": ["cat", f"/proc/{body['pid']}/stat"]})
    assert stat["output"].split()[:3] == [str(body["pid"]), "(vkcube)", "Z"]
    status, st = await sim.exec(sid, {"command": ["cat", f"/proc/{body['pid']}/status"]})
    assert "\nState:\tZ (zombie)\n" in st["output"]
    assert (await sim.exec(sid, {"command": ["ps", "-o", "stat=", "-p", str(body["pid"])]}))[0] == 403  # not allowed


async def test_screenshot(make_sim):
    sim = await make_sim()
    sid = await sim.new_session()
    r = await sim.http.get(f"/api/v1/external-agents/{sid}/screenshot")
    assert r.status == 200 and r.content_type == "image/jpeg"
    data = await r.read()
    assert data[:3] == b"\xff\xd8\xff"
    etag = r.headers["ETag"]
    # external_agent_handlers.go: fmt.Sprintf(`"%x"`, fnv64a) (no zero padding) and a private no-cache policy.
    from helix_sim.stack.api.rest import _fnv64a
    assert etag == f'"{_fnv64a(data):x}"' and re.fullmatch(r'"[0-9a-f]{1,16}"', etag)
    assert r.headers["Cache-Control"] == "private, no-cache, must-revalidate"
    r = await sim.http.get(f"/api/v1/external-agents/{sid}/screenshot", headers={"If-None-Match": etag})
    assert r.status == 304 and r.headers["ETag"] == etag  # a static desktop: the same picture
    r = await sim.http.get(f"/api/v1/external-agents/{sid}/screenshot?format=png")
    assert r.content_type == "image/png" and (await r.read())[:8] == b"\x89PNG\r\n\x1a\n"
    # quality is forwarded (40 when absent); the desktop clamps it and falls back to 70 on garbage
    sizes = {}
    for q in ("1", "100", "bogus"):
        r = await sim.http.get(f"/api/v1/external-agents/{sid}/screenshot", params={"quality": q})
        assert r.status == 200 and r.content_type == "image/jpeg"
        sizes[q] = len(await r.read())
    assert sizes["1"] < len(data) < sizes["bogus"] < sizes["100"]
    log = "".join(e.data.decode() for e in sim.api.session_desktop(sid).container.log_entries())
    assert 'msg="screenshot captured" format=jpeg quality=40 ' in log and " quality=70 " in log
    assert (await sim.http.get("/api/v1/external-agents/ses_nope/screenshot")).status == 404


# --------------------------------------------------------------------------- the WS stream


async def test_ws_rejections_before_upgrade(make_sim):
    sim = await make_sim()
    sid = await sim.new_session()
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(sim.ws_url(sid))
    assert info.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(sim.ws_url("ses_nope"), additional_headers=sim.auth)
    assert info.value.response.status_code == 404
    assert info.value.response.body == b"session or sandbox not found\n"
    # ?access_token= works for the stream too.
    ws = await websockets.connect(sim.ws_url(sid, f"?access_token={sim.config.api_key}"))
    await ws.close()


async def test_ws_503_fault(make_sim):
    sim = await make_sim(faults={"ws_503"})
    sid = await sim.new_session()
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(sim.ws_url(sid), additional_headers=sim.auth)
    assert info.value.response.status_code == 503 and info.value.response.body == b"Sandbox not connected"
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.api.port)
    writer.write(
        f"GET /api/v1/external-agents/{sid}/ws/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {sim.config.api_key}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    raw = await asyncio.wait_for(reader.read(), 5)  # then EOF: the connection is dropped
    writer.close()
    assert raw == b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nSandbox not connected"


@pytest.mark.parametrize("mode", ["scanout", "shm"])
async def test_ws_message_order(make_sim, mode):
    sim = await make_sim(video_mode=mode, fps=40)
    sid = await sim.new_session()
    ws = await websockets.connect(sim.ws_url(sid), additional_headers=sim.auth, max_size=None,
                                  compression="deflate")  # offered, and must not be accepted
    try:
        headers = ws.response.headers
        assert ws.response.status_code == 101
        assert "Sec-WebSocket-Protocol" not in headers and "Sec-WebSocket-Extensions" not in headers
        await ws.send(b"\x40junk before init")  # binary before the init is skipped
        await ws.send(Init(sid, 1920, 1080, 60, 10000).to_text())
        events = [await recv(ws) for _ in range(5 if mode == "scanout" else 6)]
        kinds = [type(e) for e in events]
        expected = [StreamInit, ConnectionComplete, SelfId, RemoteUser, VideoFrame]
        if mode == "shm":
            expected.insert(1, CursorName)
        assert kinds == expected
        assert events[0] == StreamInit(1, 1920, 1080, 60)  # echoes the request, not the encode size
        assert events[1 if mode == "scanout" else 2] == ConnectionComplete(1920, 1080)
        frame = events[-1]
        assert (frame.width, frame.height, frame.codec) == (1920, 1080, 1)
        assert frame.is_keyframe and not frame.is_replay
        types = nal_types(frame.data)
        assert types.index(7) < types.index(8) < types.index(5)
    finally:
        await ws.close()


async def test_ws_without_session_id_has_no_presence(make_sim):
    sim = await make_sim()
    sid = await sim.new_session()
    ws = await sim.stream(sid, session_id=False)
    try:
        assert isinstance(await recv(ws), StreamInit)
        assert isinstance(await recv(ws), ConnectionComplete)
        assert isinstance(await recv(ws), VideoFrame)
    finally:
        await ws.close()


async def test_ws_frames_at_configured_fps(make_sim):
    sim = await make_sim(fps=40)
    sid = await sim.new_session()
    assert (await sim.exec(sid, VKCUBE))[0] == 200
    ws = await sim.stream(sid)
    try:
        frame = await next_video(ws)
        assert frame.is_keyframe
        warm = time.monotonic() + 0.5
        while time.monotonic() < warm:
            await next_video(ws)
        arrivals, pts = [], []
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            f = await next_video(ws)
            assert not f.is_replay
            arrivals.append(time.monotonic())
            pts.append(f.pts_us)
        fps = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
        assert abs(fps - 40) / 40 < 0.05, fps
        # Scanout (the default): the PTS is synthetic, +16666 µs a frame (~60 fps) at the real 40 fps.
        assert all(b - a == 16_666 for a, b in zip(pts, pts[1:]))
    finally:
        await ws.close()


async def test_second_client_gets_replay_then_live(make_sim):
    sim = await make_sim(fps=40, gop=40)
    sid = await sim.new_session()
    await sim.exec(sid, VKCUBE)
    a = await sim.stream(sid)
    try:
        for _ in range(10):
            await next_video(a)
        b = await sim.stream(sid)
        try:
            first = await next_video(b)
            assert first.is_replay and first.is_keyframe
            replay = 1
            while True:
                f = await next_video(b)
                if not f.is_replay:
                    break
                replay += 1
            assert replay >= 10 and not f.is_keyframe
            # Client a is told about b (presence broadcast).
            seen = False
            for _ in range(20):
                ev = await recv(a)
                if isinstance(ev, RemoteUser) and ev.user_id != 1:
                    seen = True
                    break
            assert seen
        finally:
            await b.close()
    finally:
        await a.close()


async def test_ping_pong(make_sim):
    sim = await make_sim()
    sid = await sim.new_session()
    ws = await sim.stream(sid)
    try:
        await next_video(ws)
        await ws.send(Ping(7, 123_456).encode())
        while True:
            msg = await asyncio.wait_for(ws.recv(), 5)
            if isinstance(msg, bytes) and msg[0] == 0x41:
                break
        assert len(msg) == 29
        pong = Pong.decode(msg)
        assert (pong.seq, pong.client_time_us) == (7, 123_456)
        assert abs(pong.server_time_us - time.time_ns() // 1000) < 5_000_000
    finally:
        await ws.close()


async def test_server_pings_every_interval(make_sim):
    sim = await make_sim(ws_ping_interval_s=0.2)
    sid = await sim.new_session()
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(sim.ws_url(sid), headers=sim.auth, autoping=False)
        await ws.send_str(Init(sid, W, H, 40, 4000).to_text())
        pings = 0
        while pings < 2:
            msg = await asyncio.wait_for(ws.receive(), 5)
            if msg.type == aiohttp.WSMsgType.PING:
                pings += 1
                await ws.pong(msg.data)
        await ws.close()


async def test_bad_init_drops_tcp(make_sim):
    sim = await make_sim()
    sid = await sim.new_session()
    ws = await websockets.connect(sim.ws_url(sid), additional_headers=sim.auth)
    await ws.send('{"type":"hello"}')
    with pytest.raises(ConnectionClosed) as info:
        await asyncio.wait_for(ws.recv(), 5)
    assert info.value.rcvd is None  # no close frame: the TCP connection was dropped


async def test_client_id_supersede(make_sim):
    sim = await make_sim()
    sid = await sim.new_session()
    old = await sim.stream(sid, query="?client_id=tab-1")
    try:
        await next_video(old)
        new = await sim.stream(sid, query="?client_id=tab-1")
        try:
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await asyncio.wait_for(old.recv(), 5)
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (4000, "superseded")
            await next_video(new)
        finally:
            await new.close()
    finally:
        await old.close()


async def test_superseded_fault(make_sim):
    sim = await make_sim(faults={"superseded"}, delay_scale=0.2)
    sid = await sim.new_session()
    ws = await sim.stream(sid)
    await next_video(ws)
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4000, "superseded")


async def test_stream_error_fault(make_sim):
    sim = await make_sim(faults={"stream_error"})
    sid = await sim.new_session()
    ws = await sim.stream(sid)
    ev = await recv(ws)
    assert isinstance(ev, StreamError) and "scanout" in ev.message
    with pytest.raises(ConnectionClosed) as info:
        await asyncio.wait_for(ws.recv(), 5)
    assert info.value.rcvd is None  # abrupt: no close frame


async def test_frames_stop_fault(make_sim):
    sim = await make_sim(faults={"frames_stop"}, delay_scale=0.5 / desktop_pipeline.FRAMES_STOP_AT_S, ws_ping_interval_s=0.3)
    sid = await sim.new_session()
    await sim.exec(sid, VKCUBE)
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(sim.ws_url(sid), headers=sim.auth, autoping=False, max_msg_size=0)
        await ws.send_str(Init(sid, W, H, 40, 4000).to_text())
        frames, pings, last_frame = 0, 0, time.monotonic()
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            try:
                msg = await asyncio.wait_for(ws.receive(), max(0.01, end - time.monotonic()))
            except asyncio.TimeoutError:
                break
            if msg.type == aiohttp.WSMsgType.BINARY and msg.data[0] == 0x01:
                frames += 1
                last_frame = time.monotonic()
            elif msg.type == aiohttp.WSMsgType.PING:
                await ws.pong(msg.data)
                if time.monotonic() - last_frame > 0.5:
                    pings += 1  # a ping after the frames stopped
            elif msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                raise AssertionError(f"unexpected {msg.type}")
        assert 10 <= frames <= 30 and pings >= 2
        assert not ws.closed
        await ws.send_bytes(Ping(1, 1).encode())  # still served
        while True:
            msg = await asyncio.wait_for(ws.receive(), 5)
            if msg.type == aiohttp.WSMsgType.BINARY and msg.data[0] == 0x41:
                break
        await ws.close()


async def test_container_oom_fault_drops_the_stream(make_sim):
    sim = await make_sim(faults={"container_oom"}, delay_scale=0.15)
    sid = await sim.new_session()
    ws = await sim.stream(sid)
    await next_video(ws)
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    assert info.value.rcvd is None
    container = sim.engine.get(f"ubuntu-external-{sid[4:]}")
    assert container.oom_killed and container.restart_count == 1
    ws = await sim.stream(sid)  # the restarted desktop streams again
    await next_video(ws)
    await ws.close()


async def test_vm_crash_stream_fault(make_sim):
    sim = await make_sim(faults={"vm_crash_stream"}, delay_scale=0.15)
    sid = await sim.new_session()
    ws = await sim.stream(sid)
    await next_video(ws)
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    assert info.value.rcvd is None
    await sim.host.wait_status("stopped", 5)
    assert sim.host.crash_reports and sim.host.crash_reports[0].name.startswith("QEMULauncher-")
    assert not sim.api.running
    await wait_until(lambda: not video_threads(), 5, "worker threads gone")


async def test_stop_closes_everything(make_sim):
    sim = await make_sim()
    sid = await sim.new_session()
    await sim.exec(sid, VKCUBE)
    ws = await sim.stream(sid)
    await next_video(ws)
    assert len(video_threads()) == 1
    await sim.api.stop()
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    assert not video_threads()
    assert all(d.pipeline is None for d in sim.api.desktops())
    with pytest.raises(aiohttp.ClientConnectionError):
        await sim.http.get("/api/v1/health")
    await sim.api.stop()  # idempotent


async def test_api_restart_keeps_running_desktops(make_sim):
    sim = await make_sim()
    sid = await sim.new_session()
    await sim.exec(sid, VKCUBE)
    await sim.api.stop()
    await sim.api.start(0)  # `docker restart helix-api-1`: the desktop containers keep running
    async with aiohttp.ClientSession(sim.api.url, headers=sim.auth) as http:
        r = await http.post(f"/api/v1/external-agents/{sid}/exec", json={"command": ["pkill", "-0", "-f", "vkcube"]})
        assert (await r.json())["exit_code"] == 0

        async def ready():
            boxes = await (await http.get("/api/v1/sandboxes")).json()
            return boxes and boxes[0].get("desktop_versions")

        await wait_until(ready, 3, "the sandbox to register again")
    ws = await sim.stream(sid)
    try:
        assert (await next_video(ws)).is_keyframe
    finally:
        await ws.close()


# --------------------------------------------------------------------------- viewers, upstream behaviours


def _viewer_events(events) -> list:
    return [e for e in events if isinstance(e, (SelfId, RemoteUser, RemoteUserLeft))]


async def until(ws, want, timeout: float = 5.0) -> list:
    """Every message (decoded) up to and including the first that ``want(event)`` accepts."""
    seen = []
    end = time.monotonic() + timeout
    while True:
        ev = await recv(ws, max(0.01, end - time.monotonic()))
        seen.append(ev)
        if want(ev):
            return seen


async def for_a_while(ws, seconds: float) -> list:
    """Every message for ``seconds`` (raw bytes/text)."""
    seen = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            seen.append(await asyncio.wait_for(ws.recv(), left))
        except asyncio.TimeoutError:
            break
    return seen


def _live(ev) -> bool:
    return isinstance(ev, VideoFrame) and not ev.is_replay


async def _keep_active(ws, interval: float = 0.1) -> None:
    """A browser's 0x40 pings (data messages: what counts as activity), 16 bytes long (>= 13 is answered)."""
    seq = 0
    while True:
        seq += 1
        await ws.send(Ping(seq, seq, b"abc").encode())
        await asyncio.sleep(interval)


async def test_viewer_registry_joins_leaves_and_stale_sweep(make_sim):
    sim = await make_sim(fps=40, gop=40, stale_client_timeout_s=0.8, stale_sweep_interval_s=0.2, ws_ping_interval_s=0.1)
    sid = await sim.new_session()
    await sim.exec(sid, VKCUBE)
    tasks = []
    # Viewers that stop reading fill websockets' queue and cannot read the close reply: do not wait 10 s for it.
    a = await sim.stream(sid, init=Init(sid, W, H, 40, 4000, extra={"user_name": "alice"}), close_timeout=0.2)
    b = c = None
    try:
        tasks.append(asyncio.create_task(_keep_active(a)))
        first = await until(a, _live)
        assert _viewer_events(first) == [SelfId(1), RemoteUser(1, 1, "alice", "#F24822")]
        for _ in range(20):  # let the GOP fill
            await next_video(a)

        b = await sim.stream(sid, close_timeout=0.2)  # no user_name: "User"
        tasks.append(asyncio.create_task(_keep_active(b)))
        seen_b = await until(b, _live)
        assert _viewer_events(seen_b) == [SelfId(2), RemoteUser(1, 2, "User", "#FF7262"),
                                          RemoteUser(1, 1, "alice", "#F24822")]
        video_b = [e for e in seen_b if isinstance(e, VideoFrame)]
        assert video_b[0].is_replay and video_b[0].is_keyframe and len(video_b) > 10  # the GOP replay burst
        assert all(f.flags & FLAG_REPLAY for f in video_b[:-1])
        assert RemoteUser(1, 2, "User", "#FF7262") in await until(a, lambda e: isinstance(e, RemoteUser) and e.user_id == 2)

        c = await sim.stream(sid, init=Init(sid, W, H, 40, 4000, extra={"user_name": "carol"}), close_timeout=0.2)
        seen_c = await until(c, lambda e: isinstance(e, VideoFrame))
        assert _viewer_events(seen_c) == [SelfId(3), RemoteUser(1, 3, "carol", "#FFCD29"),
                                          RemoteUser(1, 1, "alice", "#F24822"), RemoteUser(1, 2, "User", "#FF7262")]
        for ws in (a, b):
            await until(ws, lambda e: isinstance(e, RemoteUser) and e.user_id == 3)

        # B leaves: A and C get exactly 54 00 <2 u32 LE>
        tasks[1].cancel()
        await b.close()
        left = bytes.fromhex("540002000000")
        for ws in (a, c):
            seen = []
            while left not in seen:
                seen.append(await asyncio.wait_for(ws.recv(), 5))

        # C sent no data message (its WS pongs do not count): swept, A hears it left; C's socket stays open and
        # frames keep flowing to it.
        t0 = time.monotonic()
        seen = []
        while bytes.fromhex("540003000000") not in seen:
            seen.append(await asyncio.wait_for(a.recv(), 5))
        assert time.monotonic() - t0 < 2.0
        after = await for_a_while(c, 0.5)
        assert sum(1 for m in after if isinstance(m, bytes) and m[0] == 0x01) >= 10
        assert bytes.fromhex("540003000000") not in after
        log = "".join(e.data.decode() for e in sim.api.session_desktop(sid).container.log_entries())
        assert '"clientID":3,"timeout":800,' in log and '"message":"[MULTIPLAYER] Removing stale client"}' in log
        # A, active all along, was never swept
        assert 1 in sim.api.session_desktop(sid).registry and 3 not in sim.api.session_desktop(sid).registry
    finally:
        for task in tasks:
            task.cancel()
        for ws in (a, b, c):
            if ws is not None:
                await ws.close()


async def test_viewer_with_the_same_unique_id_is_evicted(make_sim):
    sim = await make_sim()
    sid = await sim.new_session()
    a = await sim.stream(sid)
    old = await sim.stream(sid, init=Init(sid, W, H, 40, 4000, extra={"client_unique_id": "tab-1"}))
    try:
        await until(old, lambda e: isinstance(e, VideoFrame))
        await until(a, lambda e: isinstance(e, RemoteUser) and e.user_id == 2)
        new = await sim.stream(sid, init=Init(sid, W, H, 40, 4000, extra={"client_unique_id": "tab-1"}))
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await asyncio.wait_for(old.recv(), 5)
        assert info.value.rcvd is None  # the old TCP connection is closed, no close frame
        seen = await until(a, lambda e: isinstance(e, RemoteUser) and e.user_id == 3)
        assert RemoteUserLeft(2) in seen
        await new.close()
    finally:
        await a.close()


async def test_ping_of_13_or_more_bytes_is_answered(make_sim):
    sim = await make_sim()
    sid = await sim.new_session()
    ws = await sim.stream(sid)
    try:
        await next_video(ws)
        await ws.send(b"\x40" + bytes(11))  # 12 bytes: not answered
        await ws.send(Ping(9, 42, b"extra-bytes").encode())  # 24 bytes: answered, seq + client time echoed
        pong = next(e for e in await until(ws, lambda e: isinstance(e, Pong)) if isinstance(e, Pong))
        assert (pong.seq, pong.client_time_us) == (9, 42)
        assert not [m for m in await for_a_while(ws, 0.3) if isinstance(m, bytes) and m[0] == 0x41]
    finally:
        await ws.close()


async def test_qemu_unexpected_msg_fault(make_sim):
    """On scanout QEMU sends a SCANOUT_RESP where a FRAME_RESPONSE belongs: every viewer gets 0x31
    `unexpected msg_type: 0x22`, frames and pings stop, the socket stays open; the viewers leave the registry."""
    sim = await make_sim(faults={"qemu_unexpected_msg"}, delay_scale=0.5 / desktop_pipeline.QEMU_UNEXPECTED_AT_S,
                         ws_ping_interval_s=0.1)
    sid = await sim.new_session()
    await sim.exec(sid, VKCUBE)
    b = await sim.stream(sid)
    async with aiohttp.ClientSession() as s:
        a = await s.ws_connect(sim.ws_url(sid), headers=sim.auth, autoping=False, max_msg_size=0)
        await a.send_str(Init(sid, W, H, 40, 4000).to_text())
        frames = pings = 0
        error = None
        while error is None:
            msg = await asyncio.wait_for(a.receive(), 5)
            if msg.type == aiohttp.WSMsgType.PING:
                await a.pong(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                ev = parse_binary(msg.data)
                frames += isinstance(ev, VideoFrame)
                error = ev if isinstance(ev, StreamError) else None
        assert error == StreamError("unexpected msg_type: 0x22") and frames > 5
        end = time.monotonic() + 0.8
        while (left := end - time.monotonic()) > 0:
            try:
                msg = await asyncio.wait_for(a.receive(), left)
            except asyncio.TimeoutError:
                break
            assert msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.BINARY), msg
            pings += msg.type == aiohttp.WSMsgType.PING
            assert not (msg.type == aiohttp.WSMsgType.BINARY and msg.data[0] == 0x01), "a frame after the error"
        assert pings == 0 and not a.closed  # the heartbeat stopped; the read deadline closes it later
        seen_b = await until(b, lambda e: isinstance(e, StreamError))
        assert seen_b[-1] == StreamError("unexpected msg_type: 0x22")
        rest_b = [parse_binary(m) for m in await for_a_while(b, 0.3) if isinstance(m, bytes)]
        assert not any(isinstance(e, VideoFrame) for e in rest_b)
        lefts = [e for e in seen_b + rest_b if isinstance(e, RemoteUserLeft)]
        assert len(lefts) <= 1  # whoever failed first left; the other may hear it
        await a.close()
    await b.close()
    log = "".join(e.data.decode() for e in sim.api.session_desktop(sid).container.log_entries())
    assert 'msg="QEMU frame read error" err="unexpected msg_type: 0x22"' in log
    assert '"error":"unexpected msg_type: 0x22"' in log and "[SHARED_VIDEO] Pipeline error" in log
    # one-shot: the next viewer gets a new scanout source, and frames
    c = await sim.stream(sid)
    try:
        assert isinstance(await next_video(c), VideoFrame)
    finally:
        await c.close()


async def test_no_first_frame_fault(make_sim):
    sim = await make_sim(faults={"no_first_frame"}, stream_status_interval_s=0.2, first_frame_timeout_s=1.0)
    sid = await sim.new_session()
    ws = await sim.stream(sid)
    events, times = [], []
    t0 = time.monotonic()
    with pytest.raises(ConnectionClosed) as info:
        while True:
            events.append(await recv(ws, 5))
            times.append(time.monotonic() - t0)
    assert info.value.rcvd is None  # dropped without a close frame
    kinds = [type(e) for e in events]
    assert kinds[:4] == [StreamInit, ConnectionComplete, SelfId, RemoteUser] and VideoFrame not in kinds
    statuses = [(t, e) for t, e in zip(times, events) if isinstance(e, StreamStatus)]
    assert 3 <= len(statuses) <= 5 and all(e.state == "starting_video" and e.starting_video for _, e in statuses)
    gaps = [b[0] - a[0] for a, b in zip(statuses, statuses[1:])]
    assert all(0.1 < g < 0.4 for g in gaps), gaps
    assert events[-1] == StreamError("no video frame received within 1s") and 0.9 < times[-1] < 2.0


async def test_headless_runtime_has_no_stream(make_sim):
    sim = await make_sim()
    r = await sim.http.post("/api/v1/spec-tasks/from-prompt", json={"prompt": "x", "sandbox_runtime": "windows"})
    assert r.status == 400
    r = await sim.http.post("/api/v1/spec-tasks/from-prompt", json={"prompt": "x", "sandbox_runtime": "headless-ubuntu"})
    task = await r.json()
    assert (await sim.http.post(f"/api/v1/spec-tasks/{task['id']}/start-planning")).status == 200
    sid = await sim.planning_session(task["id"])

    async def has_container():
        return (await (await sim.http.get(f"/api/v1/sessions/{sid}")).json())["config"]["dev_container_id"]

    await wait_until(has_container, 5, "container")
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.api.port)
    writer.write(
        f"GET /api/v1/external-agents/{sid}/ws/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {sim.config.api_key}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert raw == b"HTTP/1.1 503 503 Service Unavailable\r\n\r\n"


async def test_no_agent_fault(make_sim):
    """No app_id and no project DefaultHelixAppID: the task is marked failed; `start --wait` times out, exits 0 and
    prints the spt_ id; the task's status and error are readable at GET /api/v1/spec-tasks/{id}."""
    sim = await make_sim(faults={"no_agent"})
    r = await sim.http.post("/api/v1/spec-tasks/from-prompt", json={"prompt": "x", "project_id": sim.config.project_id})
    task = await r.json()
    assert r.status == 201 and "helix_app_id" not in task
    r = await sim.http.post(f"/api/v1/spec-tasks/{task['id']}/start-planning")
    assert (await r.json())["status"] == "queued_spec_generation"

    async def failed():
        got = await (await sim.http.get(f"/api/v1/spec-tasks/{task['id']}")).json()
        return got if got.get("metadata") else None

    got = await wait_until(failed, 5, "the task marked failed")
    assert got["status"] == "backlog" and "planning_session_id" not in got
    assert got["metadata"]["error"] == NO_AGENT_ERROR == "no agent configured - set DefaultHelixAppID on project"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", got["metadata"]["error_timestamp"])

    env = {"HELIX_URL": sim.url, "HELIX_API_KEY": sim.config.api_key, "HELIX_CLI_ARGV0": "/tmp/helix",
           **CliTiming(wait_poll_s=0.05, wait_timeout_s=0.6).to_env()}

    def cli(*args):
        import io

        out = io.BytesIO()
        return helix_main(list(args), stdout=out, env=env), out.getvalue().decode()

    t0 = time.monotonic()
    rc, out = await asyncio.to_thread(cli, "spectask", "start", "--project", sim.config.project_id, "-n", "t",
                                      "--wait", "-q")
    assert rc == 0 and re.fullmatch(rf"spt_{ULID}\n", out) and time.monotonic() - t0 < 5
    rc, out = await asyncio.to_thread(cli, "spectask", "start", "--project", sim.config.project_id, "--wait")
    assert rc == 0 and re.search(r"\n⏳ Task created \(spt_\w+\) — sandbox still provisioning after 3m\.\n", out)
    # a request that names an agent still works
    r = await sim.http.post("/api/v1/spec-tasks/from-prompt", json={"prompt": "x", "app_id": "app_01jexplicit"})
    task = await r.json()
    await sim.http.post(f"/api/v1/spec-tasks/{task['id']}/start-planning")
    assert (await sim.planning_session(task["id"])).startswith("ses_")
