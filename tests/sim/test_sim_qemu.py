"""The sim's helix-frame-export: byte-exact replies and log lines per QEMU behaviour."""

from __future__ import annotations

import asyncio
import struct

import pytest

from helix_sim.errors import SimConfigError
from harness.protocols import hxfr
from helix_sim.config import SimConfig
from helix_sim.host.qemu import SAMPLE_KEYFRAME, QemuError, QemuFrameExport

MAGIC = 0x52465848


def frame_request(resource_id: int, *, width=1920, height=1080, pts=1000, pixels=b"") -> bytes:
    """A FRAME_REQUEST built by hand from the reference layout (not through the codec)."""
    body = struct.pack("<IIIIIqqB7x", resource_id, width, height, 0x3231564E, width, pts, 16_666_666, 1)
    flags = 0x01 if pixels else 0
    return struct.pack("<IBBHI", MAGIC, 0x01, flags, 1, len(body) + len(pixels)) + body + pixels


def log_lines(path) -> list[str]:
    return path.read_text().splitlines()


@pytest.fixture
async def make_qemu(tmp_path):
    made: list[QemuFrameExport] = []

    async def make(behaviour="feb5-reject", **cfg) -> QemuFrameExport:
        config = SimConfig(root=tmp_path, qemu_behaviour=behaviour, **cfg)
        qemu = QemuFrameExport(config, tmp_path / "host" / "helix-debug.log")
        await qemu.start()
        made.append(qemu)
        return qemu

    yield make
    for q in made:  # tests stop their own; this only guards against leaks on failure
        await q.stop()


async def _connect(qemu):
    return await asyncio.open_connection("127.0.0.1", qemu.port)


async def test_startup_lines(make_qemu, tmp_path):
    qemu = await make_qemu("v10-ignore")
    try:
        assert log_lines(qemu.log_path) == [
            "========================================",
            "[HELIX] VERSION: 2026-02-15-v10-ipa-granule-test",
            "[HELIX] BUILD: Multi-client, per-scanout auto-encode, assert(isv) restored",
            "========================================",
            f"[HELIX] Initializing frame export on vsock port {qemu.port}",
            f"[HELIX] Frame export ready: TCP 127.0.0.1:{qemu.port} (guest: 10.0.2.2:{qemu.port})",
            "[HELIX] Waiting for client connection...",
        ]
    finally:
        await qemu.stop()


async def test_stale_qemu_logs_other_version(make_qemu):
    qemu = await make_qemu("feb5-reject", faults=frozenset({"stale_qemu"}))
    try:
        assert "[HELIX] VERSION: 2026-02-04-stale-build" in log_lines(qemu.log_path)
    finally:
        await qemu.stop()


async def test_feb5_rejects_resource_zero_byte_exact(make_qemu):
    qemu = await make_qemu("feb5-reject")
    reader, writer = await _connect(qemu)
    try:
        writer.write(frame_request(0))
        reply = await asyncio.wait_for(reader.readexactly(272), 5)
        expected = (
            struct.pack("<IBBHI", MAGIC, 0xFF, 0, 1, 260)
            + struct.pack("<i", -2)
            + b"Error: -2".ljust(256, b"\x00")
        )
        assert reply == expected
        assert reply[:4] == b"HXFR"
        lines = log_lines(qemu.log_path)
        assert "[HELIX] Client connected (fd=23)" in lines
        assert "[HELIX] Added client 0 (fd=23)" in lines
        assert lines[-1] == (
            "[HELIX] resource_id=0 not supported - guest must provide explicit resource ID from DmaBuf"
        )
        # a non-zero id is encoded
        writer.write(frame_request(42, pts=5))
        header = await asyncio.wait_for(reader.readexactly(12), 5)
        magic, mtype, flags, session, size = struct.unpack("<IBBHI", header)
        body = await reader.readexactly(size)
        assert (magic, mtype, session) == (MAGIC, 0x02, 1)
        pts, dts, key, count = struct.unpack_from("<qqB3xI", body)
        assert (pts, dts, key, count) == (5, 5, 1, 1)
        assert body[28:] == SAMPLE_KEYFRAME and size == 24 + 4 + len(SAMPLE_KEYFRAME)
        assert qemu.errors_sent == 1 and qemu.responses_sent == 1
    finally:
        writer.close()
        await qemu.stop()


async def test_v7_falls_back_and_answers(make_qemu):
    qemu = await make_qemu("v7-fallback")
    reader, writer = await _connect(qemu)
    try:
        writer.write(frame_request(0, width=1280, height=720, pts=777))
        conn = hxfr.HxfrConnection(hxfr.Role.CLIENT)
        event = hxfr.NEED_DATA
        while event is hxfr.NEED_DATA:
            conn.receive_data(await asyncio.wait_for(reader.read(4096), 5))
            event = conn.next_event()
        assert isinstance(event, hxfr.FrameResponse)
        assert event.pts == 777 and event.is_keyframe == 1 and event.data == SAMPLE_KEYFRAME
        lines = log_lines(qemu.log_path)
        assert "[HELIX] VERSION: 2026-02-08-v7-gpu-blit" in lines
        assert "[HELIX] Frame request: resource_id=0, 1280x720, pts=777, pixel_data=NO (0 bytes)" in lines
        assert "[HELIX] No pixel data, falling back to DisplaySurface" in lines
        # with pixel data
        writer.write(frame_request(0, width=16, height=16, pts=778, pixels=b"\x10" * 384))
        await asyncio.wait_for(reader.readexactly(12 + 24 + 4 + len(SAMPLE_KEYFRAME)), 5)
        lines = log_lines(qemu.log_path)
        assert "[HELIX] Frame request: resource_id=0, 16x16, pts=778, pixel_data=YES (384 bytes)" in lines
        assert "[HELIX] Using pixel data from guest (384 bytes)" in lines
    finally:
        writer.close()
        await qemu.stop()


async def test_v10_ignores_and_idle_closes(make_qemu):
    qemu = await make_qemu("v10-ignore", qemu_idle_timeout_s=0.5)
    reader, writer = await _connect(qemu)
    try:
        writer.write(frame_request(0))
        await writer.drain()
        # no reply at all: the next thing the client sees is QEMU closing the socket (idle timeout)
        data = await asyncio.wait_for(reader.read(100), 5)
        assert data == b""
        lines = log_lines(qemu.log_path)
        assert lines[-2:] == ["[HELIX] Client 0 disconnected", "[HELIX] Removing client 0 (fd=23, scanout=0)"]
        assert not any("resource_id" in line for line in lines)
        assert qemu.frame_requests == 1 and qemu.errors_sent == 0 and qemu.responses_sent == 0
    finally:
        writer.close()
        await qemu.stop()


async def test_faults_pick_behaviour(make_qemu):
    qemu = await make_qemu("feb5-reject", faults=frozenset({"qemu_ignores_zero"}))
    assert qemu.behaviour == "v10-ignore"
    await qemu.stop()
    qemu = await make_qemu("feb5-reject", faults=frozenset({"qemu_accepts_zero"}))
    assert qemu.behaviour == "v7-fallback"
    await qemu.stop()


async def test_ping_subscribe_scanout_config(make_qemu):
    qemu = await make_qemu("v10-ignore")
    reader, writer = await _connect(qemu)
    try:
        writer.write(struct.pack("<IBBHI", MAGIC, 0x10, 0, 7, 0))
        assert await asyncio.wait_for(reader.readexactly(12), 5) == struct.pack("<IBBHI", MAGIC, 0x11, 0, 7, 0)
        writer.write(struct.pack("<IBBHI", MAGIC, 0x20, 0, 1, 16) + struct.pack("<IIII", 2, 1920, 1080, 60))
        resp = await asyncio.wait_for(reader.readexactly(12 + 72), 5)
        assert resp[:12] == struct.pack("<IBBHI", MAGIC, 0x22, 0, 1, 72)
        assert struct.unpack_from("<II", resp, 12) == (2, 1) and resp[20:].rstrip(b"\0") == b"Virtual-3"
        writer.write(struct.pack("<IBBHI", MAGIC, 0x30, 0, 3, 4) + struct.pack("<I", 3))
        resp = await asyncio.wait_for(reader.readexactly(20), 5)
        assert resp == struct.pack("<IBBHI", MAGIC, 0x31, 0, 3, 8) + struct.pack("<II", 3, 1)
        writer.write(hxfr.ConfigRequest(1920, 1080, 8_000_000, 60, 1, 100, 40, 1).encode())
        writer.write(struct.pack("<IBBHI", MAGIC, 0x10, 0, 9, 0))  # a ping after, to sync
        await asyncio.wait_for(reader.readexactly(12), 5)
        lines = log_lines(qemu.log_path)
        sub = [line for line in lines if "subscribing" in line]
        assert len(sub) == 1 and sub[0].startswith("[HELIX] Client 0 subscribing to scanout 3 (fe=0x")
        assert "[HELIX] Client 0 CONFIG_REQ: scanout=3 bitrate=8000000" in lines
        # a subscriber receives published frames
        qemu.publish(3, b"\x00\x00\x00\x01\x65\x88", pts_ns=10, keyframe=True)
        header = await asyncio.wait_for(reader.readexactly(12), 5)
        assert struct.unpack("<IBBHI", header)[1:4] == (0x02, 0, 3)
    finally:
        writer.close()
        await qemu.stop()


async def test_bad_magic_closes(make_qemu):
    qemu = await make_qemu("v10-ignore")
    reader, writer = await _connect(qemu)
    try:
        writer.write(struct.pack("<IBBHI", 0xDEADBEEF, 0x01, 0, 1, 44))
        assert await asyncio.wait_for(reader.read(100), 5) == b""
        lines = log_lines(qemu.log_path)
        assert "[HELIX] Client 0: invalid magic 0xdeadbeef" in lines
        assert lines[-2:] == ["[HELIX] Client 0 disconnected", "[HELIX] Removing client 0 (fd=23, scanout=0)"]
    finally:
        writer.close()
        await qemu.stop()


async def test_frame_ready_rate_limit(make_qemu):
    qemu = await make_qemu("v10-ignore")
    for _ in range(250):
        qemu.frame_ready(1, 77)
    await qemu.stop()
    ready = [line for line in log_lines(qemu.log_path) if line.startswith("[FRAME_READY]")]
    assert [line.split()[1] for line in ready] == ["#1", "#2", "#3", "#4", "#5", "#100", "#200"]
    assert ready[0] == "[FRAME_READY] #1 scanout=1 resource=77 has_subscriber=YES"


async def test_port_in_use_and_root_guard(tmp_path, make_qemu):
    first = await make_qemu("v10-ignore")
    config = SimConfig(root=tmp_path, frame_export_port=first.port)
    second = QemuFrameExport(config, tmp_path / "host" / "helix-debug.log")
    with pytest.raises(QemuError):
        await second.start()
    assert f"Failed to bind TCP socket on port {first.port}: " in first.log_path.read_text()
    await first.stop()
    with pytest.raises(SimConfigError):
        QemuFrameExport(config, tmp_path.parent / "elsewhere.log")


async def test_stop_closes_clients(make_qemu):
    qemu = await make_qemu("v7-fallback")
    reader, writer = await _connect(qemu)
    writer.write(struct.pack("<IBBHI", MAGIC, 0x10, 0, 1, 0))
    await asyncio.wait_for(reader.readexactly(12), 5)
    await qemu.stop()
    assert await asyncio.wait_for(reader.read(10), 5) == b""
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", qemu.port)
