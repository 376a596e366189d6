"""HXWSREC1: the public recording format for WebSocket stream captures.

Layout: the 8-byte magic ``HXWSREC1``, then records of ``u64 BE arrival ns (monotonic)``, ``u8 kind``
(0 binary, 1 text), ``u32 BE length`` and that many bytes (text as UTF-8). The reader reads the file
in large chunks and cuts records out of them (memory: one chunk plus one record); a bad magic or a
truncated tail raises ``RecordingError`` naming the byte offset.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from .errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAGIC", "RECORD_HEADER", "KIND_BINARY", "KIND_TEXT", "DEFAULT_MAX_RECORD", "CHUNK_SIZE",
    "Record", "RecordingError", "RecordingWriter", "RecordingReader", "encode_record",
]

MAGIC = b"HXWSREC1"
RECORD_HEADER = struct.Struct(">QBI")  # arrival ns, kind, length: 13 B
KIND_BINARY = 0
KIND_TEXT = 1
DEFAULT_MAX_RECORD = 256 * 1024 * 1024
#: Read size of ``RecordingReader``.
CHUNK_SIZE = 1 << 20


class RecordingError(RemoteProtocolError):
    """A recording file is malformed; ``offset`` is the byte offset of the problem."""

    def __init__(self, message: str, *, offset: int, data: bytes | None = None, hint: str | None = None) -> None:
        super().__init__(f"{message} at byte offset {offset}", data=data, hint=hint)
        self.offset = offset


@dataclass(frozen=True, slots=True)
class Record:
    """One captured WebSocket message."""

    t_ns: int
    kind: int
    data: bytes

    def __post_init__(self) -> None:
        _validate(self.t_ns, self.kind)
        if isinstance(self.data, (bytearray, memoryview)):
            object.__setattr__(self, "data", bytes(self.data))
        elif not isinstance(self.data, bytes):
            raise LocalProtocolError(f"Record.data must be bytes, got {type(self.data).__name__}")

    def __repr__(self) -> str:
        return f"Record(t_ns={self.t_ns}, kind={self.kind}, data=<{len(self.data)} bytes>)"

    @property
    def text(self) -> str:
        """The payload of a text record, decoded."""
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RemoteProtocolError("text record is not valid UTF-8", data=self.data[:64]) from exc

    def encode(self) -> bytes:
        return RECORD_HEADER.pack(self.t_ns, self.kind, len(self.data)) + self.data


def _validate(t_ns: object, kind: object) -> None:
    if isinstance(t_ns, bool) or not isinstance(t_ns, int) or not 0 <= t_ns < 1 << 64:
        raise LocalProtocolError(f"record time {t_ns!r} is not a u64 nanosecond count")
    if kind not in (KIND_BINARY, KIND_TEXT) or isinstance(kind, bool):
        raise LocalProtocolError(f"record kind {kind!r} is not 0 (binary) or 1 (text)")


def encode_record(t_ns: int, kind: int, data: bytes | str) -> bytes:
    """The bytes of one record (header + payload)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return Record(t_ns, kind, data).encode()


class RecordingWriter:
    """Write a recording to a binary file object; the magic is written at once."""

    def __init__(self, fileobj: BinaryIO) -> None:
        self._file = fileobj
        self._file.write(MAGIC)
        self.offset = len(MAGIC)
        self.count = 0
        self.closed = False

    def write(self, t_ns: int, kind: int, data: bytes | str) -> None:
        if self.closed:
            raise LocalProtocolError("write() on a closed RecordingWriter")
        if isinstance(data, str):
            if kind != KIND_TEXT:
                raise LocalProtocolError("a str payload needs kind KIND_TEXT")
            data = data.encode("utf-8")
        elif not isinstance(data, (bytes, bytearray, memoryview)):
            raise LocalProtocolError(f"record data must be bytes or str, got {type(data).__name__}")
        _validate(t_ns, kind)
        if len(data) > 0xFFFFFFFF:
            raise LocalProtocolError(f"record of {len(data)} bytes does not fit a u32 length")
        self._file.write(RECORD_HEADER.pack(t_ns, kind, len(data)))
        self._file.write(data)
        self.offset += RECORD_HEADER.size + len(data)
        self.count += 1

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        """Flush and close the file object (idempotent)."""
        if not self.closed:
            self.closed = True
            self._file.flush()
            self._file.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordingReader:
    """Iterate the records of a recording file object (O(1 record) memory).

    The file is read in ``chunk_size`` pieces (1 MiB by default) and records are cut out of that
    buffer, so a record costs no system call. The reader consumes the file: its position runs ahead
    of ``offset`` (the byte offset just after the last record returned). ``iter_raw()`` is the fast
    path: ``(t_ns, kind, data)`` tuples instead of ``Record`` objects; iterating the reader itself
    yields ``Record``s. Either way, a bad kind, an oversized length or a truncated tail raises
    ``RecordingError`` naming the record's byte offset.
    """

    def __init__(self, fileobj: BinaryIO, *, max_record: int = DEFAULT_MAX_RECORD, chunk_size: int = CHUNK_SIZE) -> None:
        self._file = fileobj
        self.max_record = max_record
        self.chunk_size = max(RECORD_HEADER.size, chunk_size)
        magic = self._read(len(MAGIC))
        if magic != MAGIC:
            raise RecordingError(
                f"bad magic {magic!r} (want {MAGIC!r}): not an HXWSREC1 recording", offset=0, data=magic
            )
        self.offset = len(MAGIC)

    def _read(self, size: int) -> bytes:
        chunks = []
        want = size
        while want > 0:
            chunk = self._file.read(want)
            if not chunk:
                break
            chunks.append(chunk)
            want -= len(chunk)
        return b"".join(chunks)

    def iter_raw(self) -> Iterator[tuple[int, int, bytes]]:
        """Yield ``(t_ns, kind, data)`` for every record, validated as ``Record`` would be."""
        read = self._file.read
        chunk_size = self.chunk_size
        unpack = RECORD_HEADER.unpack_from
        hsize = RECORD_HEADER.size
        max_record = self.max_record
        buf = b""
        pos = n = 0
        base = self.offset  # file offset of buf[0]
        while True:
            if n - pos < hsize:
                more = read(chunk_size)
                if not more:
                    if pos < n:
                        header = buf[pos:]
                        raise RecordingError(
                            f"truncated record header ({len(header)} of {hsize} bytes)", offset=base + pos, data=header
                        )
                    return
                buf = buf[pos:] + more
                base += pos
                pos = 0
                n = len(buf)
                continue
            t_ns, kind, length = unpack(buf, pos)
            if kind > 1:
                raise RecordingError(
                    f"record kind {kind} is not 0 or 1", offset=base + pos, data=buf[pos : pos + hsize]
                )
            if length > max_record:
                raise RecordingError(
                    f"record length {length} exceeds the cap of {max_record}", offset=base + pos, data=buf[pos : pos + hsize]
                )
            start = pos + hsize
            end = start + length
            if end <= n:
                data = buf[start:end]
                pos = end
            else:  # the payload runs past the buffer: read the rest of it directly
                rest = self._read(end - n)
                if n + len(rest) < end:
                    raise RecordingError(
                        f"truncated record: {n - start + len(rest)} of {length} payload bytes",
                        offset=base + pos,
                        data=buf[pos:start],
                    )
                data = buf[start:] + rest
                base += end
                buf = b""
                pos = n = 0
            self.offset = base + pos
            yield t_ns, kind, data

    def __iter__(self) -> Iterator[Record]:
        for t_ns, kind, data in self.iter_raw():
            yield Record(t_ns, kind, data)
