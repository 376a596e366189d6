"""The QEMU frame-export probe: send FRAME_REQUEST with resource_id=0 and classify the answer.

Verdicts (macos-frame-export.md §0.3, §1):
- ``rejected``: a 0xFF ERROR reply (the Feb-5 build: code -2, "Error: -2"). The only passing verdict.
- ``ignored``: no reply before our timeout, connection left open (v10 has no FRAME_REQUEST handler and
  silently drops it).
- ``reset``: the port reset or closed the connection before any reply. A crashing QEMU looks like this
  (as does one that refuses the client: ``No client slots available``), so it is never called ``ignored``.
- ``accepted``: a FRAME_RESPONSE (v7 falls back to the DisplaySurface).
- ``unreachable``: nothing listens / connection failed.
- ``protocol_error``: a reply with a bad magic, a truncated reply, or an unexpected message.
The socket code lives here; the bytes are handled by the sans-I/O core in ``protocols.hxfr``.

Bounded input: the host must be a host name or address (at most 253 characters), the port 1..65535 and
the timeout a finite number of seconds in (0, ``MAX_TIMEOUT``]; anything else raises ``ProbeInputError``
naming the input. At most ``MAX_KEPT`` bytes of a reply are kept as hex evidence (``omitted_bytes``
counts the rest), and a FRAME_RESPONSE is classified from its header without buffering a huge body.
"""

from __future__ import annotations

import math
import re
import socket
import time
from dataclasses import asdict, dataclass, field

from ..deadline import Deadline
from ..errors import HarnessError
from ..protocols import hxfr
from ..protocols.errors import RemoteProtocolError

VERDICTS = ("rejected", "ignored", "accepted", "unreachable", "protocol_error", "reset")

EXPLANATIONS = {
    "rejected": "QEMU rejected resource_id=0 with an error reply",
    "ignored": "no reply: v10-style builds have no FRAME_REQUEST handler and silently drop it",
    "reset": "the frame-export port reset or closed the connection without replying: QEMU may have crashed "
             "(look for a new QEMULauncher .ips crash report and the end of helix-debug.log) or refused the "
             "client (`No client slots available`); a v10 build without a FRAME_REQUEST handler stays silent "
             "instead",
    "accepted": "QEMU answered resource_id=0 with a frame (v7-style DisplaySurface fallback), it did not reject it",
    "unreachable": "nothing accepted a connection on the frame-export port",
    "protocol_error": "the reply was not valid HXFR",
}

#: Longest probe timeout accepted, in seconds.
MAX_TIMEOUT = 3600.0
#: v10 closes a silent client after its 60 s idle ``poll`` (macos-frame-export.md §1): a close after this
#: much silence is that, not a crash.
IDLE_CLOSE_S = 55.0
#: Bytes of each direction kept as hex evidence.
MAX_KEPT = 4096
#: A FRAME_RESPONSE larger than this is classified from its header; its body is not read.
MAX_BODY_READ = 1 << 20
_HOST_RE = re.compile(r"[A-Za-z0-9._:%\[\]-]{1,253}")


class ProbeInputError(HarnessError):
    """A probe argument is out of range; the message names it and what is accepted."""

    default_phase = "probe"


def check_probe_args(host: object, port: object, timeout: object) -> tuple[str, int, float]:
    """``(host, port, timeout)`` validated, or ``ProbeInputError`` naming the bad one."""
    if not isinstance(host, str) or not _HOST_RE.fullmatch(host) or any(len(p) > 63 for p in host.split(".")):
        shown = repr(host) if not isinstance(host, str) or len(host) <= 40 else f"{host[:40]!r}… ({len(host)} chars)"
        raise ProbeInputError(f"host {shown} is not a host name or IP address "
                              "(1..253 characters of letters, digits, '.', '-', ':', labels of at most 63)")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ProbeInputError(f"port {port!r} is out of range: accepted 1..65535")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) \
            or not 0 < timeout <= MAX_TIMEOUT:
        raise ProbeInputError(f"timeout {timeout!r} is not accepted: a finite number of seconds in (0, {MAX_TIMEOUT:g}]")
    return host, port, float(timeout)


@dataclass
class ProbeResult:
    verdict: str
    host: str
    port: int
    error_code: int | None = None
    message: str = ""
    elapsed_ms: float = 0.0
    exchange: list[dict] = field(default_factory=list)  # [{"dir": "sent"|"received", "hex": "...", "bytes": n}]
    received_bytes: int = 0
    omitted_bytes: int = 0  # received bytes not kept as hex evidence (beyond MAX_KEPT)

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
    """Never hangs: every socket operation is bounded by ``timeout`` in total; memory is bounded too."""
    host, port, timeout = check_probe_args(host, port, timeout)
    start = time.monotonic()
    result = ProbeResult(verdict="unreachable", host=host, port=port)
    deadline = Deadline(timeout)
    kept = bytearray()  # the first MAX_KEPT received bytes: the evidence

    def done(verdict: str, **kw) -> ProbeResult:
        result.verdict = verdict
        for k, v in kw.items():
            setattr(result, k, v)
        if result.received_bytes:
            result.exchange.append({"dir": "received", "hex": bytes(kept).hex(), "bytes": result.received_bytes})
        result.omitted_bytes = result.received_bytes - len(kept)
        result.elapsed_ms = round((time.monotonic() - start) * 1000, 1)
        return result

    def head() -> str:
        return bytes(kept[:64]).hex()

    try:
        sock = socket.create_connection((host, port), timeout=min(5.0, timeout))
    except (OSError, UnicodeError) as exc:
        return done("unreachable", message=f"connect to {host}:{port} failed: {getattr(exc, 'strerror', None) or exc}")
    conn = hxfr.HxfrConnection(hxfr.Role.CLIENT)
    try:
        payload = conn.send(_frame_request_zero())
        result.exchange.append({"dir": "sent", "hex": payload.hex(), "bytes": len(payload)})
        try:
            sock.sendall(payload)
        except (ConnectionResetError, BrokenPipeError) as exc:
            return done("reset", message=f"sending FRAME_REQUEST failed: the connection was reset ({exc})")
        except OSError as exc:
            return done("unreachable", message=f"sending FRAME_REQUEST failed: {exc}")
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                return done("protocol_error", message=f"{exc.message}; bytes: {head()}")
            if isinstance(event, hxfr.ErrorResponse):
                return done("rejected", error_code=event.error_code, message=event.message)
            if isinstance(event, hxfr.FrameResponse):
                size = sum(len(n) for n in event.nals)
                return done("accepted", message=f"FRAME_RESPONSE with {len(event.nals)} NAL blob(s), {size} bytes")
            if event is hxfr.EOF:
                if result.received_bytes:
                    return done("protocol_error", message=f"connection closed mid-message after "
                                f"{result.received_bytes} bytes: {head()}")
                waited = time.monotonic() - start
                if waited >= IDLE_CLOSE_S:
                    return done("ignored", message=f"no reply; QEMU closed the connection after {waited:.0f}s of "
                                "silence (v10's 60 s idle read)")
                return done("reset", message=f"the port closed the connection without replying after {waited:.1f}s")
            if event is not hxfr.NEED_DATA:
                return done("protocol_error", message=f"unexpected reply {type(event).__name__}")
            big = _big_frame_response(kept)
            if big is not None:
                return done("accepted", message=f"FRAME_RESPONSE announcing {big} payload bytes (classified from its "
                            f"header; the body was not read past {result.received_bytes} bytes)")
            if deadline.expired:
                conn.expire_outstanding()
                if result.received_bytes:
                    return done("protocol_error", message=f"truncated reply ({result.received_bytes} bytes): {head()}")
                return done("ignored", message=f"no reply within {timeout:.1f}s")
            sock.settimeout(max(0.05, deadline.remaining))
            try:
                data = sock.recv(65536)
            except (socket.timeout, TimeoutError):
                continue
            except OSError as exc:
                if result.received_bytes:
                    return done("protocol_error", message=f"connection error mid-reply: {exc}")
                return done("reset", message=f"connection reset without a reply after "
                            f"{time.monotonic() - start:.1f}s: {exc}")
            if data:
                result.received_bytes += len(data)
                if len(kept) < MAX_KEPT:
                    kept += data[: MAX_KEPT - len(kept)]
            conn.receive_data(data)
    finally:
        try:
            sock.close()
        except OSError:
            pass


def _big_frame_response(kept: bytearray) -> int | None:
    """The payload size of a FRAME_RESPONSE header at the start of the reply when it exceeds
    ``MAX_BODY_READ`` (so the probe need not hold it), else None."""
    if len(kept) < hxfr.HEADER.size:
        return None
    magic, msg_type, _, _, size = hxfr.HEADER.unpack_from(kept)
    if magic == hxfr.MAGIC and msg_type == hxfr.MsgType.FRAME_RESPONSE and size > MAX_BODY_READ:
        return size
    return None


class FrameExportDriver:
    """QEMU's frame-export port as the strategy uses it: one resource_id=0 probe at a time."""

    def __init__(self, host: str, port: int, *, timeout: float) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout

    def probe_resource_id_zero(self) -> ProbeResult:
        return probe_resource_id_zero(self.host, self.port, timeout=self.timeout)
