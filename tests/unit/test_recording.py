"""harness.protocols.recording: the HXWSREC1 format, byte-exact, streaming, and fuzzed."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.protocols import recording as r
from harness.protocols.errors import LocalProtocolError, RemoteProtocolError

VIDEO = bytes.fromhex("01 01 00 00 00 00 00 00 00 00 00 0f 00 08 70")  # a 15-byte VideoFrame header
SAMPLE = (
    b"HXWSREC1"
    + bytes.fromhex("00 00 00 00 00 00 00 01  01  00 00 00 0f") + b'{"type":"init"}'
    + bytes.fromhex("00 00 00 00 3b 9a ca 00  00  00 00 00 0f") + VIDEO
    + bytes.fromhex("ff ff ff ff ff ff ff ff  00  00 00 00 00")
)


class Unclosable(io.BytesIO):
    def close(self) -> None:  # keep the value readable after RecordingWriter.close()
        self.flush()


class Trickle(io.RawIOBase):
    """A raw stream that returns one byte per read, like a slow pipe."""

    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self._data[self._pos : self._pos + min(size, 1)]
        self._pos += len(chunk)
        return chunk


def test_writer_is_byte_exact() -> None:
    out = Unclosable()
    with r.RecordingWriter(out) as writer:
        writer.write(1, r.KIND_TEXT, '{"type":"init"}')
        writer.write(1_000_000_000, r.KIND_BINARY, VIDEO)
        writer.write(2**64 - 1, r.KIND_BINARY, b"")
        assert writer.count == 3 and writer.offset == len(SAMPLE)
    assert out.getvalue() == SAMPLE
    assert writer.closed
    with pytest.raises(LocalProtocolError):
        writer.write(2, r.KIND_BINARY, b"")
    assert r.encode_record(1, r.KIND_TEXT, '{"type":"init"}') == SAMPLE[8:36]


def test_reader_streams_records() -> None:
    reader = r.RecordingReader(io.BytesIO(SAMPLE))
    records = list(reader)
    assert records == [
        r.Record(1, r.KIND_TEXT, b'{"type":"init"}'),
        r.Record(1_000_000_000, r.KIND_BINARY, VIDEO),
        r.Record(2**64 - 1, r.KIND_BINARY, b""),
    ]
    assert records[0].text == '{"type":"init"}' and reader.offset == len(SAMPLE)
    assert list(r.RecordingReader(Trickle(SAMPLE))) == records
    assert "data=<15 bytes>" in repr(records[1])


def test_magic_only_is_an_empty_recording() -> None:
    assert list(r.RecordingReader(io.BytesIO(b"HXWSREC1"))) == []


@pytest.mark.parametrize("data", [b"", b"HXWSREC", b"HXWSREC2", b"\x00" * 30])
def test_bad_magic_names_offset_zero(data: bytes) -> None:
    with pytest.raises(r.RecordingError, match="at byte offset 0") as info:
        r.RecordingReader(io.BytesIO(data))
    assert info.value.offset == 0 and isinstance(info.value, RemoteProtocolError)
    assert info.value.data == data[:8]


@pytest.mark.parametrize(
    ("cut", "offset", "what"),
    [(36 + 5, 36, "truncated record header"), (36 + 13 + 4, 36, "truncated record: 4 of 15"), (len(SAMPLE) - 1, 64, "header")],
)
def test_truncated_tail_names_the_record_offset(cut: int, offset: int, what: str) -> None:
    reader = r.RecordingReader(io.BytesIO(SAMPLE[:cut]))
    got = []
    with pytest.raises(r.RecordingError, match=what) as info:
        for record in reader:
            got.append(record)
    assert info.value.offset == offset and f"byte offset {offset}" in str(info.value)
    assert len(got) == (1 if offset == 36 else 2)


def test_bad_kind_and_length_cap() -> None:
    bad_kind = b"HXWSREC1" + bytes.fromhex("00 00 00 00 00 00 00 00  02  00 00 00 00")
    with pytest.raises(r.RecordingError, match="kind 2"):
        list(r.RecordingReader(io.BytesIO(bad_kind)))
    huge = b"HXWSREC1" + bytes.fromhex("00 00 00 00 00 00 00 00  00  ff ff ff ff")
    with pytest.raises(r.RecordingError, match="exceeds the cap"):
        list(r.RecordingReader(io.BytesIO(huge), max_record=1024))


def test_records_validate() -> None:
    for bad in (lambda: r.Record(-1, 0, b""), lambda: r.Record(0, 2, b""), lambda: r.Record(0, True, b""),
                lambda: r.Record(0, 0, "text")):
        with pytest.raises(LocalProtocolError):
            bad()
    writer = r.RecordingWriter(Unclosable())
    with pytest.raises(LocalProtocolError):
        writer.write(0, r.KIND_BINARY, "str needs KIND_TEXT")
    with pytest.raises(RemoteProtocolError):
        _ = r.Record(0, r.KIND_TEXT, b"\xff").text


def test_real_file_roundtrip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "capture.hxwsrec"
    writer = r.RecordingWriter(path.open("wb"))
    for index in range(100):
        writer.write(index * 25_000_000, index % 2, bytes([index]) * index)
    writer.close()
    writer.close()  # idempotent
    with path.open("rb") as handle:
        records = list(r.RecordingReader(handle))
    assert [(rec.t_ns, rec.kind, len(rec.data)) for rec in records] == [(i * 25_000_000, i % 2, i) for i in range(100)]


records = st.lists(st.tuples(st.integers(0, 2**64 - 1), st.sampled_from([0, 1]), st.binary(max_size=30)), max_size=8)


@settings(max_examples=500, deadline=None)
@given(records)
def test_roundtrip(items: list) -> None:
    out = Unclosable()
    writer = r.RecordingWriter(out)
    for item in items:
        writer.write(*item)
    assert [(x.t_ns, x.kind, x.data) for x in r.RecordingReader(io.BytesIO(out.getvalue()))] == items


@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.binary(max_size=60), st.binary(max_size=60).map(lambda b: b"HXWSREC1" + b)),
       st.integers(0, 64))
def test_fuzz_reader(data: bytes, cap: int) -> None:
    try:
        for record in r.RecordingReader(io.BytesIO(data), max_record=cap):
            assert record.kind in (0, 1) and len(record.data) <= cap
    except r.RecordingError as exc:
        assert 0 <= exc.offset <= len(data)
