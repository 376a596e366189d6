"""The resource_id=0 probe against small loopback servers with every behaviour it must classify."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from harness.drivers.frame_export import MAX_KEPT, VERDICTS, ProbeInputError, probe_resource_id_zero
from harness.protocols import hxfr


class Server:
    """A one-connection TCP server whose reply is decided by `behaviour(conn_bytes) -> bytes|None`."""

    def __init__(self, behaviour, close_after: bool = True) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.behaviour = behaviour
        self.close_after = close_after
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            data = b""
            while len(data) < 56:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            reply = self.behaviour(data)
            if reply:
                conn.sendall(reply)
            if not self.close_after:
                self.release.wait(10)

    def close(self) -> None:
        self.release.set()
        self.sock.close()
        self.thread.join(timeout=5)


def _server_conn_reply(event) -> bytes:
    return hxfr.HxfrConnection(hxfr.Role.SERVER).send(event)


@pytest.mark.parametrize(
    "behaviour, close_after, verdict",
    [
        (lambda req: _server_conn_reply(hxfr.ErrorResponse(error_code=-2, message="Error: -2")), True, "rejected"),
        (lambda req: _server_conn_reply(hxfr.FrameResponse(pts=0, dts=0, is_keyframe=1, nals=(b"\0\0\0\1\x65xx",))),
         True, "accepted"),
        (lambda req: None, False, "ignored"),  # accepts, then stalls: v10 has no FRAME_REQUEST handler
        (lambda req: b"HTTP/1.1 400 Bad Request\r\n\r\n", True, "protocol_error"),  # garbage
        (lambda req: _server_conn_reply(hxfr.ErrorResponse(error_code=-2, message="x"))[:20], True, "protocol_error"),
    ],
    ids=["rejected", "accepted", "stalls", "garbage", "truncated"],
)
def test_probe_classifies_each_behaviour(behaviour, close_after, verdict):
    server = Server(behaviour, close_after=close_after)
    try:
        result = probe_resource_id_zero("127.0.0.1", server.port, timeout=1.0)
    finally:
        server.close()
    assert result.verdict == verdict, result
    assert result.elapsed_ms < 2500
    sent = bytes.fromhex(result.exchange[0]["hex"])
    assert sent[:4] == b"HXFR" and sent[4] == 0x01 and len(sent) == 56
    assert int.from_bytes(sent[12:16], "little") == 0  # resource_id=0
    if verdict == "rejected":
        assert (result.error_code, result.message) == (-2, "Error: -2")
    if verdict == "protocol_error":
        assert result.message  # shows the bytes


def test_probe_unreachable():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    assert probe_resource_id_zero("127.0.0.1", port, timeout=1.0).verdict == "unreachable"


def _reset_server(close_cleanly: bool):
    """Accepts, reads the request, then closes (FIN) or resets (RST, SO_LINGER 0) without replying."""
    sock = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = sock.accept()
        conn.recv(4096)
        if not close_cleanly:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return sock, thread


@pytest.mark.parametrize("close_cleanly", [False, True], ids=["rst", "fin"])
def test_a_connection_closed_without_reply_is_reset_not_ignored(close_cleanly: bool) -> None:
    sock, thread = _reset_server(close_cleanly)
    try:
        result = probe_resource_id_zero("127.0.0.1", sock.getsockname()[1], timeout=2.0)
    finally:
        sock.close()
        thread.join(timeout=5)
    assert result.verdict == "reset", result
    assert "crash" in result.explanation and result.verdict in VERDICTS
    assert result.elapsed_ms < 2000  # not a timeout
    assert {"rejected", "ignored", "accepted", "unreachable", "protocol_error"} < set(VERDICTS)


@pytest.mark.parametrize(("host", "port", "timeout", "words"), [
    ("127.0.0.1", 15937, float("nan"), "timeout nan"),
    ("127.0.0.1", 15937, float("inf"), "timeout inf"),
    ("127.0.0.1", 15937, -1, "timeout -1"),
    ("127.0.0.1", 15937, 0, "timeout 0"),
    ("127.0.0.1", 70000, 1.0, "port 70000"),
    ("127.0.0.1", 0, 1.0, "port 0"),
    ("127.0.0.1", True, 1.0, "port True"),
    ("x" * 300, 15937, 1.0, "300 chars"),
    ("a" * 64 + ".example", 15937, 1.0, "labels of at most 63"),
    ("", 15937, 1.0, "host ''"),
    (None, 15937, 1.0, "host None"),
])
def test_probe_refuses_bad_input_naming_it(host, port, timeout, words) -> None:
    with pytest.raises(ProbeInputError) as info:
        probe_resource_id_zero(host, port, timeout=timeout)
    assert words in info.value.message and info.value.phase == "probe"


def test_probe_evidence_is_capped() -> None:
    body = hxfr.ErrorResponse(error_code=-2, message="Error: -2").encode()
    server = Server(lambda req: b"\x01" * 20_000 + body, close_after=True)  # garbage first: protocol_error
    try:
        result = probe_resource_id_zero("127.0.0.1", server.port, timeout=1.0)
    finally:
        server.close()
    assert result.verdict == "protocol_error"
    received = [item for item in result.exchange if item["dir"] == "received"]
    assert len(received) == 1 and len(received[0]["hex"]) <= 2 * MAX_KEPT
    assert result.received_bytes >= len(received[0]["hex"]) // 2
    assert result.as_dict()["omitted_bytes"] == result.received_bytes - len(received[0]["hex"]) // 2
