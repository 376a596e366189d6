"""The QEMU frame-export probe: send FRAME_REQUEST with resource_id=0 and classify the answer.

Verdicts (macos-frame-export.md §0.3, §1):
- ``rejected``: a 0xFF ERROR reply (the Feb-5 build: code -2, "Error: -2"). The only passing verdict.
- ``ignored``: no reply before our timeout (v10 has no FRAME_REQUEST handler and drops it).
- ``accepted``: a FRAME_RESPONSE (v7 falls back to the DisplaySurface).
- ``unreachable``: nothing listens / connection failed.
- ``protocol_error``: a reply with a bad magic, a truncated reply, or an unexpected message.
The socket code lives here; the bytes are handled by the sans-I/O core in ``protocols.hxfr``.
"""

from __future__ import annotations

import socket
import time
from dataclasses import asdict, dataclass, field

from ..deadline import Deadline
from ..protocols import hxfr
from ..protocols.errors import RemoteProtocolError

VERDICTS = ("rejected", "ignored", "accepted", "unreachable", "protocol_error")

EXPLANATIONS = {
    "rejected": "QEMU rejected resource_id=0 with an error reply",
    "ignored": "no reply: v10-style builds have no FRAME_REQUEST handler and silently drop it",
    "accepted": "QEMU answered resource_id=0 with a frame (v7-style DisplaySurface fallback), it did not reject it",
    "unreachable": "nothing accepted a connection on the frame-export port",
    "protocol_error": "the reply was not valid HXFR",
}


@dataclass
class ProbeResult:
    verdict: str
    host: str
    port: int
    error_code: int | None = None
    message: str = ""
    elapsed_ms: float = 0.0
    exchange: list[dict] = field(default_factory=list)  # [{"dir": "sent"|"received", "hex": "..."}]

    @property
    def explanation(self) -> str:
        return EXPLANATIONS[self.verdict]

    def as_dict(self) -> dict:
        d = asdict(self)
        d["explanation"] = self.explanation
        return d


def _frame_request_zero() -> "hxfr.FrameRequest":
    return hxfr.FrameRequest(
        resource_id=0,
        width=1920,
        height=1080,
        format=hxfr.FORMAT_NV12,
        stride=1920,
        pts_ns=0,
        duration_ns=16_666_667,
        force_keyframe=1,
    )


def probe_resource_id_zero(host: str, port: int, *, timeout: float = 10.0) -> ProbeResult:
    """Never hangs: every socket operation is bounded by ``timeout`` in total."""
    start = time.monotonic()
    result = ProbeResult(verdict="unreachable", host=host, port=port)
    deadline = Deadline(timeout)

    def done(verdict: str, **kw) -> ProbeResult:
        result.verdict = verdict
        for k, v in kw.items():
            setattr(result, k, v)
        result.elapsed_ms = round((time.monotonic() - start) * 1000, 1)
        return result

    try:
        sock = socket.create_connection((host, port), timeout=min(5.0, timeout))
    except OSError as exc:
        return done("unreachable", message=f"connect to {host}:{port} failed: {exc.strerror or exc}")
    conn = hxfr.HxfrConnection(hxfr.Role.CLIENT)
    try:
        payload = conn.send(_frame_request_zero())
        result.exchange.append({"dir": "sent", "hex": payload.hex()})
        try:
            sock.sendall(payload)
        except OSError as exc:
            return done("unreachable", message=f"sending FRAME_REQUEST failed: {exc}")
        received = bytearray()
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                return done("protocol_error", message=f"{exc.message}; bytes: {bytes(received[:64]).hex()}")
            if isinstance(event, hxfr.ErrorResponse):
                return done("rejected", error_code=event.error_code, message=event.message)
            if isinstance(event, hxfr.FrameResponse):
                size = sum(len(n) for n in event.nals)
                return done("accepted", message=f"FRAME_RESPONSE with {len(event.nals)} NAL blob(s), {size} bytes")
            if event is hxfr.EOF:
                if received:
                    return done("protocol_error", message=f"connection closed mid-message after {len(received)} bytes: "
                                f"{bytes(received[:64]).hex()}")
                return done("ignored", message="QEMU closed the connection without replying")
            if event is not hxfr.NEED_DATA:
                return done("protocol_error", message=f"unexpected reply {type(event).__name__}")
            if deadline.expired:
                conn.expire_outstanding()
                if received:
                    return done("protocol_error", message=f"truncated reply ({len(received)} bytes): "
                                f"{bytes(received[:64]).hex()}")
                return done("ignored", message=f"no reply within {timeout:.1f}s")
            sock.settimeout(max(0.05, deadline.remaining))
            try:
                data = sock.recv(65536)
            except (socket.timeout, TimeoutError):
                continue
            except OSError as exc:
                if received:
                    return done("protocol_error", message=f"connection error mid-reply: {exc}")
                return done("ignored", message=f"connection reset without a reply: {exc}")
            if data:
                received += data
                result.exchange.append({"dir": "received", "hex": data.hex()})
            conn.receive_data(data)
    finally:
        try:
            sock.close()
        except OSError:
            pass


class FrameExportDriver:
    """QEMU's frame-export port as the strategy uses it: one resource_id=0 probe at a time."""

    def __init__(self, host: str, port: int, *, timeout: float) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout

    def probe_resource_id_zero(self) -> ProbeResult:
        return probe_resource_id_zero(self.host, self.port, timeout=self.timeout)
