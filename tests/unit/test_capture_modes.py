"""The capture client in each analysis mode, end to end over a real loopback WebSocket: the frames are
decoded live, after the stream (from the recording) or sampled, and the result carries the harness's
own footprint (metrics.json["harness"])."""

from __future__ import annotations

import asyncio

import pytest
import websockets

from harness.drivers.capture import capture_stream
from harness.protocols import stream as sp
from harness.protocols.recording import KIND_TEXT, RecordingReader
from helix_sim.recordings import synthesize_recording

PUBLIC = ("analysis", "stream_cpu_s", "stream_cpu_percent_of_core", "peak_rss_mb", "bytes_written")


@pytest.fixture(scope="module")
def truth(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "clip.hxwsrec"
    return synthesize_recording(path, fps=30, duration_s=3.0, width=640, height=368, gop=30, black=(1.0, 0.5))


async def _capture(truth, out, analysis):
    with open(truth.path, "rb") as fh:
        messages = [bytes(d).decode() if k == KIND_TEXT else bytes(d) for _, k, d in RecordingReader(fh).iter_raw()]

    async def handler(ws):
        await ws.recv()  # the init
        for msg in messages:
            await ws.send(msg)
        await ws.close(code=1000)

    async with websockets.serve(handler, "127.0.0.1", 0, max_size=None, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        init = sp.Init(session_id="ses_t", width=640, height=368, fps=30, bitrate=2000)
        return await capture_stream(f"ws://127.0.0.1:{port}/s", {}, init, duration=20, out_dir=out, name=analysis,
                                    connect_timeout=5, first_frame_timeout=10, warmup_s=0.5, analysis=analysis,
                                    sample_every=20)


@pytest.mark.parametrize("analysis", ["live", "deferred", "sampled"])
def test_capture_in_each_mode(truth, tmp_path, analysis) -> None:
    result = asyncio.run(_capture(truth, tmp_path, analysis))
    assert result.end == "closed" and result.analysis == analysis
    assert result.timing["frames"] == truth.frames
    fp = result.footprint
    assert tuple(fp)[:5] == PUBLIC and fp["analysis"] == analysis
    assert fp["stream_cpu_s"] > 0 and fp["peak_rss_mb"] > 0 and fp["stream_s"] > 0
    assert fp["bytes_written"] is None or fp["bytes_written"] >= truth.path.stat().st_size // 2
    c = result.content
    assert c["decode_errors"] == 0 and not c.get("analysis_error")
    if analysis == "sampled":
        assert result.sampling == fp["sampled"] and 0 < result.sampling["checked_frames"] < truth.frames
        assert c["decoded_frames"] == result.sampling["checked_frames"]
    else:
        assert result.sampling is None and fp["sampled"] is None
        assert c["decoded_frames"] == truth.frames and c["black_frames"] == truth.black_frames
        assert set(result.thumbnails) >= {"first_idr", "last"}
