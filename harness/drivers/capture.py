"""Native capture of the Helix video stream (asyncio + websockets).

Connects to ``/api/v1/external-agents/{ses}/ws/stream`` with Bearer auth, sends the text init,
and hands every message, as it arrives, to the capture's sinks (``analysis.sinks``: the HXWSREC1
recording, the Annex-B `.h264`, the analyzers), all streaming (O(1) memory). Arrival times are taken
in the receive loop (:class:`StreamReceiver` does the rest). Message bytes are interpreted by the
sans-I/O core in ``protocols.stream``. The content analysis follows the analysis mode (``live``,
``deferred``, ``sampled``: ``analysis.modes``), and the harness's own footprint during the stream
(``drivers.footprint``) is part of the result. :class:`CaptureDriver` runs a capture to completion on
its own event loop, so callers stay synchronous.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from ..analysis.modes import LIVE, SAMPLE_EVERY, check_mode
from ..analysis.sinks import CaptureSinks
from ..errors import HarnessError
from .footprint import FootprintMeter, own_cpu_s
from ..protocols import stream as sp
from ..protocols.errors import RemoteProtocolError
from ..protocols.recording import KIND_BINARY, KIND_TEXT
from ..redact import redact

log = logging.getLogger(__name__)

PHASE = "stream"


class CaptureError(HarnessError):
    default_phase = PHASE


@dataclass
class CaptureResult:
    url: str
    recording: str
    h264: str
    duration_s: float = 0.0
    connect_s: float | None = None
    first_frame_s: float | None = None  # init sent → first live frame
    first_frame_wall: float | None = None  # time.time() of the first live frame
    messages: int = 0
    bytes: int = 0
    stream_init: dict | None = None
    connection_complete: dict | None = None
    message_order: list[str] = field(default_factory=list)  # first message names, for protocol checks
    stream_errors: list[str] = field(default_factory=list)
    protocol_errors: list[str] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    end: str = ""  # duration | closed | error
    error: str = ""
    trailing_gap_s: float | None = None
    pings_answered: bool = True
    #: No live video frame came within the first-frame timeout or the whole capture (the socket stayed open).
    first_frame_timed_out: bool = False
    #: Everything besides video, counted by the stream core's StreamTally (the same facts ``analyze`` gives
    #: offline): viewer joins/leaves, cursor/status/unknown messages, statuses before the first frame, ttff.
    tally: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)
    content: dict = field(default_factory=dict)
    content_skipped: int = 0
    thumbnails: dict = field(default_factory=dict)  # name -> JPEG path (first_idr, worst, last)
    analysis: str = LIVE  # live | deferred | sampled (analysis.modes)
    #: ``sampled``: which frames the content checks saw (``FrameSampler.report``); else None.
    sampling: dict | None = None
    #: The harness's own cost during the stream (``drivers.footprint.Footprint.as_dict``): metrics.json["harness"].
    footprint: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        return d


class StreamReceiver:
    """What the receive loop does with each message once it took its arrival time: the recording, the stream
    core, the result's bookkeeping and the sinks. A recording replayed through it (with its arrival times)
    reaches the sinks exactly as the live stream did."""

    def __init__(self, result: CaptureResult, sinks: CaptureSinks, *, on_progress=None) -> None:
        self.result = result
        self.sinks = sinks
        self.conn = sp.StreamConnection(sp.Role.CLIENT)
        self.tally = sp.StreamTally()
        self.on_progress = on_progress
        self.t_init = time.monotonic()
        self.first_frame_ns: int | None = None
        self.last_frame_ns: int | None = None

    def message(self, t_ns: int, msg: bytes | str) -> None:
        result, sinks = self.result, self.sinks
        result.messages += 1
        kind_in, raw = (KIND_TEXT, msg.encode("utf-8")) if isinstance(msg, str) else (KIND_BINARY, msg)
        sinks.message(t_ns, kind_in, raw)
        result.bytes += len(raw)
        try:
            event = self.conn.receive(kind_in, raw)
        except RemoteProtocolError as exc:
            self.tally.add_error(t_ns, exc)
            if len(result.protocol_errors) < 20:
                result.protocol_errors.append(exc.message)
            return
        self.tally.add(t_ns, event)
        if len(result.message_order) < 12:
            result.message_order.append(type(event).__name__)
        if isinstance(event, sp.VideoFrame):
            if not event.is_replay:
                if self.first_frame_ns is None:
                    self.first_frame_ns = t_ns
                    result.first_frame_s = round(time.monotonic() - self.t_init, 3)
                    result.first_frame_wall = time.time()
                self.last_frame_ns = t_ns
            sinks.video(t_ns, event.data, replay=event.is_replay, keyframe=event.is_keyframe, pts_us=event.pts_us)
            if self.on_progress and self.first_frame_ns is not None:
                self.on_progress(time.monotonic() - self.t_init)
        elif isinstance(event, sp.StreamError):
            result.stream_errors.append(event.message)
            sinks.stream_error(event.message)
        elif isinstance(event, sp.StreamInit):
            result.stream_init = {"codec": event.codec, "width": event.width, "height": event.height,
                                  "fps": event.fps}
        elif isinstance(event, sp.ConnectionComplete):
            result.connection_complete = {"width": event.width, "height": event.height}

    def finish(self) -> None:
        """Close the sinks and put their results (timing, content, thumbnails, sampling) into the result;
        in ``deferred`` this is where the frames are decoded, from the recording."""
        done = self.sinks.finish()
        result = self.result
        result.tally = self.tally.result()
        result.timing = done["timing"]
        result.content = done["content"]
        result.content_skipped = done["content_skipped"]
        result.thumbnails = done["thumbnails"]
        result.sampling = done["sampling"]


async def capture_stream(
    url: str,
    headers: dict[str, str],
    init: "sp.Init",
    *,
    duration: float,
    out_dir: Path,
    name: str = "stream",
    connect_timeout: float = 15.0,
    first_frame_timeout: float = 30.0,
    warmup_s: float = 2.0,
    decode: bool = True,
    thumbnails: bool = True,
    on_progress=None,
    analysis: str = LIVE,
    sample_every: int = SAMPLE_EVERY,
) -> CaptureResult:
    """Capture ``duration`` seconds of a session's stream; ``analysis`` says when the frames are decoded
    (``analysis.modes``). The result carries the harness's footprint from the connect to the socket's close."""
    check_mode(analysis)
    sinks = CaptureSinks(out_dir, name, warmup_s=warmup_s, decode=decode, thumbnails=thumbnails, analysis=analysis,
                         sample_every=sample_every)
    result = CaptureResult(url=url, recording=str(sinks.recording_path), h264=str(sinks.h264_path), analysis=analysis)
    meter = FootprintMeter()
    meter.start()
    rx = StreamReceiver(result, sinks, on_progress=on_progress)
    conn = rx.conn
    t0 = time.monotonic()
    try:
        with sinks:
            try:
                ws = await asyncio.wait_for(
                    websockets.connect(
                        url,
                        additional_headers=headers,
                        max_size=None,  # 4K IDR frames exceed websockets' 1 MiB default
                        compression=None,
                        open_timeout=connect_timeout,
                        ping_interval=None,  # the server pings; websockets answers them itself
                        close_timeout=2,
                    ),
                    timeout=connect_timeout + 1,
                )
            except InvalidStatus as exc:
                resp = exc.response
                body = redact((resp.body or b"").decode("utf-8", "replace").strip())[:300]
                raise CaptureError(
                    f"WebSocket upgrade refused: HTTP {resp.status_code} {resp.reason_phrase}: {body}",
                    cause="ws_upgrade_refused",
                    hint="`Sandbox not connected` means the API has no RevDial tunnel to the sandbox/desktop"
                    if "Sandbox not connected" in body
                    else None,
                ) from None
            except (InvalidHandshake, OSError, asyncio.TimeoutError) as exc:
                raise CaptureError(f"WebSocket connect to {url} failed: {type(exc).__name__}: {exc}") from None
            result.connect_s = round(time.monotonic() - t0, 3)
            async with ws:
                kind, payload = conn.send(init)
                await ws.send(payload if kind == KIND_TEXT else bytes(payload))
                t_init = rx.t_init = time.monotonic()
                end_at = t_init + duration
                message = rx.message
                while True:
                    now = time.monotonic()
                    if now >= end_at:
                        if rx.first_frame_ns is None:
                            # the whole capture passed without a first frame: that is its cause, whichever
                            # of the capture's duration and the first-frame timeout is shorter
                            result.end = "error"
                            result.first_frame_timed_out = True
                            result.error = f"no video frame within the whole capture ({duration:.1f}s after the init)"
                        else:
                            result.end = "duration"
                        break
                    wait = end_at - now
                    if rx.first_frame_ns is None:
                        wait = min(wait, t_init + first_frame_timeout - now)
                        if wait <= 0:
                            result.end = "error"
                            result.first_frame_timed_out = True
                            result.error = f"no video frame within {first_frame_timeout:.1f}s of the init"
                            break
                    try:
                        async with asyncio.timeout(wait):  # no task per message, unlike wait_for
                            msg = await ws.recv()
                    except TimeoutError:
                        continue
                    except ConnectionClosed as exc:
                        rcvd = exc.rcvd
                        result.close_code = rcvd.code if rcvd else 1006
                        result.close_reason = rcvd.reason if rcvd else ""
                        result.end = "closed"
                        break
                    message(time.monotonic_ns(), msg)
                if result.end in ("duration", "error"):
                    try:
                        await asyncio.wait_for(ws.close(code=1000), timeout=3)
                    except (asyncio.TimeoutError, ConnectionClosed, OSError):
                        pass
    finally:
        stop = time.monotonic_ns()
        meter.stop()
        result.duration_s = round(time.monotonic() - t0, 3)
        if rx.last_frame_ns is not None:
            result.trailing_gap_s = round((stop - rx.last_frame_ns) / 1e9, 3)
        cpu0 = own_cpu_s()
        rx.finish()
        footprint = meter.result(analysis)
        footprint.analysis_cpu_s = round(own_cpu_s() - cpu0, 3) if decode else None
        footprint.sampled = result.sampling
        result.footprint = footprint.as_dict()
    return result


class CaptureDriver:
    """Captures a session's stream to files and results; the event loop is its own business."""

    def __init__(self, *, connect_timeout: float, first_frame_timeout: float, warmup_s: float,
                 sample_every: int = SAMPLE_EVERY) -> None:
        self.connect_timeout = connect_timeout
        self.first_frame_timeout = first_frame_timeout
        self.warmup_s = warmup_s
        self.sample_every = sample_every

    def capture(self, url: str, headers: dict[str, str], init: "sp.Init", *, duration: float, out_dir: Path,
                name: str = "stream", on_progress: Callable[[float], None] | None = None,
                analysis: str = LIVE) -> CaptureResult:
        """Capture ``duration`` seconds; ``on_progress(seconds since the init)`` after each live frame;
        ``analysis``: when the frames are decoded (live, deferred: after the stream, sampled)."""
        return asyncio.run(capture_stream(
            url, headers, init, duration=duration, out_dir=out_dir, name=name, connect_timeout=self.connect_timeout,
            first_frame_timeout=self.first_frame_timeout, warmup_s=self.warmup_s, on_progress=on_progress,
            analysis=analysis, sample_every=self.sample_every,
        ))
