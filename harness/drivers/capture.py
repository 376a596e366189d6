"""Native capture of the Helix video stream (asyncio + websockets).

Connects to ``/api/v1/external-agents/{ses}/ws/stream`` with Bearer auth, sends the text init,
and records every message as it arrives: to a HXWSREC1 recording, to the Annex-B `.h264`, and
into the analyzers, all streaming (O(1) memory). Arrival times are taken in the receive loop;
decoding runs in a worker thread so it cannot delay them. Message bytes are interpreted by the
sans-I/O core in ``protocols.stream``.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from ..analysis.content import ContentAnalyzer
from ..analysis.timing import TimingAnalyzer
from ..errors import HarnessError
from ..protocols import stream as sp
from ..protocols.errors import RemoteProtocolError
from ..protocols.recording import KIND_BINARY, KIND_TEXT, RecordingWriter
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
    timing: dict = field(default_factory=dict)
    content: dict = field(default_factory=dict)
    content_skipped: int = 0
    thumbnails: dict = field(default_factory=dict)  # name -> JPEG path (first_idr, worst, last)

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        return d


class _ContentWorker:
    """Feeds AUs to a ContentAnalyzer on its own thread through a bounded queue."""

    def __init__(self, analyzer: ContentAnalyzer, maxsize: int = 256) -> None:
        self.analyzer = analyzer
        self.queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self.skipped = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="content-analysis", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            au, t_s, replay = item
            try:
                self.analyzer.feed(au, t_s, replay=replay)
            except Exception as exc:  # noqa: BLE001 - reported in the result, never kills capture
                self.error = exc

    def put(self, au: bytes, t_s: float, replay: bool) -> None:
        try:
            self.queue.put_nowait((au, t_s, replay))
        except queue.Full:
            self.skipped += 1

    def close(self, timeout: float) -> None:
        self.queue.put(None)
        self.thread.join(timeout=timeout)


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
) -> CaptureResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    rec_path = out_dir / f"{name}.hxwsrec"
    h264_path = out_dir / f"{name}.h264"
    result = CaptureResult(url=url, recording=str(rec_path), h264=str(h264_path))
    timing = TimingAnalyzer(warmup_s=warmup_s)
    content = _ContentWorker(ContentAnalyzer(thumbnails=thumbnails)) if decode else None
    conn = sp.StreamConnection(sp.Role.CLIENT)
    t0 = time.monotonic()
    first_frame_ns: int | None = None
    last_frame_ns: int | None = None
    try:
        with open(rec_path, "wb") as rec_fh, open(h264_path, "wb") as h264_fh:
            writer = RecordingWriter(rec_fh)
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
                t_init = time.monotonic()
                end_at = t_init + duration
                while True:
                    now = time.monotonic()
                    if now >= end_at:
                        result.end = "duration"
                        break
                    wait = end_at - now
                    if first_frame_ns is None:
                        wait = min(wait, t_init + first_frame_timeout - now)
                        if wait <= 0:
                            result.end = "error"
                            result.error = f"no video frame within {first_frame_timeout:.0f}s of the init"
                            break
                    try:
                        msg = await asyncio.wait_for(ws.recv(), timeout=wait)
                    except asyncio.TimeoutError:
                        continue
                    except ConnectionClosed as exc:
                        rcvd = exc.rcvd
                        result.close_code = rcvd.code if rcvd else 1006
                        result.close_reason = rcvd.reason if rcvd else ""
                        result.end = "closed"
                        break
                    t_ns = time.monotonic_ns()
                    result.messages += 1
                    if isinstance(msg, str):
                        data = msg.encode("utf-8")
                        writer.write(t_ns, KIND_TEXT, data)
                        kind_in, raw = KIND_TEXT, data
                    else:
                        writer.write(t_ns, KIND_BINARY, msg)
                        kind_in, raw = KIND_BINARY, msg
                    result.bytes += len(raw)
                    try:
                        event = conn.receive(kind_in, raw)
                    except RemoteProtocolError as exc:
                        if len(result.protocol_errors) < 20:
                            result.protocol_errors.append(exc.message)
                        continue
                    if len(result.message_order) < 12:
                        result.message_order.append(type(event).__name__)
                    if isinstance(event, sp.VideoFrame):
                        if not event.is_replay:
                            if first_frame_ns is None:
                                first_frame_ns = t_ns
                                result.first_frame_s = round(time.monotonic() - t_init, 3)
                                result.first_frame_wall = time.time()
                            last_frame_ns = t_ns
                        h264_fh.write(event.data)
                        timing.add(t_ns, replay=event.is_replay, keyframe=event.is_keyframe, pts_us=event.pts_us,
                                   size=len(event.data))
                        if content is not None:
                            base = first_frame_ns if first_frame_ns is not None else t_ns
                            content.put(event.data, (t_ns - base) / 1e9, event.is_replay)
                        if on_progress and first_frame_ns is not None:
                            on_progress(t_ns)
                    elif isinstance(event, sp.StreamError):
                        result.stream_errors.append(event.message)
                        timing.add_stream_error(event.message)
                    elif isinstance(event, sp.StreamInit):
                        result.stream_init = {"codec": event.codec, "width": event.width, "height": event.height,
                                              "fps": event.fps}
                    elif isinstance(event, sp.ConnectionComplete):
                        result.connection_complete = {"width": event.width, "height": event.height}
                if result.end in ("duration", "error"):
                    try:
                        await asyncio.wait_for(ws.close(code=1000), timeout=3)
                    except (asyncio.TimeoutError, ConnectionClosed, OSError):
                        pass
            writer.close()
    finally:
        stop = time.monotonic_ns()
        result.duration_s = round(time.monotonic() - t0, 3)
        if last_frame_ns is not None:
            result.trailing_gap_s = round((stop - last_frame_ns) / 1e9, 3)
        result.timing = timing.result()
        if content is not None:
            content.close(timeout=30)
            result.content = content.analyzer.result()
            result.content_skipped = content.skipped
            if content.error is not None:
                result.content["analysis_error"] = f"{type(content.error).__name__}: {content.error}"
            if thumbnails:
                try:
                    for label, jpeg in content.analyzer.thumbnails().items():
                        path = out_dir / f"{name}-{label}.jpg"
                        path.write_bytes(jpeg)
                        result.thumbnails[label] = str(path)
                except (HarnessError, OSError) as exc:  # artifacts never change a verdict
                    log.warning("thumbnails unavailable: %s", exc)
    return result
