"""What the stream command counts and prints: spectask.go's videoStreamStats and message handling (frames
are parsed as the Go CLI parses them: offsets, no validation), the Live/Final Statistics block with
formatBytes/formatBits, the SPS probe, the cursor's ASCII art, and gorilla/websocket's close texts.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import IO, Callable

from ...gofmt import NS_PER_S, clock_millis, go_duration, go_round

STATS_RULE = "─" * 47
MSG_VIDEO, MSG_AUDIO, MSG_BATCH, MSG_STREAM_INIT, MSG_PONG, MSG_CURSOR = 0x01, 0x02, 0x03, 0x30, 0x41, 0x50
_CLOSE_NAMES = {
    1000: "normal", 1001: "going away", 1002: "protocol error", 1003: "unsupported data", 1005: "no status",
    1006: "abnormal closure", 1007: "invalid payload data", 1008: "policy violation", 1009: "message too big",
    1010: "mandatory extension missing", 1011: "internal server error", 1015: "TLS handshake error",
}


def _go_units(b: int, unit: int, letters: str, small: str, suffix: str) -> str:
    """spectask.go's formatBytes/formatBits loop: divide by ``unit`` while the quotient is ≥ ``unit``."""
    if b < unit:
        return f"{b} {small}"
    div, exp = unit, 0
    n = b // unit
    while n >= unit:
        div *= unit
        exp += 1
        n //= unit
    return f"{b / div:.1f} {letters[min(exp, len(letters) - 1)]}{suffix}"


def format_bytes(b: int) -> str:
    """spectask.go formatBytes: base 1024, "%d B" or "%.1f %cB"."""
    return _go_units(b, 1024, "KMGTPE", "B", "B")


def format_bits(b: int) -> str:
    """spectask.go formatBits: base 1000, "%d bps" or "%.1f %cbps"."""
    return _go_units(b, 1000, "KMG", "bps", "bps")


_CODECS = {0x01: "H.264", 0x02: "H.264 High 4:4:4", 0x10: "HEVC", 0x11: "HEVC Main10", 0x20: "AV1", 0x21: "AV1 10bit"}
_PROFILES = {66: "Baseline", 77: "Main", 88: "Extended", 100: "High", 110: "High 10", 122: "High 4:2:2",
             244: "High 4:4:4 Predictive"}


def codec_name(codec: int) -> str:
    return _CODECS.get(codec, f"Unknown(0x{codec:02x})")


def profile_name(profile_idc: int) -> str:
    return _PROFILES.get(profile_idc, f"Unknown({profile_idc})")


@dataclass(frozen=True, slots=True)
class SpsInfo:
    profile_idc: int
    constraint_byte: int
    level_idc: int

    def flag(self, n: int) -> int:
        """constraint_set<n>_flag (n = 0..5)."""
        return (self.constraint_byte >> (7 - n)) & 1


def parse_sps(data: bytes) -> SpsInfo | None:
    """spectask.go parseSPSFromH264: the first SPS after a 4- or 3-byte start code."""
    for i in range(len(data) - 4):
        if data[i] == 0 and data[i + 1] == 0 and data[i + 2] == 0 and data[i + 3] == 1:
            if i + 4 < len(data) and data[i + 4] & 0x1F == 7 and i + 7 < len(data):
                return SpsInfo(data[i + 5], data[i + 6], data[i + 7])
        if data[i] == 0 and data[i + 1] == 0 and data[i + 2] == 1:
            if i + 3 < len(data) and data[i + 3] & 0x1F == 7 and i + 6 < len(data):
                return SpsInfo(data[i + 4], data[i + 5], data[i + 6])
    return None


def close_error_text(code: int, reason: str = "") -> str:
    """gorilla/websocket CloseError.Error()."""
    text = f"websocket: close {code}"
    if code in _CLOSE_NAMES:
        text += f" ({_CLOSE_NAMES[code]})"
    if reason:
        text += f": {reason}"
    return text


def render_cursor_ascii(data: bytes, width: int, height: int, stride: int, fmt: int, max_size: int) -> tuple[str, str]:
    """spectask.go renderCursorASCII."""
    if width == 0 or height == 0 or len(data) < 4:
        return "", ""
    chars = " ░▒▓█"

    def rgba(p: bytes) -> tuple[int, int, int, int]:
        if fmt == 0x34325241:  # ARGB8888: A,R,G,B bytes
            return p[1], p[2], p[3], p[0]
        if fmt == 0x34324142:  # BGRA8888
            return p[2], p[1], p[0], p[3]
        if fmt == 0x34324241:  # ABGR8888
            return p[3], p[2], p[1], p[0]
        return p[0], p[1], p[2], p[3]  # RGBA8888 and default

    step_x = max(1, (width + max_size - 1) // max_size)
    step_y = max(1, (height + max_size - 1) // max_size)
    out_w = (width + step_x - 1) // step_x
    out_h = (height + step_y - 1) // step_y
    samples = ["Sample pixels (first 8): "]
    for i in range(8):
        if i * 4 + 3 >= len(data):
            break
        r, g, b, a = rgba(data[i * 4:i * 4 + 4])
        samples.append(("" if i == 0 else " ") + f"({r},{g},{b},{a})")
    art: list[str] = []
    for y in range(out_h):
        src_y = y * step_y
        if src_y >= height:
            break
        for x in range(out_w):
            src_x = x * step_x
            if src_x >= width:
                break
            idx = src_y * stride + src_x * 4
            if idx + 3 >= len(data) or idx < 0:
                art.append(" ")
                continue
            r, g, b, a = rgba(data[idx:idx + 4])
            if a == 0:
                art.append(" ")
                continue
            combined = (a + (r + g + b) // 3) // 2
            art.append(chars[min(len(chars) - 1, max(0, combined * (len(chars) - 1) // 255))])
        art.append("\n")
    return "".join(art), "".join(samples)


@dataclass
class StreamStats:
    """videoStreamStats, and the message handling of the stream command's reader goroutine."""

    start_ns: int
    total_messages: int = 0
    total_bytes: int = 0
    video_frames: int = 0
    video_bytes: int = 0
    audio_frames: int = 0
    audio_bytes: int = 0
    keyframes: int = 0
    batch_count: int = 0
    min_frame_size: int = 0
    max_frame_size: int = 0
    codec: int = 0
    width: int = 0
    height: int = 0
    fps: int = 0
    current_second: int = 0
    current_second_fps: int = 0
    last_second_fps: int = 0
    cursor_messages: int = 0
    last_cursor_width: int = 0
    last_cursor_height: int = 0
    last_cursor_hotspot_x: int = 0
    last_cursor_hotspot_y: int = 0

    def on_message(self, binary: bool, data: bytes, now_ns: int, *, verbose: bool = False,
                   emit: Callable[[str], None] = lambda s: None, out_file: IO[bytes] | None = None,
                   clock: Callable[[], str] = clock_millis) -> None:
        self.total_messages += 1
        self.total_bytes += len(data)
        if not binary:
            if verbose:
                emit(f"[{clock()}] Control: {data[:100].decode('utf-8', 'replace')}\n")
            return
        if not data:
            return
        kind = data[0]
        if kind == MSG_VIDEO:
            self.video_frames += 1
            self.video_bytes += len(data)
            current_sec = (now_ns - self.start_ns) // NS_PER_S
            if current_sec != self.current_second:
                self.last_second_fps = self.current_second_fps
                self.current_second = current_sec
                self.current_second_fps = 1
            else:
                self.current_second_fps += 1
            if len(data) >= 15:
                codec, flags = data[1], data[2]
                keyframe = bool(flags & 0x01)
                if self.codec == 0:
                    self.codec = codec
                if keyframe:
                    self.keyframes += 1
                    sps = parse_sps(data[15:])
                    if sps is not None:
                        if self.keyframes == 1 or verbose:
                            flags_text = "".join(str(sps.flag(n)) for n in range(6))
                            emit(f"🔑 SPS: profile_idc={sps.profile_idc} ({profile_name(sps.profile_idc)}) "
                                 f"constraint_set=[{flags_text}] level={sps.level_idc // 10}.{sps.level_idc % 10} "
                                 f"(raw=0x{sps.constraint_byte:02x})\n")
                            if sps.flag(3):
                                emit("   ✅ constraint_set3_flag=1 (zero-latency decode enabled)\n")
                            else:
                                emit("   ⚠️  constraint_set3_flag=0 (decoder may buffer frames)\n")
                    elif self.keyframes == 1:
                        emit("⚠️  First keyframe: no SPS NAL found\n")
                size = len(data) - 15
                if size < self.min_frame_size or self.min_frame_size == 0:
                    self.min_frame_size = size
                if size > self.max_frame_size:
                    self.max_frame_size = size
                if verbose:
                    emit(f"[{clock()}] Video: {codec_name(codec)} {size} bytes ({'KEY' if keyframe else 'delta'})\n")
                if out_file is not None:
                    out_file.write(data[15:])
        elif kind == MSG_AUDIO:
            self.audio_frames += 1
            self.audio_bytes += len(data)
        elif kind == MSG_BATCH:
            if len(data) >= 3:
                count = data[1] << 8 | data[2]
                self.video_frames += count
                self.batch_count += 1
                if verbose:
                    emit(f"[{clock()}] Batch: {count} frames\n")
        elif kind == MSG_STREAM_INIT:
            if len(data) >= 13:
                self.codec = data[1]
                self.width = data[2] << 8 | data[3]
                self.height = data[4] << 8 | data[5]
                self.fps = data[6]
                emit(f"📺 StreamInit: {self.width}x{self.height}@{self.fps}fps ({codec_name(self.codec)})\n")
        elif kind == MSG_CURSOR:
            self._on_cursor(data, verbose, emit, clock)
        # 0x41 Pong: nothing; 0x31 StreamError and everything else: no case in the CLI.

    def _on_cursor(self, data: bytes, verbose: bool, emit: Callable[[str], None], clock: Callable[[], str]) -> None:
        self.cursor_messages += 1
        if len(data) < 25:
            return
        hot_x, hot_y, bitmap_size = struct.unpack_from("<III", data, 13)  # the CLI composes them unsigned
        if bitmap_size >= 16 and len(data) >= 41:
            fmt, width, height, stride = struct.unpack_from("<IIII", data, 25)
            self.last_cursor_width, self.last_cursor_height = width, height
            self.last_cursor_hotspot_x, self.last_cursor_hotspot_y = hot_x, hot_y
            end = min(25 + bitmap_size, len(data))
            pixels = data[41:end] if end >= 41 else b""
            if verbose or self.cursor_messages == 1:
                emit(f"\n🖱️  [{clock()}] Cursor #{self.cursor_messages}: {width}x{height} hotspot=({hot_x},{hot_y}) "
                     f"stride={stride} format=0x{fmt:08x} ({len(pixels)} bytes)\n")
                art, samples = render_cursor_ascii(pixels, width, height, stride, fmt, 24)
                if art:
                    emit(f"    {samples}\n")
                    for line in art.split("\n"):
                        if line:
                            emit(f"    |{line}|\n")
        elif verbose:
            emit(f"🖱️  [{clock()}] Cursor: no bitmap (hotspot=({hot_x},{hot_y}))\n")

    def render(self, elapsed_ns: int, *, final: bool) -> str:
        """printStats: the Live/Final Statistics block."""
        header = "📊 Final Statistics" if final else "📈 Live Statistics"
        lines = [f"\n{header} (elapsed: {go_duration(go_round(elapsed_ns, NS_PER_S))})\n", STATS_RULE + "\n"]
        if self.width > 0:
            lines.append(f"Resolution:         {self.width}x{self.height}\n")
        if self.codec > 0:
            lines.append(f"Codec:              {codec_name(self.codec)}\n")
        frames = f"Video frames:       {self.video_frames}"
        lines.append(frames + (f" ({self.keyframes} keyframes)\n" if self.keyframes > 0 else "\n"))
        lines.append(f"Audio frames:       {self.audio_frames}\n")
        lines.append(f"Total data:         {format_bytes(self.total_bytes)}\n")
        seconds = elapsed_ns / NS_PER_S
        if seconds > 0:
            instant = self.last_second_fps
            if instant == 0 and self.current_second_fps > 0:
                instant = self.current_second_fps
            mark = " ⚠️" if 0 < instant < 50 else " ✅" if instant >= 55 else ""
            lines.append(f"Instant FPS:        {instant} fps{mark}\n")
            lines.append(f"Average FPS:        {self.video_frames / seconds:.1f} fps\n")
            lines.append(f"Video bitrate:      {format_bits(int(self.video_bytes * 8 / seconds))}/s\n")
        if self.video_frames > 0:
            lines.append(f"Avg frame size:     {format_bytes(self.video_bytes // self.video_frames)}\n")
            lines.append(f"Frame size range:   {format_bytes(self.min_frame_size)} - {format_bytes(self.max_frame_size)}\n")
        if self.batch_count > 0:
            lines.append(f"Batch messages:     {self.batch_count}\n")
        if self.cursor_messages > 0:
            cursor = f"Cursor updates:     {self.cursor_messages}"
            if self.last_cursor_width > 0:
                cursor += (f" (last: {self.last_cursor_width}x{self.last_cursor_height} "
                           f"hotspot=({self.last_cursor_hotspot_x},{self.last_cursor_hotspot_y}))")
            lines.append(cursor + "\n")
        lines.append(STATS_RULE + "\n")
        return "".join(lines)
