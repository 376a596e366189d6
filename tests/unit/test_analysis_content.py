"""ContentAnalyzer and the recording/h264 drivers, on real streams from the sim's Scene + H264Encoder."""

from __future__ import annotations

import random
import struct

import av
import numpy as np
import pytest

from harness.analysis import StreamAnalyzer, analyze_h264, analyze_recording
from harness.analysis.content import ContentAnalyzer
from harness.protocols.stamp import read_stamp
from harness.errors import HarnessError
from harness.protocols.recording import KIND_BINARY, KIND_TEXT, RecordingError, RecordingWriter
from helix_sim.desktop.video import H264Encoder, Scene, corrupt_au

W, H, FPS = 448, 256, 40
INTERVAL = 1 / FPS
FROZEN = range(80, 140)  # frames 80..139 show frame 80's picture: 1.5 s
BLACK = range(200, 280)  # 2 s of black
N = 320
T0 = 7_000_000_000
VIDEO_HEADER = struct.Struct(">BBBQHH")


def _render_stream(width: int, height: int, n: int, *, gop: int, frozen=range(0), black=range(0)):
    scene = Scene(width, height)
    aus = []
    held = None
    with H264Encoder(width, height, FPS, gop=gop, bitrate_kbps=1500) as encoder:
        for i in range(n):
            if i in frozen:
                if held is None:
                    held = scene.render(i, i / FPS, vkcube=True).copy()
                yuv = held
            else:
                yuv = scene.render(i, i / FPS, vkcube=True, black=i in black)
            aus.extend(encoder.encode(yuv, i * 25_000))
    return aus


@pytest.fixture(scope="module")
def stream():
    """320 frames at 40 fps: normal, a 1.5 s freeze, normal, 2 s black, normal."""
    return _render_stream(W, H, N, gop=40, frozen=FROZEN, black=BLACK)


@pytest.fixture(scope="module")
def small_stream():
    """120 plain frames at 320x192 (too small for the stamp: not needed here), GOP 30."""
    return [f.data for f in _render_stream(320, 192, 120, gop=30)]


def _expected_counter(i: int) -> int | None:
    if i in BLACK:
        return None
    return FROZEN.start if i in FROZEN else i


def _analyze(aus, **kwargs) -> dict:
    analyzer = ContentAnalyzer(**kwargs)
    for i, au in enumerate(aus):
        analyzer.feed(au, i * INTERVAL)
    return analyzer.result()


# -- per-frame stamps ------------------------------------------------------------------------


def test_counters_read_back_exactly_for_every_frame(stream) -> None:
    decoder = av.CodecContext.create("h264", "r")
    read = []
    for f in stream:
        for frame in decoder.decode(av.Packet(f.data)):
            plane = frame.planes[0]
            y = np.frombuffer(plane, np.uint8, count=plane.line_size * H).reshape(H, -1)[:, :W]
            read.append(read_stamp(y))
    assert read == [_expected_counter(i) for i in range(N)]


# -- the content analyzer --------------------------------------------------------------------


def test_scenario(stream) -> None:
    r = _analyze([f.data for f in stream])
    assert (r["width"], r["height"]) == (W, H)
    assert r["decode_errors"] == 0 and r["decoded_frames"] == N
    assert r["first_frame_is_idr_with_sps_pps"] is True
    # The freeze: content held from frame 80 (t=2.0) until frame 140 (t=3.5).
    assert len(r["freezes"]) == 1
    freeze = r["freezes"][0]
    assert abs(freeze["start_s"] - FROZEN.start * INTERVAL) <= INTERVAL + 1e-9
    assert abs(freeze["duration_s"] - len(FROZEN) * INTERVAL) <= INTERVAL + 1e-9
    # Black frames are counted, and a black run is not also a freeze.
    assert r["black_frames"] == len(BLACK)
    unchanged = (len(FROZEN) - 1) + (len(BLACK) - 1)
    assert r["motion"] == pytest.approx((N - 1 - unchanged) / (N - 1), abs=2 / N)
    assert r["counters"] == {
        "first": 0,
        "last": N - 1,
        "unique": N - len(BLACK) - (len(FROZEN) - 1),
        "missing": len(BLACK) + len(FROZEN) - 1,
        "duplicates": len(FROZEN) - 1,
    }


def test_short_still_is_not_a_freeze() -> None:
    aus = [f.data for f in _render_stream(W, H, 80, gop=40, frozen=range(30, 48))]  # 0.45 s
    r = _analyze(aus)
    assert r["freezes"] == []
    assert r["counters"]["duplicates"] == 17


def test_freeze_running_at_the_end() -> None:
    aus = [f.data for f in _render_stream(W, H, 80, gop=40, frozen=range(50, 80))]
    r = _analyze(aus)
    assert r["freezes"] == [{"start_s": pytest.approx(50 * INTERVAL), "duration_s": pytest.approx(29 * INTERVAL)}]


@pytest.mark.parametrize("fps", [20, 60])
def test_moving_cube_changes_every_frame_and_desktop_does_not(fps: int) -> None:
    scene = Scene(W, H)
    cube, desktop = ContentAnalyzer(), ContentAnalyzer()
    with H264Encoder(W, H, fps, bitrate_kbps=1500) as enc_a, H264Encoder(W, H, fps, bitrate_kbps=1500) as enc_b:
        for i in range(4 * fps):
            for f in enc_a.encode(scene.render(i, i / fps, vkcube=True), i * 1_000_000 // fps):
                cube.feed(f.data, i / fps)
            for f in enc_b.encode(scene.render(i, i / fps, vkcube=False), i * 1_000_000 // fps):
                # x264's first frames refine a bit-starved first IDR: let them pass as "replay".
                desktop.feed(f.data, i / fps, replay=i < 10)
    moving, still = cube.result(), desktop.result()
    assert moving["motion"] == 1.0 and moving["freezes"] == []
    assert still["motion"] == 0.0  # the stamp row is not content
    held = (4 * fps - 11) / fps
    assert still["freezes"] == [
        {"start_s": pytest.approx(10 / fps, abs=1e-4), "duration_s": pytest.approx(held, abs=1e-4)}
    ]
    assert still["counters"]["unique"] == 4 * fps - 10 and still["black_frames"] == 0


def test_replay_frames_are_decoded_but_not_counted(stream) -> None:
    analyzer = ContentAnalyzer()
    for i, f in enumerate(stream):
        analyzer.feed(f.data, max(0, i - 40) * INTERVAL, replay=i < 40)
    r = analyzer.result()
    assert r["decode_errors"] == 0 and r["decoded_frames"] == N
    assert r["counters"]["first"] == 40
    assert r["black_frames"] == len(BLACK)
    freeze_start = (FROZEN.start - 40) * INTERVAL
    assert r["freezes"] == [{"start_s": pytest.approx(freeze_start), "duration_s": pytest.approx(1.5)}]


def test_corrupt_aus_are_decode_errors(small_stream) -> None:
    rng = random.Random(3)
    bad = {5, 17, 30, 44, 71, 98}
    garbage = bytes(rng.randrange(1, 256) for _ in range(300))  # no start code at all
    aus = [corrupt_au(au, rng) if i in bad else au for i, au in enumerate(small_stream)]
    aus[60:60] = [b"", garbage]
    r = _analyze(aus)
    assert r["decode_errors"] == len(bad) + 2
    assert r["decoded_frames"] == len(small_stream)


def test_random_input_never_crashes(small_stream) -> None:
    rng = random.Random(11)
    analyzer = ContentAnalyzer()
    for i in range(40):
        analyzer.feed(small_stream[i], i * INTERVAL)
    for i in range(40, 100):
        size = rng.randrange(0, 600)
        junk = bytes(rng.randrange(256) for _ in range(size))
        if i % 3 == 0:
            junk = b"\x00\x00\x00\x01" + bytes([rng.choice((0x65, 0x41, 0x67, 0x68, 0x06))]) + junk
        analyzer.feed(junk, i * INTERVAL)
    r = analyzer.result()
    assert r["decode_errors"] > 0
    with pytest.raises(HarnessError):
        analyzer.feed(small_stream[0], 0.0)  # finished


def test_first_frame_flag(small_stream) -> None:
    assert _analyze(small_stream)["first_frame_is_idr_with_sps_pps"] is True
    r = _analyze(small_stream[1:])  # starts with a P frame
    assert r["first_frame_is_idr_with_sps_pps"] is False
    assert r["decode_errors"] == 29  # P frames before the next IDR cannot decode
    idr_without_headers = small_stream[0][small_stream[0].rfind(b"\x00\x00\x00\x01") :]
    assert _analyze([idr_without_headers] + small_stream[1:])["first_frame_is_idr_with_sps_pps"] is False


def test_thumbnails(stream) -> None:
    analyzer = ContentAnalyzer(thumbnails=True)
    for i, f in enumerate(stream):
        analyzer.feed(f.data, i * INTERVAL)
    thumbs = analyzer.thumbnails()
    assert set(thumbs) == {"first_idr", "worst", "last"}
    decoder = av.CodecContext.create("mjpeg", "r")
    means = {}
    for name, data in thumbs.items():
        assert data[:2] == b"\xff\xd8"
        (frame,) = decoder.decode(av.Packet(data))
        assert max(frame.width, frame.height) <= 320
        means[name] = np.frombuffer(frame.planes[0], np.uint8).mean()
    assert means["worst"] < 25 < means["last"]  # the worst frame is a black one
    assert analyzer.thumbnails() == thumbs
    with pytest.raises(HarnessError):
        ContentAnalyzer().thumbnails()


def test_result_is_idempotent(small_stream) -> None:
    analyzer = ContentAnalyzer()
    for i, au in enumerate(small_stream[:20]):
        analyzer.feed(au, i * INTERVAL)
    assert analyzer.result() is analyzer.result()


# -- recordings and .h264 files ---------------------------------------------------------------


def _video(frame, flags: int, pts_us: int) -> bytes:
    flags |= 0x01 if frame.keyframe else 0
    return VIDEO_HEADER.pack(0x01, 0x01, flags, pts_us, 1920, 1080) + frame.data  # header size is not the SPS's


def _write_recording(path, stream, *, replay: int = 40) -> None:
    with RecordingWriter(open(path, "wb")) as writer:
        t = T0
        writer.write(t, KIND_BINARY, bytes([0x30, 0x01, 0x07, 0x80, 0x04, 0x38, 40, 0, 0, 0, 0, 0, 1]))
        writer.write(t, KIND_TEXT, '{"ConnectionComplete":{"capabilities":{"touch":false},"width":1920,"height":1080}}')
        for i, f in enumerate(stream[:replay]):  # the GOP catch-up burst
            writer.write(t + i * 500_000, KIND_BINARY, _video(f, 0x02, i * 25_000))
        live0 = t + 50_000_000
        for i, f in enumerate(stream[replay:], replay):
            writer.write(live0 + round((i - replay) * 1e9 / FPS), KIND_BINARY, _video(f, 0, i * 25_000))
            if i % 20 == 0:
                writer.write(live0 + round((i - replay) * 1e9 / FPS) + 1000, KIND_BINARY, bytes(29))  # a Pong
        message = "pipeline error: encoder stopped".encode()
        writer.write(live0 + 8_000_000_000, KIND_BINARY, bytes([0x31]) + len(message).to_bytes(2, "big") + message)


def test_analyze_recording(stream, tmp_path) -> None:
    path = tmp_path / "s.hxwsrec"
    _write_recording(path, stream)
    r = analyze_recording(path)
    live = N - 40
    assert r["frames"] == live and r["replay_frames"] == 40
    assert r["keyframes"] == live // 40
    assert (r["width"], r["height"]) == (W, H)  # from the SPS, not the 1920x1080 header
    assert r["fps"] == pytest.approx(FPS, abs=0.05) and r["fps_pts"] == pytest.approx(FPS, abs=0.01)
    assert r["duration_s"] == pytest.approx((live - 1) * INTERVAL)
    last = (live - 1) * INTERVAL  # frames stop; the StreamError comes at 8 s: a trailing stall
    assert r["bursts"] == 0
    assert r["stalls"] == [{"start_s": pytest.approx(last), "duration_s": pytest.approx(8 - last)}]
    assert r["stream_errors"] == ["pipeline error: encoder stopped"]
    assert r["first_frame_is_idr_with_sps_pps"] is True  # the replay burst starts with the IDR
    assert r["black_frames"] == len(BLACK) and r["decode_errors"] == 0
    freeze_start = (FROZEN.start - 40) * INTERVAL  # times count from the first live frame
    assert r["freezes"] == [
        {"start_s": pytest.approx(freeze_start, abs=INTERVAL), "duration_s": pytest.approx(1.5, abs=INTERVAL)}
    ]
    assert r["counters"]["first"] == 40 and r["counters"]["last"] == N - 1
    for key in ("fps_windows", "fps_min_window", "jitter_ms", "motion", "warmup_s"):
        assert key in r


def test_analyze_recording_without_decoding(stream, tmp_path) -> None:
    path = tmp_path / "s.hxwsrec"
    _write_recording(path, stream)
    r = analyze_recording(path, decode=False, warmup_s=0)
    assert r["frames"] == N - 40 and r["warmup_s"] == 0
    assert (r["width"], r["height"]) == (W, H)
    assert r["first_frame_is_idr_with_sps_pps"] is True
    for key in ("decode_errors", "black_frames", "motion", "freezes", "counters"):
        assert r[key] is None


def test_stream_analyzer_matches_the_file_driver(stream, tmp_path) -> None:
    path = tmp_path / "s.hxwsrec"
    _write_recording(path, stream)
    from harness.protocols.recording import RecordingReader

    live = StreamAnalyzer()
    with open(path, "rb") as fh:
        for rec in RecordingReader(fh):
            live.add_message(rec.t_ns, rec.kind, rec.data)
    assert live.result() == analyze_recording(path)


def test_stream_analyzer_tolerates_odd_messages(small_stream) -> None:
    analyzer = StreamAnalyzer(warmup_s=0)
    analyzer.add_message(T0, KIND_BINARY, b"")
    analyzer.add_message(T0, KIND_TEXT, b"{}")
    analyzer.add_message(T0, KIND_BINARY, b"\x01\x01\x00")  # a video frame shorter than its header
    analyzer.add_message(T0, KIND_BINARY, b"\x31\x00")  # a truncated StreamError
    analyzer.add_message(T0, KIND_BINARY, b"\x31\x00\x04\xff\xfeok")  # bad UTF-8
    analyzer.add_message(T0, KIND_BINARY, b"\x31\x00\x02ok")
    for i, au in enumerate(small_stream[:10]):
        analyzer.add_message(T0 + i * 25_000_000, KIND_BINARY, VIDEO_HEADER.pack(1, 1, 0, 0, 320, 192) + au)
    r = analyzer.result()
    assert r["frames"] == 10 and r["decode_errors"] == 1  # the malformed frame
    # The stream core's rule, as in the live capture: malformed messages are protocol errors, not 0x31 texts.
    assert r["stream_errors"] == ["ok"] and r["stream_error_count"] == 1
    assert r["protocol_error_count"] == 4 and len(r["protocol_errors"]) == 4
    assert any("VideoFrame header" in e for e in r["protocol_errors"])
    assert any("not valid UTF-8" in e for e in r["protocol_errors"])
    assert r["fps_pts"] is None  # all PTS are 0


def test_analyze_recording_errors(tmp_path) -> None:
    with pytest.raises(HarnessError) as info:
        analyze_recording(tmp_path / "missing.hxwsrec")
    assert info.value.phase == "analysis"
    bad = tmp_path / "bad.hxwsrec"
    bad.write_bytes(b"NOTAREC!")
    with pytest.raises(RecordingError):
        analyze_recording(bad)


def test_analyze_h264(stream, tmp_path) -> None:
    path = tmp_path / "s.h264"
    path.write_bytes(b"".join(f.data for f in stream))
    r = analyze_h264(path, assumed_fps=FPS)
    assert r["frames"] == N and r["keyframes"] == N // 40 and r["replay_frames"] == 0
    assert (r["width"], r["height"]) == (W, H)
    for key in ("fps", "fps_pts", "duration_s", "fps_windows", "fps_min_window", "bursts", "stalls"):
        assert r[key] is None
    assert r["jitter_ms"] == {"p50": None, "p95": None, "p99": None, "max": None}
    assert r["black_frames"] == len(BLACK) and r["decode_errors"] == 0
    assert r["freezes"] == [{"start_s": pytest.approx(2.0), "duration_s": pytest.approx(1.5)}]
    assert r["first_frame_is_idr_with_sps_pps"] is True
    quick = analyze_h264(path, decode=False)
    assert quick["frames"] == N and quick["freezes"] is None and quick["width"] == W
