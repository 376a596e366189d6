"""A bare loopback stream server for the capture benchmarks: ``python -m bench.ws_sender CLIP …``.

It plays the part of the Helix API's ``/ws/stream`` and nothing else: it accepts one WebSocket client on
127.0.0.1, waits for its init (a text message), sends the clip's messages before its first video frame
(StreamInit, ConnectionComplete), then ``--frames`` video frames looping the clip's frames, with PTS on
the ``--fps`` schedule and every access unit padded with one H.264 filler NAL unit (type 12, ignored by
decoders) so the stream carries ``--mbps`` on average. ``--pace realtime`` sends frame k at k/fps;
``--pace max`` as fast as the socket takes them. Then it closes the connection (1000).

It prints ``PORT <n>`` once it listens, and writes to ``--times`` the send timestamps of every message
(``time.monotonic_ns()`` just before and just after ``send``; the same clock as the capture's arrival
times) as JSON: ``{"start": [...], "end": [...], "bytes": N}``. It runs in its own process, so it never
shares a GIL with the client it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import websockets

from harness.protocols.recording import KIND_BINARY, RecordingReader
from harness.protocols.stream import FLAG_REPLAY, VIDEO_FRAME_HEADER, MsgType

FILLER_OVERHEAD = 6  # start code (4), NAL header (1), rbsp trailing bits (1)


def filler_nal(size: int) -> bytes:
    """One filler-data NAL unit of ``size`` bytes in all (0xFF payload: no emulation prevention needed)."""
    if size < FILLER_OVERHEAD:
        return b""
    return b"\x00\x00\x00\x01\x0c" + b"\xff" * (size - FILLER_OVERHEAD) + b"\x80"


def load_clip(path: Path) -> tuple[list[tuple[int, bytes]], list[bytes]]:
    """(kind, data) of the messages before the first video frame, and the video frames' messages."""
    head: list[tuple[int, bytes]] = []
    frames: list[bytes] = []
    with open(path, "rb") as fh:
        for record in RecordingReader(fh):
            data = bytes(record.data)
            if record.kind == KIND_BINARY and data[:1] == bytes([MsgType.VIDEO_FRAME]):
                frames.append(data)
            elif not frames:
                head.append((record.kind, data))
    if not frames:
        raise SystemExit(f"{path}: no video frames")
    return head, frames


def stream_messages(frames: list[bytes], count: int, fps: float, mbps: float) -> list[bytes]:
    """``count`` video messages looping ``frames``: PTS on the schedule, replay flag cleared, padded to ``mbps``."""
    average = sum(len(f) for f in frames) / len(frames)
    pad = max(0, round(mbps * 1e6 / 8 / fps - average))
    filler = filler_nal(pad)
    out = []
    for k in range(count):
        src = frames[k % len(frames)]
        _, codec, flags, _, width, height = VIDEO_FRAME_HEADER.unpack_from(src)
        header = VIDEO_FRAME_HEADER.pack(MsgType.VIDEO_FRAME, codec, flags & ~FLAG_REPLAY, round(k * 1e6 / fps),
                                         width, height)
        out.append(header + src[VIDEO_FRAME_HEADER.size:] + filler)
    return out


async def serve(args: argparse.Namespace) -> int:
    head, frames = load_clip(args.clip)
    video = stream_messages(frames, args.frames, args.fps, args.mbps)
    messages = [data.decode("utf-8") if kind != KIND_BINARY else data for kind, data in head] + video
    start: list[int] = []
    end: list[int] = []
    done = asyncio.get_running_loop().create_future()

    async def handler(ws) -> None:
        try:
            init = await asyncio.wait_for(ws.recv(), timeout=30)
            if not isinstance(init, str):
                raise SystemExit("the client's first message is not a text init")
            period = 1e9 / args.fps
            t0 = time.monotonic_ns()
            n_head = len(head)
            for i, msg in enumerate(messages):
                if args.pace == "realtime" and i >= n_head:
                    due = t0 + round((i - n_head) * period)
                    delay = due - time.monotonic_ns()
                    if delay > 0:
                        await asyncio.sleep(delay / 1e9)  # a rate generator, not a wait for readiness
                start.append(time.monotonic_ns())
                await ws.send(msg)
                end.append(time.monotonic_ns())
            await ws.close(code=1000)
        finally:
            if not done.done():
                done.set_result(None)

    async with websockets.serve(handler, "127.0.0.1", 0, max_size=None, compression=None, ping_interval=None,
                                write_limit=1 << 20) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        await asyncio.wait_for(done, timeout=args.timeout)
    total = sum(len(m) for m in messages)
    args.times.write_text(json.dumps({"start": start, "end": end, "bytes": total, "messages": len(messages)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ws_sender", description=__doc__.splitlines()[0])
    p.add_argument("clip", type=Path, help="an HXWSREC1 recording to loop")
    p.add_argument("--frames", type=int, required=True)
    p.add_argument("--fps", type=float, default=60.0)
    p.add_argument("--mbps", type=float, default=40.0, help="average bitrate to pad the frames to")
    p.add_argument("--pace", choices=("realtime", "max"), default="realtime")
    p.add_argument("--times", type=Path, required=True, help="where to write the send timestamps (JSON)")
    p.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    args = p.parse_args(argv)
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
