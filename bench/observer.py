"""The observer effect, on the simulator: what the harness's analysis costs the frame rate it measures.

One simulator (``python -m helix_sim up``, a child process, as the suite provisions it) streams a
session with vkcube running; its encoder shares this host's cores with whoever watches. The same
stream is captured in turns by:

* **no harness**: a bare WebSocket client that only takes arrival times (the least any viewer does);
* the harness's capture (``CaptureDriver``) with ``--analysis deferred`` (nothing decoded while it streams);
* the harness's capture with ``--analysis live`` (every frame decoded while it streams).

Each turn reports the frame rate that reached the client after the warm-up, i.e. what the sim's encoder
managed while competing. The rows: live − deferred (the observer effect in one number), and deferred
− no harness against the noise (the spread of the no-harness turns, at least :data:`MIN_NOISE_FPS`).
The turns are interleaved ``rounds`` times, in alternating order (ABC CBA), so all see the same machine.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import websockets

from harness.analysis.modes import DEFERRED, LIVE
from harness.analysis.timing import TimingAnalyzer
from harness.config import load_target
from harness.protocols import stream as sp
from harness.protocols.stream import FLAG_KEYFRAME, FLAG_REPLAY, VIDEO_FRAME_HEADER, MsgType
from harness.runs.provision import launch_sim
from harness.runs.runner import SIM_TIMEOUTS
from harness.strategy import Status, Strategy

from .table import Row

WARMUP_S = 1.0
MIN_NOISE_FPS = 1.0
NO_HARNESS = "no harness"


async def _bare_fps(url: str, headers: dict[str, str], init: sp.Init, duration: float) -> float | None:
    """Arrival FPS of live frames seen by a client that does nothing else."""
    timing = TimingAnalyzer(warmup_s=WARMUP_S)
    video = int(MsgType.VIDEO_FRAME)
    unpack = VIDEO_FRAME_HEADER.unpack_from
    async with websockets.connect(url, additional_headers=headers, max_size=None, compression=None,
                                  ping_interval=None, open_timeout=15, close_timeout=2) as ws:
        await ws.send(init.to_text())
        end = time.monotonic() + duration
        while (left := end - time.monotonic()) > 0:
            try:
                async with asyncio.timeout(left):
                    msg = await ws.recv()
            except TimeoutError:
                break
            t_ns = time.monotonic_ns()
            if isinstance(msg, bytes) and len(msg) >= VIDEO_FRAME_HEADER.size and msg[0] == video:
                _, _, flags, pts_us, _, _ = unpack(msg)
                timing.add(t_ns, replay=bool(flags & FLAG_REPLAY), keyframe=bool(flags & FLAG_KEYFRAME),
                           pts_us=pts_us, size=len(msg))
    return timing.result()["fps"]


def observer_rows(work: Path, quick: bool) -> list[Row]:
    width, height, fps = (640, 368, 60) if quick else (3840, 2160, 60)  # the sim wants multiples of 16
    seconds, rounds = (2.0, 1) if quick else (10.0, 2)
    label = f"the sim's {width}x{height}@{fps} vkcube stream, {seconds:.0f} s per turn, {rounds} round(s)"
    settings = {"fps": fps, "resolution": f"{width}x{height}", "delay_scale": 0.3}
    sim = launch_sim(settings, timeout=60)
    fps_of: dict[str, list[float]] = {NO_HARNESS: [], DEFERRED: [], LIVE: []}
    cpu_of: dict[str, list[float]] = {DEFERRED: [], LIVE: []}
    strat = None
    try:
        cfg = load_target(sim.info["target_file"]).with_overrides(sim.overrides()).with_overrides({
            "stream.width": width, "stream.height": height, "stream.fps": fps, "stream.warmup": WARMUP_S,
            "stream.duration": seconds, "stream.cli_cross_check": False,
            **{f"timeouts.{k}": v for k, v in SIM_TIMEOUTS.items()},
        })
        strat = Strategy(target=cfg, artifacts_dir=work / "observer")
        strat.ensure(Status.session_ready)
        d, sid = strat.drivers, strat.record.session_id
        d.api.start_vkcube(sid)
        if not d.api.wait_vkcube(sid, timeout=10):
            return [Row(f"observer effect ({label})", "-", "vkcube did not start in the sim", "reported", None)]
        url, headers = d.api.stream_url(sid), d.api.auth_headers
        init = sp.Init(session_id=sid, width=width, height=height, fps=fps, bitrate=cfg.stream.bitrate)
        for n in range(rounds):
            order = (NO_HARNESS, DEFERRED, LIVE)
            for who in order if n % 2 == 0 else order[::-1]:  # ABC CBA: a steady drift cancels out
                if who == NO_HARNESS:
                    value = asyncio.run(_bare_fps(url, headers, init, seconds))
                else:
                    with tempfile.TemporaryDirectory(dir=work) as out:
                        cap = d.capture.capture(url, headers, init, duration=seconds, out_dir=Path(out),
                                                name=f"{who}-{n}", analysis=who)
                    value = cap.timing.get("fps")
                    cpu_of[who].append(cap.footprint.get("stream_cpu_percent_of_core") or 0.0)
                if value is not None:
                    fps_of[who].append(value)
    finally:
        if strat is not None:
            strat.teardown()
        sim.stop()
    if not all(fps_of.values()):
        return [Row(f"observer effect ({label})", "-", f"no frame rate measured: {fps_of}", "reported", None)]
    mean = {who: statistics.fmean(values) for who, values in fps_of.items()}
    bare = fps_of[NO_HARNESS]
    noise = max(MIN_NOISE_FPS, max(bare) - min(bare))
    cpu = {who: statistics.fmean(values) for who, values in cpu_of.items()}
    effect = mean[LIVE] - mean[DEFERRED]
    drift = mean[DEFERRED] - mean[NO_HARNESS]
    return [
        Row(
            f"observer effect on the sim: live - deferred ({label})",
            f"{effect:+.2f} fps (live {mean[LIVE]:.2f}, harness {cpu[LIVE]:.0f}% of a core; "
            f"deferred {mean[DEFERRED]:.2f}, {cpu[DEFERRED]:.0f}%)",
            f"no harness {mean[NO_HARNESS]:.2f} fps",
            "reported",
            True,
        ),
        Row(
            f"deferred vs no harness on the sim ({label})",
            f"{drift:+.2f} fps",
            f"noise {noise:.2f} fps (no-harness spread, >= {MIN_NOISE_FPS:g})",
            f"|{drift:.2f}| <= {noise:.2f}",
            abs(drift) <= noise,
        ),
    ]
