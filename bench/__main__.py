"""``python -m bench [--quick]``: run the analysis benchmarks and print ONE table (see ``bench/__init__``).

Exit status: 0 when every row passes, 1 when a row fails its goal, 2 when a benchmark could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.analysis.recording import analyze_h264, analyze_recording
from harness.errors import HarnessError
from helix_sim.errors import SimError
from harness.protocols.h264 import AnnexBAccessUnitSplitter
from harness.protocols.recording import RecordingWriter
from harness.protocols.stream import CODEC_H264, FLAG_KEYFRAME, VideoFrame
from helix_sim.recordings import synthesize_recording
from helix_sim.desktop.video import H264Encoder, Scene

from .capture import capture_rows
from .observer import observer_rows
from .startup import startup_rows
from .table import Row, render

WARMUP = 2.0
FFMPEG_GOAL = 0.9
TIMING_GOAL = 200_000
MEMORY_GOAL_MB = 10.0
MB = 1024 * 1024


# -- (a) FPS accuracy against the sim's ground truth ------------------------------------------------


def fps_accuracy(work: Path, quick: bool) -> list[Row]:
    seconds = 5.0 if quick else 10.0
    cases = [
        ("30 fps", dict(fps=30)),
        ("45 fps", dict(fps=45)),
        ("60 fps", dict(fps=60)),
        ("24 fps", dict(fps=24)),
        ("45 fps, ±2 ms jitter", dict(fps=45, jitter_ms=2.0)),
        ("45 fps, 1 s stall", dict(fps=45, stall=(seconds / 2, 1.0))),
        ("60 fps, 60-frame replay burst", dict(fps=60, replay_burst=60)),
        ("50 fps, 1.5 s freeze + 1 s black", dict(fps=50, freeze=(2.5, 1.5), black=(seconds - 2, 1.0))),
    ]
    if quick:
        cases = [cases[1], cases[5], cases[6]]
    rows = []
    for i, (name, kwargs) in enumerate(cases):
        truth = synthesize_recording(work / f"fps{i}.hxwsrec", duration_s=seconds, width=640, height=368, seed=i,
                                     **kwargs)
        r = analyze_recording(truth.path, warmup_s=WARMUP)
        want = truth.delivered_fps(WARMUP)
        tol = max(0.5, 0.01 * want)
        err = abs(r["fps"] - want) if r["fps"] is not None else float("inf")
        counters = r["counters"] or {}
        counters_ok = (counters.get("first"), counters.get("last")) == (truth.first_counter, truth.last_counter)
        rows.append(Row(
            f"fps accuracy: {name}",
            f"{r['fps']:.3f} fps" if r["fps"] is not None else "none",
            f"{want:.3f} (truth; counters {'ok' if counters_ok else 'WRONG'})",
            f"err {err:.3f} <= {tol:.2f}",
            err <= tol and counters_ok,
        ))
        truth.path.unlink()
    return rows


# -- (b) decode + analysis of 1080p against ffmpeg -------------------------------------------------


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _ffmpeg(ffmpeg: str, path: Path) -> tuple[float, float]:
    """Wall and CPU seconds of ``ffmpeg -f h264 -i path -f null -``."""
    cpu0, t0 = _children_cpu(), time.perf_counter()
    subprocess.run([ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "h264", "-i", str(path),
                    "-f", "null", "-"], check=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - t0, _children_cpu() - cpu0


def decode_vs_ffmpeg(work: Path, quick: bool) -> list[Row]:
    ffmpeg = shutil.which("ffmpeg")
    name = "decode+analysis 1080p vs ffmpeg"
    if ffmpeg is None:
        return [Row(f"{name} (wall)", "-", "ffmpeg not found", f">= {FFMPEG_GOAL}x", None)]
    seconds, repeats = (3.0, 3) if quick else (15.0, 5)
    truth = synthesize_recording(work / "hd.hxwsrec", fps=30, duration_s=seconds, width=1920, height=1080,
                                 h264_path=work / "hd.h264")
    # ffmpeg's start-up and probing, on a file holding only the first access unit (the IDR).
    first = work / "first.h264"
    splitter = AnnexBAccessUnitSplitter()
    with open(truth.h264_path, "rb") as fh:
        aus = splitter.feed(fh.read(4 << 20)) or splitter.flush()
    first.write_bytes(aus[0])
    inf = float("inf")
    best = {"rec": [inf, inf], "h264": [inf, inf], "ffmpeg": [inf, inf], "startup": [inf, inf]}

    def keep(key: str, wall: float, cpu: float) -> None:
        best[key] = [min(best[key][0], wall), min(best[key][1], cpu)]

    results = {}
    for _ in range(repeats):  # best of N, interleaved, so all see the same machine load
        for key, run in (("rec", lambda: analyze_recording(truth.path, warmup_s=WARMUP)),
                         ("h264", lambda: analyze_h264(truth.h264_path))):
            c0, t0 = time.process_time(), time.perf_counter()
            results[key] = run()
            keep(key, time.perf_counter() - t0, time.process_time() - c0)
        keep("ffmpeg", *_ffmpeg(ffmpeg, truth.h264_path))
        keep("startup", *_ffmpeg(ffmpeg, first))
    frames = truth.frames + truth.replay_frames
    ff_wall = max(best["ffmpeg"][0] - best["startup"][0], 1e-6)
    ff_cpu = max(best["ffmpeg"][1] - best["startup"][1], 1e-6)
    ok_decode = all(r["decoded_frames"] == frames and r["decode_errors"] == 0 for r in results.values())
    rows = []
    for label, ours, ref in (("wall", best["rec"][0], ff_wall), ("CPU", best["rec"][1], ff_cpu),
                             ("wall, analyze_h264 on the same .h264", best["h264"][0], ff_wall)):
        ratio = ref / ours  # = our frame rate / ffmpeg's on the same frames
        rows.append(Row(
            f"{name} ({label}, {frames} frames)",
            f"{frames / ours:,.0f} fps ({ours:.2f} s)",
            f"ffmpeg {frames / ref:,.0f} fps ({ref:.2f} s)",
            f"{ratio:.2f}x >= {FFMPEG_GOAL}x",
            ratio >= FFMPEG_GOAL and ok_decode,
        ))
    for p in (truth.path, truth.h264_path, first):
        p.unlink()
    return rows


# -- (c) timing-only analysis ----------------------------------------------------------------------


def timing_only(work: Path, quick: bool) -> list[Row]:
    """A long recording looping real sim access units (640x368 vkcube, 60 fps)."""
    n = 60_000 if quick else 300_000
    fps, w, h = 60, 640, 368
    scene = Scene(w, h)
    aus = []
    with H264Encoder(w, h, fps, gop=fps, bitrate_kbps=1200) as enc:
        for i in range(2 * fps):
            aus += enc.encode(scene.render(i, i / fps, vkcube=True), round(i * 1e6 / fps), force_idr=i % fps == 0)
    path = work / "long.hxwsrec"
    with open(path, "wb") as fh:
        writer = RecordingWriter(fh)
        period = 1e9 / fps
        for i in range(n):
            unit = aus[i % len(aus)]
            msg = VideoFrame(CODEC_H264, FLAG_KEYFRAME if unit.keyframe else 0, round(i * 1e6 / fps), w, h, unit.data)
            writer.write(5_000_000_000 + round(i * period), 0, msg.encode())
        writer.close()
    size = path.stat().st_size
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        r = analyze_recording(path, warmup_s=WARMUP, decode=False)
        best = min(best, time.perf_counter() - t0)
    path.unlink()
    rate = n / best
    ok = r["frames"] == n and r["fps"] is not None and abs(r["fps"] - fps) < 0.01
    return [Row(
        f"timing-only analyze_recording ({n:,} frames, {size / n / 1024:.1f} KiB/frame)",
        f"{rate:,.0f} frames/s",
        f"goal {TIMING_GOAL:,}",
        f"{rate / TIMING_GOAL:.2f}x >= 1x",
        rate >= TIMING_GOAL and ok,
    )]


# -- (d) memory ------------------------------------------------------------------------------------


def memory(work: Path, quick: bool) -> list[Row]:
    short, long = (10, 40) if quick else (10, 120)
    rows = []
    for decode in (True, False):
        argv = [sys.executable, "-m", "bench.memory_child", "--fps", "60", "--short", str(short), "--long", str(long)]
        if decode:
            argv.append("--decode")
        label = f"RSS growth StreamAnalyzer ({'decode' if decode else 'timing only'}, 60 fps) {short} s -> {long} s"
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            rows.append(Row(label, "-", "-", f"<= {MEMORY_GOAL_MB:g} MB", None))
            print(proc.stderr[-2000:], file=sys.stderr)
            continue
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        rss = out["rss"]
        growth = (max(rss["long"], rss["after_result"]) - rss["short"]) / MB
        rows.append(Row(
            label,
            f"{growth:+.2f} MB",
            f"RSS at {short} s {rss['short'] / MB:.1f} MB",
            f"<= {MEMORY_GOAL_MB:g} MB",
            growth <= MEMORY_GOAL_MB and out["frames"] == round(long * 60),
        ))
    return rows


# -- the table -------------------------------------------------------------------------------------

SECTIONS = (fps_accuracy, decode_vs_ffmpeg, timing_only, memory, capture_rows, observer_rows, startup_rows)
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a fast smoke run: smaller streams, fewer frames")
    args = p.parse_args(argv)
    rows: list[Row] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="helix-bench-") as tmp:
        for section in SECTIONS:
            try:
                rows += section(Path(tmp), args.quick)
            except (HarnessError, SimError, OSError, subprocess.SubprocessError) as exc:
                rows.append(Row(section.__name__.replace("_", " "), "-", f"could not run: {exc}", "-", None))
    print(render(rows))
    print(f"({'quick' if args.quick else 'full'} run, {time.perf_counter() - started:.1f} s, "
          f"{os.cpu_count()} CPUs; best of repeated runs where timed)")
    if any(r.ok is None for r in rows):
        return 2
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
