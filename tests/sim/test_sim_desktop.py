"""The sim's desktops: exec allowlist and process table, the shared video pipeline, logs and faults.

These drive :class:`helix_sim.desktop.Desktop` directly (no WebSocket); ``test_sim_api.py`` covers the
wire. Small pictures (448x256: the smallest common size that still carries the frame-counter stamp).
Fault timings are shortened with ``SimConfig.delay_scale`` (the simulator's own knob).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time

import pytest

from harness.analysis.content import ContentAnalyzer
from harness.protocols.stream import Init
from helix_sim.desktop import pipeline as desktop_pipeline
from helix_sim.config import SimConfig
from helix_sim.desktop import Desktop, DesktopUnavailable, StreamStartError
from helix_sim.desktop.logs import gst_line, slog_line
from helix_sim.desktop.pipeline import normalize_video_mode
from helix_sim.stack.docker_engine import DockerEngine
from helix_sim.host.qemu import QemuFrameExport

pytestmark = pytest.mark.timeout(60)

W, H = 448, 256
VKCUBE = ["vkcube", "--wsi", "wayland", "--present_mode", "1"]
#: The reference's sample line and regex (macos-frame-export.md §2).
GST_SAMPLE = (
    "0:00:34.030216978   333 0xe7a330000c00 DEBUG            vsockenc gstvsockenc.c:570:gst_vsockenc_handle_frame:"
    "<vsockenc0> Sent frame 1, resource_id=0, size=1920x1080, keyframe=1"
)
GST_RE = re.compile(
    r"(?P<ts>\d+:\d\d:\d\d\.\d+)\s+(?P<pid>\d+)\s+(?P<thr>0x[0-9a-f]+)\s+(?P<lvl>\w+)\s+vsockenc\s+"
    r"(?P<file>[^:]+):(?P<line>\d+):(?P<fn>\w+):<(?P<obj>[^>]+)>\s(?P<msg>.*)"
)
SENT_RE = re.compile(r"Sent frame (\d+), resource_id=(\d+), size=(\d+)x(\d+), keyframe=([01])")


async def wait_until(check, timeout: float = 5.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def nal_types(au: bytes) -> list[int]:
    types, i = [], au.find(b"\x00\x00\x01")
    while i >= 0 and i + 3 < len(au):
        types.append(au[i + 3] & 0x1F)
        i = au.find(b"\x00\x00\x01", i + 3)
    return types


def is_idr_with_headers(au: bytes) -> bool:
    """SPS, then PPS, then an IDR slice (x264 may put an SEI between them)."""
    types = nal_types(au)
    return 7 in types and 8 in types and 5 in types and types.index(7) < types.index(8) < types.index(5)


def log_text(container) -> str:
    return "".join(e.data.decode() for e in container.log_entries())


def video_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sim-video-")]


def init(width=W, height=H, fps=40, **kw) -> Init:
    mode = kw.pop("video_mode", None)
    return Init("ses_test", width, height, fps, 4000, video_mode=mode, extra=kw)


@pytest.fixture
async def make_desktop(tmp_path):
    made: list[tuple[Desktop, QemuFrameExport]] = []

    class Host:
        def __init__(self):
            self.crashes: list[str] = []

        def crash_vm(self, reason):
            self.crashes.append(reason)

    async def make(*, fps=40.0, **cfg) -> Desktop:
        cfg.setdefault("width", W)
        cfg.setdefault("height", H)
        cfg.setdefault("video_grace_s", 0.3)
        config = SimConfig(root=tmp_path, fps=fps, **cfg)
        engine = DockerEngine(config, tmp_path / "docker.sock")  # in-process use only: no socket needed
        qemu = QemuFrameExport(config, tmp_path / "host" / "helix-debug.log")
        await qemu.start()
        container = engine.create_container(f"ubuntu-external-t{len(made)}", image="helix-ubuntu:test")
        desktop = Desktop(config, session_id="ses_test", container=container, qemu=qemu, host=Host())
        desktop.start()
        made.append((desktop, qemu))
        return desktop

    yield make
    for desktop, qemu in made:
        await desktop.shutdown()
        await qemu.stop()
    assert not video_threads()


async def collect(sub, seconds: float):
    """Live frames with arrival times for ``seconds`` after the first one."""
    frames = []
    end = None
    while end is None or time.monotonic() < end:
        timeout = 5.0 if end is None else max(0.01, end - time.monotonic())
        try:
            frame = await asyncio.wait_for(sub.get(), timeout)
        except asyncio.TimeoutError:
            if end is None:
                raise
            break
        if frame is None:
            break
        now = time.monotonic()
        if end is None:
            end = now + seconds
        frames.append((now, frame))
    return frames


# --------------------------------------------------------------------------- log formats


def test_gst_line_matches_reference_sample():
    line = gst_line(34.030216978, "DEBUG", "gstvsockenc.c:570:gst_vsockenc_handle_frame",
                    "Sent frame 1, resource_id=0, size=1920x1080, keyframe=1")
    assert line == GST_SAMPLE
    m = GST_RE.fullmatch(gst_line(0.5, "WARN", "gstvsockenc.c:402:gst_vsockenc_get_resource_id", "Buffer is not DMA-BUF backed"))
    assert m and m["lvl"] == "WARN" and m["msg"] == "Buffer is not DMA-BUF backed"


def test_slog_line_format():
    line = slog_line("INFO", "subscribed to QEMU scanout", scanout_id=1, qemu_addr="10.0.2.2:15937")
    assert re.fullmatch(
        r'time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=INFO msg="subscribed to QEMU scanout" '
        r"scanout_id=1 qemu_addr=10\.0\.2\.2:15937",
        line,
    )
    assert slog_line("INFO", "x", fps="40.0", keyframe=True, command=["pkill", "-f"]).endswith(
        'msg=x fps=40.0 keyframe=true command="[pkill -f]"'
    )


def test_video_mode_normalisation():
    assert normalize_video_mode("scanout", "shm") == "scanout"
    assert normalize_video_mode("native", "scanout") == "shm"
    assert normalize_video_mode(None, "scanout") == "scanout"
    assert normalize_video_mode("bogus", "shm") == "shm"


# --------------------------------------------------------------------------- exec


async def test_exec_allowlist_and_shapes(make_desktop):
    d = await make_desktop()
    r = await d.exec(["kitty"])
    assert (r.status, r.body) == (403, "command not allowed: kitty\n")
    r = await d.exec(["git", "clone", "https://example.com/x"])
    assert r.status == 403 and r.body.startswith("git invocation not allowed")
    assert (await d.exec(["git", "config", "--global", "user.name", "Sim"])).json == {"success": True, "exit_code": 0}
    assert (await d.exec([])).status == 400
    assert (await d.exec(["echo", "hello", "world"])).json == {"success": True, "exit_code": 0, "output": "hello world"}
    r = await d.exec(["cat", "/nope"])
    assert r.json == {"success": False, "exit_code": 1, "output": "cat: /nope: No such file or directory",
                      "error": "exit status 1"}
    assert (await d.exec(["test", "-S", "/run/user/1000/wayland-0"])).json["exit_code"] == 0
    assert (await d.exec(["ls", "/run/user/1000"])).json["output"].split("\n")[-1] == "wayland-0.lock"
    assert "command not allowed: kitty" not in log_text(d.container)  # the body; the log has the slog form
    assert 'msg="exec: blocked disallowed command" command=kitty' in log_text(d.container)


async def test_vkcube_lifecycle(make_desktop):
    d = await make_desktop()
    assert (await d.exec(["pkill", "-0", "-f", "vkcube"])).json == {"success": False, "exit_code": 1, "error": "exit status 1"}
    r = await d.exec(VKCUBE, background=True, env={"WAYLAND_DISPLAY": "wayland-0"})
    assert r.json["success"] is True and r.json["pid"] > 0 and set(r.json) == {"success", "exit_code", "pid"}
    assert d.vkcube_running
    assert (await d.exec(["pkill", "-0", "-f", "vkcube"])).json == {"success": True, "exit_code": 0}
    assert (await d.exec(["pkill", "-0", "-f", "gnome-shell"])).json["exit_code"] == 0  # the desktop's own
    pid = r.json["pid"]
    status = (await d.exec(["cat", f"/proc/{pid}/status"])).json["output"]
    assert "Name:\tvkcube\n" in status and "\nState:\tS (sleeping)\n" in status
    assert f"\nPPid:\t{d.processes.bridge_pid}\n" in status  # desktop-bridge started it
    assert (await d.exec(["pkill", "-f", "vkcube"])).json["exit_code"] == 0
    assert not d.vkcube_running and not d.animating
    # Start() without Wait(): nothing reaps it, it stays a zombie that pkill still finds (exec.go ~L104-116).
    assert (await d.exec(["pkill", "-0", "-f", "vkcube"])).json == {"success": True, "exit_code": 0}
    status = (await d.exec(["cat", f"/proc/{pid}/status"])).json["output"]
    assert "\nState:\tZ (zombie)\n" in status and "VmRSS" not in status
    stat = (await d.exec(["cat", f"/proc/{pid}/stat"])).json["output"]
    assert stat.startswith(f"{pid} (vkcube) Z {d.processes.bridge_pid} ") and len(stat.split()) == 52
    assert (await d.exec(["cat", f"/proc/{pid}/cmdline"])).json == {"success": True, "exit_code": 0}
    assert (await d.exec(["test", "-d", f"/proc/{pid}"])).json["exit_code"] == 0
    assert str(pid) in (await d.exec(["ls", "/proc"])).json["output"].split("\n")
    assert (await d.exec(["cat", "/proc/999999/status"])).json["exit_code"] == 1
    # A foreground vkcube runs until the request's timeout kills it (exec.CommandContext), and is reaped.
    r = await d.exec(["vkcube"], timeout=1)
    assert r.json == {"success": False, "exit_code": -1, "error": "signal: killed"}
    assert not d.vkcube_running
    # A background command that ends at once is a zombie too.
    echo = (await d.exec(["echo", "hi"], background=True)).json["pid"]
    assert d.processes.state_of(echo) == "Z"


async def test_exec_forbidden_fault(make_desktop):
    d = await make_desktop(faults={"exec_forbidden"})
    r = await d.exec(VKCUBE, background=True)
    assert (r.status, r.body) == (403, "command not allowed: vkcube\n")
    assert (await d.exec(["echo", "ok"])).status == 200


async def test_vkcube_dies_fault(make_desktop):
    d = await make_desktop(faults={"vkcube_dies"})
    r = await d.exec(VKCUBE, background=True)
    assert r.json["success"] is True and r.json["pid"] > 0  # Start() only: the crash is not seen
    # The crashed vkcube stays a zombie: pkill -0 still finds it; only its state tells.
    assert (await d.exec(["pkill", "-0", "-f", "vkcube"])).json == {"success": True, "exit_code": 0}
    status = (await d.exec(["cat", f"/proc/{r.json['pid']}/status"])).json["output"]
    assert "\nState:\tZ (zombie)\n" in status
    assert not d.vkcube_running and not d.animating


async def test_screenshot_is_the_desktop(make_desktop):
    import cv2
    import numpy as np

    d = await make_desktop()
    data, ctype = await d.screenshot()
    assert ctype == "image/jpeg" and data[:3] == b"\xff\xd8\xff"
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (H, W, 3)
    png, ctype = await d.screenshot("png")
    assert ctype == "image/png" and png[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- the pipeline


async def test_pipeline_gop_pacing_and_keepalive(make_desktop):
    d = await make_desktop(fps=40, gop=10, video_mode="shm")  # vsockenc path: the PTS is the running time
    await d.exec(VKCUBE, background=True)
    sub = await d.open_stream(init())
    assert sub.replay == ()  # the first live-pipeline client gets no replay
    frames = await collect(sub, 1.0)
    numbers = [f.number for _, f in frames]
    assert numbers == list(range(1, len(numbers) + 1))
    for _, f in frames:
        types = nal_types(f.data)
        if (f.number - 1) % 10 == 0:
            assert f.keyframe and is_idr_with_headers(f.data), (f.number, types)
        else:
            assert not f.keyframe and 7 not in types and 5 not in types
    fps = (len(frames) - 1) / (frames[-1][0] - frames[0][0])
    assert abs(fps - 40) / 40 < 0.10, fps  # arrival over 1 s (test_sim_api checks 5 % over 2 s)
    pts = [f.pts_us for _, f in frames]
    assert all(b - a == 25_000 for a, b in zip(pts, pts[1:]))  # drift-free schedule
    # vkcube ends: a static screen gets the 500 ms keepalive frame only.
    await d.exec(["pkill", "-f", "vkcube"])
    await collect(sub, 0.3)  # drain what was in flight
    static = await collect(sub, 1.2)
    gaps = [b[0] - a[0] for a, b in zip(static, static[1:])]
    assert 2 <= len(static) <= 4 and all(0.3 < g < 0.7 for g in gaps), gaps


async def test_second_viewer_gets_the_gop_as_replay(make_desktop):
    d = await make_desktop(fps=40, gop=20)
    await d.exec(VKCUBE, background=True)
    first = await d.open_stream(init())
    frames = await collect(first, 0.5)
    second = await d.open_stream(init(width=1920, height=1080))
    assert second.replay, "a late joiner gets the current GOP first"
    assert second.replay[0].keyframe and is_idr_with_headers(second.replay[0].data)
    assert all(not f.keyframe for f in second.replay[1:])
    nxt = await second.get()
    assert nxt.number == second.replay[-1].number + 1  # live frames continue without a gap
    assert frames[0][1].number == 1
    assert d.viewers == 2 and d.pipelines_started == 1  # ONE shared pipeline
    # Scanout: the header PTS is synthetic, frameCount * 16666 µs (~60 fps at any rate), replay included.
    assert [f.pts_us for _, f in frames] == [f.number * 16666 for _, f in frames]
    assert [f.pts_us for f in second.replay] == [f.number * 16666 for f in second.replay]
    assert nxt.pts_us == nxt.number * 16666


async def test_replay_burst_fault_first_viewer(make_desktop):
    d = await make_desktop(fps=40, gop=120, faults={"replay_burst"})
    sub = await d.open_stream(init())
    assert len(sub.replay) >= 10 and sub.replay[0].keyframe
    assert [f.number for f in sub.replay] == list(range(1, len(sub.replay) + 1))
    nxt = await sub.get()
    assert nxt.number == len(sub.replay) + 1


async def test_grace_period_stops_the_pipeline(make_desktop):
    d = await make_desktop(video_grace_s=0.3)
    sub = await d.open_stream(init())
    await sub.get()
    pipeline = d.pipeline
    assert pipeline is not None and pipeline.alive
    d.close_stream(sub)
    assert d.pipeline is pipeline  # still inside the grace period
    await wait_until(lambda: d.pipeline is None and not pipeline.alive, 3, "pipeline stop after grace")
    assert 'msg="video pipeline stopped" reason="no clients for the grace period"' in log_text(d.container)


async def test_shutdown_joins_the_worker(make_desktop):
    d = await make_desktop()
    sub = await d.open_stream(init())
    await sub.get()
    await d.shutdown()
    assert await sub.get() is None and sub.end_reason == "shutdown"
    assert not video_threads() and d.pipeline is None and not d.available


async def test_stream_error_fault(make_desktop):
    d = await make_desktop(faults={"stream_error"})
    with pytest.raises(StreamStartError, match="subscribe rejected for scanout 1"):
        await d.open_stream(init())
    assert d.pipeline is None and not video_threads()
    assert "level=ERROR" in log_text(d.container)


# --------------------------------------------------------------------------- logs per mode


async def test_scanout_logs_and_frame_ready(make_desktop):
    d = await make_desktop(video_mode="scanout")
    await d.exec(VKCUBE, background=True)
    sub = await d.open_stream(init())
    assert sub.mode == "scanout"
    await collect(sub, 0.2)
    text = log_text(d.container)
    assert 'msg="starting scanout mode (QEMU H.264 via TCP)"' in text
    assert f'msg="subscribed to QEMU scanout" scanout_id=1 qemu_addr=10.0.2.2:{d.qemu.port}' in text
    assert re.search(r'msg="scanout stream stats" frames=1 fps=\d+\.\d last_size=\d+ keyframe=true', text)
    assert "vsockenc" not in text
    host = d.qemu.log_path.read_text().splitlines()
    ready = [line for line in host if line.startswith("[FRAME_READY] #")]
    ids = [int(re.search(r"resource=(\d+)", line)[1]) for line in ready]
    assert ready[0] == "[FRAME_READY] #1 scanout=1 resource=37 has_subscriber=YES"
    assert len(set(ids)) == 3 and 0 not in ids  # a triple-buffered scanout
    assert f"[HELIX] Created encoder for scanout 1: {W}x{H} bitrate=5000000" in host
    assert f"[ENCODE] scanout=1 frame=1 slot=0 status=0 {W}x{H}" in host
    assert not any("NO_SUBSCRIBER" in line for line in host)


@pytest.mark.parametrize("source", ["shm", "native", "zerocopy"])
async def test_vsockenc_path_never_has_resource_ids(make_desktop, source):
    """shm/native/zerocopy on virtio-gpu: MemFd buffers only, so every frame is resource_id=0, vsockenc never
    opens the DRM device and no DMA-BUF line appears; QEMU sees page flips without a scanout subscriber."""
    d = await make_desktop(video_mode="scanout")
    await d.exec(VKCUBE, background=True)
    sub = await d.open_stream(init(video_mode=source, fps=30))  # the init's video_mode wins over the container env
    assert sub.mode == "shm"
    await collect(sub, 0.25)
    lines = log_text(d.container).splitlines()
    gst = [GST_RE.fullmatch(line) for line in lines if re.match(r"\d+:\d\d:", line)]
    assert gst and all(gst)
    msgs = [m["msg"] for m in gst]
    assert f"Connected via TCP to 10.0.2.2:{d.qemu.port} (TCP_NODELAY, sndbuf=1MB)" in msgs
    sent = [SENT_RE.fullmatch(m) for m in msgs if m.startswith("Sent frame")]
    assert len(sent) >= 5 and all(sent)
    assert [int(s[1]) for s in sent] == list(range(1, len(sent) + 1))
    assert sent[0][5] == "1" and (sent[0][3], sent[0][4]) == (str(W), str(H))
    assert {s[2] for s in sent} == {"0"}
    assert msgs.count("Buffer is not DMA-BUF backed") == len(sent)
    assert msgs.count("Failed to get resource ID for frame") == len(sent)
    assert not any("DMA-BUF fd=" in m or "Opened DRM device" in m for m in msgs)
    ts = [m["ts"] for m in gst]
    assert ts == sorted(ts)  # time since gst_init, monotonic
    pipeline = next(json.loads(line)["pipeline"] for line in lines if "[SHARED_VIDEO] Pipeline string" in line)
    caps = {"shm": "video/x-raw,format=BGRx,framerate=30/1", "native": "video/x-raw,framerate=30/1",
            "zerocopy": "videoconvert ! video/x-raw,format=NV12"}[source]
    assert pipeline.startswith(f"pipewiresrc path=47 do-timestamp=true keepalive-time=500 ! {caps} ! queue ")
    assert f"vsockenc tcp-host=10.0.2.2 tcp-port={d.qemu.port} bitrate=4000 keyframe-interval=120" in pipeline
    nv12 = [line for line in lines if "[STREAM] macOS ARM virtio-gpu detected, using native pipewiresrc with NV12" in line]
    assert bool(nv12) is (source == "zerocopy")  # only the plugin mode detects the platform
    assert f'msg="starting video capture (shared source)" source=pipewire:47 video_mode={source} encoder=vsock' in "\n".join(lines)
    host = d.qemu.log_path.read_text().splitlines()
    assert not any(line.startswith("[FRAME_READY] #") for line in host)  # no non-zero ids on the host either
    assert "[FRAME_READY_ENTRY] #1 scanout=1 active_clients=1 NO_SUBSCRIBER" in host


async def test_log_streams(make_desktop):
    """desktop-bridge's slog goes to stdout; zerolog JSON ([SHARED_VIDEO], [MULTIPLAYER]) and GStreamer to stderr."""
    d = await make_desktop(video_mode="shm")
    await d.open_stream(init())
    entries = d.container.log_entries()
    streams = {e.stream for e in entries if e.data.startswith(b"time=")}
    assert streams == {1}  # the multiplexed stream id: 1 stdout, 2 stderr
    zero = [e for e in entries if e.data.startswith(b"{")]
    assert zero and {e.stream for e in zero} == {2}
    obj = json.loads(zero[0].data)
    assert list(obj)[0] == "level" and list(obj)[-2:] == ["time", "message"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", obj["time"])


# --------------------------------------------------------------------------- content faults


async def _content(d: Desktop, seconds: float) -> dict:
    await d.exec(VKCUBE, background=True)
    sub = await d.open_stream(init())
    frames = await collect(sub, seconds)
    analyzer = ContentAnalyzer()
    t0 = frames[0][0]
    for t, f in frames:
        analyzer.feed(f.data, t - t0)
    return analyzer.result()


async def test_clean_stream_content(make_desktop):
    res = await _content(await make_desktop(fps=40), 1.0)
    assert res["decode_errors"] == 0 and res["black_frames"] == 0 and res["freezes"] == []
    assert res["first_frame_is_idr_with_sps_pps"] is True and (res["width"], res["height"]) == (W, H)
    assert res["counters"]["first"] == 1 and res["counters"]["missing"] == 0 and res["counters"]["duplicates"] == 0


async def test_frozen_fault(make_desktop):
    k = 0.5  # the freeze: from 1.0 s for 1.5 s
    res = await _content(await make_desktop(fps=40, faults={"frozen"}, delay_scale=k), 2.8)
    assert len(res["freezes"]) == 1, res["freezes"]
    freeze = res["freezes"][0]
    expected = desktop_pipeline.FROZEN_FOR_S * k
    assert abs(freeze["duration_s"] - expected) < 0.25, freeze
    assert res["counters"]["duplicates"] >= 0.8 * expected * 40  # the SAME picture, counter included


async def test_black_fault(make_desktop):
    k = 0.5  # black from 1.0 s for 1.0 s
    res = await _content(await make_desktop(fps=40, faults={"black"}, delay_scale=k), 2.3)
    expected = desktop_pipeline.BLACK_FOR_S * k * 40
    assert 0.85 * expected <= res["black_frames"] <= 1.15 * expected, res["black_frames"]


async def test_corrupt_h264_fault(make_desktop):
    res = await _content(await make_desktop(fps=40, faults={"corrupt_h264"}), 1.0)
    assert res["decode_errors"] >= 1


async def test_frames_stop_fault(make_desktop):
    d = await make_desktop(fps=40, faults={"frames_stop"}, delay_scale=0.5 / desktop_pipeline.FRAMES_STOP_AT_S)
    await d.exec(VKCUBE, background=True)
    sub = await d.open_stream(init())
    frames = await collect(sub, 1.5)
    assert 15 <= len(frames) <= 25  # ~0.5 s of frames, then nothing
    await wait_until(lambda: d.pipeline is not None and d.pipeline.stalled, 2, "stall")
    assert sub.end_reason is None  # the viewer is not ended: its socket stays open


async def test_fault_clock_starts_with_the_first_viewer(make_desktop):
    """Faults count from the first viewer's stream, not from the desktop's (session's) start, and a later
    viewer does not restart the clock."""
    d = await make_desktop(fps=40, faults={"frames_stop"}, delay_scale=0.5 / desktop_pipeline.FRAMES_STOP_AT_S)
    await d.exec(VKCUBE, background=True)
    await asyncio.sleep(0.6)  # the desktop ran before anyone streamed: that does not count
    assert d.fault_clock.elapsed() is None
    first = await d.open_stream(init())
    t0 = time.monotonic()
    await collect(first, 0.25)
    second = await d.open_stream(init())  # joins 0.25 s later: frames still stop 0.5 s after the first viewer
    frames = await collect(second, 1.0)
    last = frames[-1][0] - t0
    assert 0.4 < last < 0.75, last
    assert abs(d.fault_clock.epoch - t0) < 0.1


def test_fault_timings_fit_a_short_capture():
    """At delay_scale 1, a 5 s capture after a 2 s warm-up sees every fault: each fires by the end of the
    warm-up, each window ends within the capture, frames_stop leaves >= 3 s of silence."""
    from helix_sim.desktop import session
    from helix_sim.stack.api import stream

    capture, warmup = 5.0, 2.0
    for at in (desktop_pipeline.FRAMES_STOP_AT_S, desktop_pipeline.QEMU_UNEXPECTED_AT_S, desktop_pipeline.FROZEN_AT_S,
               desktop_pipeline.BLACK_AT_S, session.OOM_AT_S, session.VM_CRASH_AT_S, stream.SUPERSEDE_AT_S):
        assert 0 < at <= warmup
    assert capture - desktop_pipeline.FRAMES_STOP_AT_S >= 3.0
    assert desktop_pipeline.FROZEN_AT_S + desktop_pipeline.FROZEN_FOR_S <= capture - 1.0
    assert desktop_pipeline.BLACK_AT_S + desktop_pipeline.BLACK_FOR_S <= capture - 1.0


async def test_qemu_unexpected_msg_ends_every_viewer_once(make_desktop):
    d = await make_desktop(faults={"qemu_unexpected_msg"}, delay_scale=0.3 / desktop_pipeline.QEMU_UNEXPECTED_AT_S)
    await d.exec(VKCUBE, background=True)
    a = await d.open_stream(init())
    b = await d.open_stream(init())
    await collect(a, 2.0)
    assert (a.end_reason, a.error) == ("error", "unexpected msg_type: 0x22")
    assert (b.end_reason, b.error) == ("error", "unexpected msg_type: 0x22")
    await wait_until(lambda: d.pipeline is None, 2, "the dead source dropped")
    c = await d.open_stream(init())  # a new scanout source; the fault fired once
    assert len(await collect(c, 0.3)) > 3 and c.end_reason is None


async def test_no_first_frame_fault_has_no_frames(make_desktop):
    d = await make_desktop(faults={"no_first_frame"})
    sub = await d.open_stream(init())
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(sub.get(), 0.5)
    png, _ = await d.screenshot("png")  # the desktop itself is there
    assert png[:4] == b"\x89PNG"


# --------------------------------------------------------------------------- container and VM faults


async def test_container_oom_fault(make_desktop):
    d = await make_desktop(faults={"container_oom"}, delay_scale=0.1)
    await d.exec(VKCUBE, background=True)
    sub = await d.open_stream(init())
    await collect(sub, 2.0)  # ends when the desktop ends the viewer
    assert sub.end_reason == "oom"
    c = d.container
    assert c.restart_count == 1 and c.oom_killed and c.running
    assert not d.vkcube_running  # its processes died with it
    await wait_until(lambda: not video_threads(), 3, "worker stop")
    text = log_text(c)
    assert text.count("[startup] GNOME headless") == 2
    # Streaming works again after the restart; the OOM happens once.
    sub2 = await d.open_stream(init())
    assert (await sub2.get()) is not None


async def test_vm_crash_stream_fault_triggers_the_host(make_desktop):
    d = await make_desktop(faults={"vm_crash_stream"}, delay_scale=0.1)
    sub = await d.open_stream(init())
    await collect(sub, 2.0)
    assert sub.end_reason == "vm_crash"
    assert d.host.crashes and "virgl" in d.host.crashes[0]


async def test_unavailable_when_container_gone(make_desktop):
    d = await make_desktop()
    d.container.exit(137)
    assert not d.available
    with pytest.raises(DesktopUnavailable):
        await d.open_stream(init())
