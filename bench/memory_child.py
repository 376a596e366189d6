"""Child process of the memory benchmark: feed StreamAnalyzer a long synthetic stream, report RSS.

``python -m bench.memory_child --decode --fps 60 --short 10 --long 120`` prints one JSON line with
the RSS after ``short`` and after ``long`` seconds of stream (after ``gc.collect()``), and after
``result()``. The stream loops two real GOPs of the sim's vkcube video (640x368), with arrival times
and PTS on the fps schedule, so it is as long as asked without storing it.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys

import psutil

from harness.analysis.recording import StreamAnalyzer
from harness.protocols.recording import KIND_BINARY
from harness.protocols.stream import CODEC_H264, FLAG_KEYFRAME, VideoFrame
from helix_sim.desktop.video import H264Encoder, Scene

WIDTH, HEIGHT = 640, 368
T0 = 5_000_000_000


def _gops(fps: int, gop: int) -> list[tuple[bytes, bool]]:
    scene = Scene(WIDTH, HEIGHT)
    out = []
    with H264Encoder(WIDTH, HEIGHT, fps, gop=gop, bitrate_kbps=1200) as enc:
        for i in range(2 * gop):
            for unit in enc.encode(scene.render(i, i / fps, vkcube=True), round(i * 1e6 / fps), force_idr=i % gop == 0):
                out.append((unit.data, unit.keyframe))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--decode", action="store_true")
    p.add_argument("--fps", type=int, default=60)
    p.add_argument("--short", type=float, default=10)
    p.add_argument("--long", type=float, default=120)
    args = p.parse_args(argv)
    aus = _gops(args.fps, gop=args.fps)
    proc = psutil.Process()
    analyzer = StreamAnalyzer(warmup_s=2.0, decode=args.decode)
    period = 1e9 / args.fps
    short_n, long_n = round(args.short * args.fps), round(args.long * args.fps)
    rss = {}
    for i in range(long_n):
        au, key = aus[i % len(aus)]
        msg = VideoFrame(CODEC_H264, FLAG_KEYFRAME if key else 0, round(i * 1e6 / args.fps), WIDTH, HEIGHT, au).encode()
        analyzer.add_message(T0 + round(i * period), KIND_BINARY, msg)
        if i + 1 == short_n:
            gc.collect()
            rss["short"] = proc.memory_info().rss
    gc.collect()
    rss["long"] = proc.memory_info().rss
    result = analyzer.result()
    gc.collect()
    rss["after_result"] = proc.memory_info().rss
    print(json.dumps({"rss": rss, "frames": result["frames"], "fps": result["fps"],
                      "decode_errors": result["decode_errors"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
