"""Capture throughput, arrival-timestamp error and the harness's CPU per analysis mode (issue 15).

The capture client under test is the harness's own (``harness.drivers.capture.capture_stream``, with its
sinks, analyzers and footprint meter). Its far end is ``bench.ws_sender``, a bare loopback WebSocket
server in its own process that loops a clip made by the sim's encoder (``synthesize_recording``),
padded with filler NAL units to the bitrate asked, and logs its own send times on the same clock as
the capture's arrival times. Its process is left out of the harness's footprint (``exclude_pid``).

* **Throughput** (``--pace max``): messages per second received against the offered 60/s (goal >= 4x
  real time) and client-side drops (sent - received; goal 0), at 1080p60 and 4K60, 40 Mb/s.
* **Timestamp error** (``--pace realtime``): arrival time minus the sender's time just before its
  ``send`` (so the transfer of the message itself counts as error): p50/p99/max (goal p99 < 1 ms).
* **CPU per stream second** in each analysis mode, 1080p60 real time: during the stream (the footprint,
  goal for ``deferred`` <= 5 % of one core) and after it (the deferred decode), beside ffmpeg's CPU to
  decode the same stream (measured here, on the capture's own ``.h264``).
* **Deferred analysis, whole command**: ``helix-e2e analyze`` of the deferred capture's recording
  against ``ffmpeg -f h264 -i same.h264 -f null -``, both as whole commands (goal >= 0.9x).
"""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness.analysis.modes import ANALYSIS_MODES, DEFERRED, LIVE
from harness.drivers.capture import CaptureResult, capture_stream
from harness.drivers.footprint import exclude_pid, include_pid
from harness.errors import HarnessError
from harness.protocols import stream as sp
from harness.protocols.recording import RecordingReader
from harness.runs.provision import read_first_line
from helix_sim.recordings import synthesize_recording

from .table import Row

REPO = Path(__file__).resolve().parents[1]
FPS = 60
MBPS = 40.0
SPEED_GOAL = 4.0
TS_P99_GOAL_MS = 1.0
DEFERRED_CPU_GOAL = 5.0  # % of one core
WHOLE_COMMAND_GOAL = 0.9
SIZES = {"1080p60": (1920, 1080), "4K60": (3840, 2160)}


@dataclass
class Run:
    """One capture against the loopback sender."""

    result: CaptureResult
    sent: dict
    arrivals: list[int]
    frames: int
    content_s: float

    @property
    def head(self) -> int:
        return self.sent["messages"] - self.frames

    @property
    def drops(self) -> int:
        return self.sent["messages"] - self.result.messages

    def rate(self) -> float:
        """Video messages received per second, first to last."""
        video = self.arrivals[self.head:]
        span = (video[-1] - video[0]) / 1e9 if len(video) > 1 else 0.0
        return (len(video) - 1) / span if span > 0 else 0.0

    def sender_rate(self) -> float:
        start = self.sent["start"][self.head:]
        span = (start[-1] - start[0]) / 1e9 if len(start) > 1 else 0.0
        return (len(start) - 1) / span if span > 0 else 0.0

    def errors_ms(self) -> list[float]:
        """Arrival minus the sender's time before ``send``, per video message, sorted."""
        sent = self.sent["start"][self.head:]
        got = self.arrivals[self.head:]
        return sorted((a - s) / 1e6 for a, s in zip(got, sent))

    @property
    def mbps(self) -> float:
        return self.sent["bytes"] * 8 / 1e6 / self.content_s


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))] if values else float("nan")


def make_clip(work: Path, label: str, seconds: float) -> Path:
    """A clip of the sim's vkcube video, one GOP long, to loop (an IDR every ``seconds``)."""
    w, h = SIZES[label]
    gop = round(seconds * FPS)
    truth = synthesize_recording(work / f"clip-{label}.hxwsrec", fps=FPS, duration_s=seconds, width=w, height=h,
                                 gop=gop, jitter_ms=0.0, bitrate_kbps=round(MBPS * 1000 * 0.6))
    return truth.path


def _read_port(proc: subprocess.Popen, timeout: float) -> int:
    line = read_first_line(proc, timeout)
    if not line.startswith(b"PORT "):
        raise HarnessError(f"bench.ws_sender did not start: {line!r} {proc.stderr.read().decode()[-500:] if proc.poll() is not None else ''}",
                           phase="bench")
    return int(line.split()[1])


def run_capture(work: Path, clip: Path, *, frames: int, pace: str, analysis: str, name: str,
                decode: bool = True) -> Run:
    """Serve ``frames`` frames of ``clip`` from a sender process and capture them with the harness
    (``decode=False``: no content analysis after the stream either)."""
    times = work / f"{name}.times.json"
    argv = [sys.executable, "-m", "bench.ws_sender", str(clip), "--frames", str(frames), "--fps", str(FPS),
            "--mbps", str(MBPS), "--pace", pace, "--times", str(times)]
    proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    exclude_pid(proc.pid)
    try:
        port = _read_port(proc, timeout=30)
        init = sp.Init(session_id="ses_bench", width=1920, height=1080, fps=FPS, bitrate=int(MBPS * 1000))
        content_s = frames / FPS
        result = asyncio.run(capture_stream(
            f"ws://127.0.0.1:{port}/stream", {}, init, duration=content_s + 30, out_dir=work, name=name,
            connect_timeout=10, first_frame_timeout=20, warmup_s=1.0, thumbnails=False, analysis=analysis,
            decode=decode))
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise HarnessError("bench.ws_sender did not finish", phase="bench") from None
        if proc.returncode != 0:
            raise HarnessError(f"bench.ws_sender failed: {proc.stderr.read().decode()[-800:]}", phase="bench")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            pipe.close()
        include_pid(proc.pid)
    sent = json.loads(times.read_text())
    with open(result.recording, "rb") as fh:
        arrivals = [t for t, _, _ in RecordingReader(fh).iter_raw()]
    return Run(result=result, sent=sent, arrivals=arrivals, frames=frames, content_s=content_s)


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _timed(argv: list[str], **kw) -> tuple[float, float]:
    """Wall and CPU seconds of a whole command."""
    cpu0, t0 = _children_cpu(), time.perf_counter()
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, **kw)
    return time.perf_counter() - t0, _children_cpu() - cpu0


def _ffmpeg(ffmpeg: str, h264: str) -> list[str]:
    return [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "h264", "-i", h264, "-f", "null", "-"]


def _throughput_row(label: str, run: Run) -> Row:
    speed = run.rate() / FPS
    skipped = run.result.content_skipped
    return Row(
        f"capture {label} {MBPS:.0f} Mb/s, as fast as sent ({run.frames} frames, {run.result.analysis})",
        f"{run.rate():,.0f} msg/s ({speed:.1f}x real time), {run.drops} drops",
        f"offered {FPS} msg/s at {run.mbps:.1f} Mb/s; sender {run.sender_rate():,.0f} msg/s",
        f"{speed:.1f}x >= {SPEED_GOAL:g}x, 0 drops",
        speed >= SPEED_GOAL and run.drops == 0 and skipped == 0 and run.result.end == "closed",
    )


def _error_row(label: str, run: Run) -> Row:
    errs = run.errors_ms()
    p50, p99, worst = _pct(errs, 0.5), _pct(errs, 0.99), errs[-1] if errs else float("nan")
    return Row(
        f"arrival-timestamp error, {label} {MBPS:.0f} Mb/s real time ({run.result.analysis})",
        f"p50 {p50:.3f} / p99 {p99:.3f} / max {worst:.2f} ms",
        f"sender's send times, {len(errs)} frames at {run.mbps:.1f} Mb/s",
        f"p99 {p99:.3f} < {TS_P99_GOAL_MS:g} ms, {run.drops} drops",
        p99 < TS_P99_GOAL_MS and run.drops == 0,
    )


def capture_rows(work: Path, quick: bool) -> list[Row]:
    seconds = 2.0 if quick else 30.0  # of real-time stream per paced run
    clip_s = 1.0 if quick else 2.0
    frames = round(seconds * FPS)
    whole = round(30.0 * FPS)  # as fast as sent: 30 s of stream takes well under a second, even in --quick
    clips = {label: make_clip(work, label, clip_s) for label in SIZES}
    rows: list[Row] = []
    # Throughput, both sizes (deferred: what a real Mac runs during the stream).
    fast = {label: run_capture(work, clip, frames=whole, pace="max", analysis=DEFERRED, name=f"max-{label}",
                               decode=False) for label, clip in clips.items()}
    rows += [_throughput_row(label, run) for label, run in fast.items()]
    paced: dict[str, Run] = {}
    for mode in ANALYSIS_MODES:
        paced[mode] = run_capture(work, clips["1080p60"], frames=frames, pace="realtime", analysis=mode,
                                  name=f"rt-1080p60-{mode}")
    rows.append(_error_row("1080p60", paced[DEFERRED]))
    rows.append(_error_row("1080p60", paced[LIVE]))
    rows.append(_error_row("4K60", run_capture(work, clips["4K60"], frames=frames, pace="realtime",
                                               analysis=DEFERRED, name="rt-4K60-deferred")))
    rows += _cpu_rows(paced, seconds)
    rows.append(_whole_command_row(fast["1080p60"], repeats=1 if quick else 3))
    return rows


def _cpu_rows(paced: dict[str, Run], seconds: float) -> list[Row]:
    ffmpeg = shutil.which("ffmpeg")
    ref = "ffmpeg not found"
    if ffmpeg is not None:
        _, cpu = _timed(_ffmpeg(ffmpeg, paced[DEFERRED].result.h264))
        ref = f"ffmpeg decode of the same stream {cpu / seconds:.3f} CPU s/s"
    rows = []
    for mode, run in paced.items():
        fp = run.result.footprint
        during = fp["stream_cpu_s"] / fp["stream_s"]
        after = (fp["analysis_cpu_s"] or 0.0) / seconds
        content = run.result.content
        decoded_ok = content.get("decode_errors") == 0 and not content.get("analysis_error")
        if mode == "sampled":
            sampled = run.result.sampling or {}
            what = f"{sampled.get('checked_frames')} of {sampled.get('live_frames')} frames checked"
            decoded_ok = decoded_ok and 0 < (sampled.get("checked_frames") or 0) < run.frames
        else:
            what = f"{content.get('decoded_frames')} frames decoded"
            decoded_ok = decoded_ok and content.get("decoded_frames") == run.frames
        rows.append(Row(
            f"harness CPU per stream second, 1080p60 {MBPS:.0f} Mb/s, {mode}",
            f"{during:.3f} during + {after:.3f} after = {during + after:.3f} CPU s/s ({what})",
            ref,
            "reported",
            decoded_ok and run.drops == 0 and run.result.content_skipped == 0,
        ))
    fp = paced[DEFERRED].result.footprint
    live = paced[LIVE].result.footprint
    pct = fp["stream_cpu_percent_of_core"]
    rows.append(Row(
        f"harness CPU during a 1080p60 {MBPS:.0f} Mb/s stream, deferred",
        f"{pct:.1f}% of one core ({fp['stream_cpu_s']:.2f} CPU s in {fp['stream_s']:.1f} s, "
        f"peak RSS {fp['peak_rss_mb']:.0f} MB)",
        f"live: {live['stream_cpu_percent_of_core']:.1f}% of one core",
        f"{pct:.1f}% <= {DEFERRED_CPU_GOAL:g}%",
        pct <= DEFERRED_CPU_GOAL,
    ))
    return rows


def _whole_command_row(run: Run, repeats: int) -> Row:
    name = f"deferred analysis of a {run.content_s:.0f} s 1080p60 recording, whole command"
    ffmpeg = shutil.which("ffmpeg")
    cli = shutil.which("helix-e2e", path=str(Path(sys.executable).parent)) or shutil.which("helix-e2e")
    if ffmpeg is None or cli is None:
        return Row(name, "-", "ffmpeg or helix-e2e not found", f">= {WHOLE_COMMAND_GOAL}x", None)
    ours = ref = float("inf")
    for _ in range(repeats):  # best of N, interleaved
        ours = min(ours, _timed([cli, "analyze", run.result.recording, "--json"])[0])
        ref = min(ref, _timed(_ffmpeg(ffmpeg, run.result.h264))[0])
    ratio = ref / ours
    return Row(
        name,
        f"helix-e2e analyze {ours:.2f} s ({run.frames / ours:,.0f} fps)",
        f"ffmpeg -f null {ref:.2f} s ({run.frames / ref:,.0f} fps)",
        f"{ratio:.2f}x >= {WHOLE_COMMAND_GOAL}x",
        ratio >= WHOLE_COMMAND_GOAL,
    )
