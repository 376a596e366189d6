"""The native WebSocket capture against the simulator's stream endpoint and desktop pipeline.

The contract: ``capture_stream`` connects with the Bearer header, sends the init, records every
message for ``duration`` seconds (the HXWSREC1 recording holds each one, the ``.h264`` the video
payloads) and returns what it saw: timings, the stream's own init and connection messages in
order, and the timing and content analyses; a refused upgrade is a ``stream``-phase error that
names the HTTP status and never the key.
"""

from __future__ import annotations

import asyncio

import pytest

from harness.drivers.capture import CaptureError, capture_stream
from harness.protocols import stream as sp
from harness.protocols.recording import KIND_BINARY, RecordingReader

pytestmark = pytest.mark.timeout(90)

DURATION = 2.5
SIM_FPS = 40  # SimConfig's default frame rate


def _capture(rig, sid: str, out_dir, *, headers=None, duration: float = DURATION, on_progress=None):
    init = sp.Init(session_id=sid, width=640, height=368, fps=60, bitrate=2000)
    return asyncio.run(capture_stream(rig.api.stream_url(sid), rig.api.auth_headers if headers is None else headers,
                                      init, duration=duration, out_dir=out_dir, name="cap", connect_timeout=10,
                                      first_frame_timeout=10, warmup_s=0.5, on_progress=on_progress))


def test_a_short_capture_and_its_result(rig, tmp_path) -> None:
    sid, _ = rig.session()
    rig.api.start_vkcube(sid)  # the desktop only sends frames while its content changes
    progress: list[int] = []
    res = _capture(rig, sid, tmp_path, on_progress=progress.append)
    assert (res.end, res.error, res.close_code, res.stream_errors, res.protocol_errors) == ("duration", "", None, [], [])
    assert DURATION <= res.duration_s < DURATION + 5
    assert 0 <= res.connect_s < 5 and 0 <= res.first_frame_s < 5 and res.first_frame_wall
    assert res.message_order[:2] == ["StreamInit", "ConnectionComplete"] and "VideoFrame" in res.message_order
    assert res.stream_init == {"codec": 1, "width": 640, "height": 368, "fps": 60}
    assert res.connection_complete == {"width": 640, "height": 368}
    assert res.timing["frames"] == len(progress) and res.timing["keyframes"] >= 1
    assert SIM_FPS * 0.7 <= res.timing["fps"] <= SIM_FPS * 1.3, res.timing
    content = res.content
    assert (content["width"], content["height"], content["decode_errors"]) == (640, 368, 0)
    assert content["first_frame_is_idr_with_sps_pps"] is True and content["decoded_frames"] > 0
    assert {"first_idr", "last"} <= set(res.thumbnails)
    for path in res.thumbnails.values():
        assert open(path, "rb").read(3) == b"\xff\xd8\xff"
    # every message is in the recording, the video payloads in the .h264
    with open(res.recording, "rb") as fh:
        records = list(RecordingReader(fh))
    assert len(records) == res.messages and sum(len(r.data) for r in records) == res.bytes
    stream_file = open(res.h264, "rb").read()
    assert stream_file.startswith(b"\x00\x00\x00\x01")
    assert 0 < len(stream_file) < sum(len(r.data) for r in records if r.kind == KIND_BINARY)
    assert res.as_dict()["end"] == "duration"


@pytest.mark.parametrize("case, status", [("wrong key", 401), ("unknown session", 404)])
def test_a_refused_upgrade_is_a_stream_error(rig, tmp_path, case, status) -> None:
    sid, _ = rig.session()
    if case == "unknown session":
        sid, headers = "ses_01nonexistent0000000000000", None
    else:
        headers = {"Authorization": "Bearer not-the-key-0123"}
    with pytest.raises(CaptureError) as err:
        _capture(rig, sid, tmp_path, headers=headers, duration=1)
    assert err.value.phase == "stream" and f"WebSocket upgrade refused: HTTP {status}" in err.value.message
    assert rig.info["api_key"] not in str(err.value) and "not-the-key" not in str(err.value)
