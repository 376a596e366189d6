"""Bad input never crashes a parser: only typed errors (``harness.errors.HarnessError``) come out.

Every parser that reads bytes or text we do not control: WebSocket stream messages and the
stream connection, HXFR in both roles, the ``helix spectask`` output parsers, the log classifier,
``.env.usercreds``, target configs (parsed TOML and raw TOML-ish files), HXWSREC1 recordings and
utmctl output. Each parser's own documented error is asserted (a ``RemoteProtocolError`` for peer
bytes, a ``ConfigError`` for configs, ...), which is stricter than "some HarnessError".

Generation is grammar-aware where random bytes would never get past the first check: real
messages and lines (from the references) mutated by truncation, splicing, byte flips and
absurd numbers. The protocol modules' own tests (test_stream_protocol.py, test_hxfr.py) fuzz
plain random messages and round trips; these extend them.

``make test`` runs a few thousand inputs in all; ``make fuzz`` sets HELIX_E2E_FUZZ_EXAMPLES=100000
(inputs per test).
"""

from __future__ import annotations

import io
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import config as cfg_mod
from harness.analysis import logscan
from harness.errors import ConfigError, HarnessError
from harness.protocols import cli_output, hxfr, stream, utmctl
from harness.protocols import recording as rec
from harness.protocols.errors import RemoteProtocolError
from harness.usercreds import UsercredsError, parse_usercreds

EXAMPLES = int(os.environ.get("HELIX_E2E_FUZZ_EXAMPLES", "0") or 0)


def fuzz(default: int):
    """Hypothesis settings: ``default`` examples in ``make test``, HELIX_E2E_FUZZ_EXAMPLES in ``make fuzz``."""
    return settings(
        max_examples=EXAMPLES or default,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# ---------------------------------------------------------------- mutation helpers

HUGE_NUMBERS = st.sampled_from(["0", "00", "-1", "4294967296", "18446744073709551616", "9" * 40, "9" * 4400,
                                "1e999", "nan", "-0", "٣", "１２"])


@st.composite
def mutated(draw, base: bytes | str):
    """``base`` truncated, extended, spliced, or with bytes flipped/inserted/removed."""
    is_text = isinstance(base, str)
    data = bytearray(base.encode("utf-8") if is_text else base)
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["truncate", "extend", "flip", "insert", "delete", "dup"]))
        if op == "truncate":
            data = data[: draw(st.integers(0, len(data)))]
        elif op == "extend":
            data += draw(st.binary(max_size=24))
        elif data and op == "flip":
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif data and op == "delete":
            i = draw(st.integers(0, len(data) - 1))
            del data[i : i + draw(st.integers(1, 8))]
        elif data and op == "dup":
            i = draw(st.integers(0, len(data) - 1))
            data[i:i] = data[i : i + draw(st.integers(1, 16))]
    out = bytes(data)
    return out.decode("utf-8", "replace") if is_text else out


@st.composite
def numbers_swapped(draw, base: str):
    """Replace some digit runs of a real line with absurd numbers (huge, negative, non-ASCII digits)."""
    import re

    runs = list(re.finditer(r"\d+", base))
    if not runs:
        return base
    out, pos = [], 0
    for m in runs:
        out.append(base[pos : m.start()])
        out.append(draw(HUGE_NUMBERS) if draw(st.booleans()) else m.group())
        pos = m.end()
    out.append(base[pos:])
    return "".join(out)


def lines_of(samples: list[str], *, max_lines: int = 8):
    line = st.one_of(st.sampled_from(samples), st.sampled_from(samples).flatmap(numbers_swapped),
                     st.sampled_from(samples).flatmap(mutated), st.text(max_size=60))
    return st.lists(line, max_size=max_lines).map("\n".join)


# ---------------------------------------------------------------- WebSocket stream messages

STREAM_SAMPLES = [
    stream.VideoFrame(1, 3, 123456, 1920, 1080, b"\x00\x00\x00\x01\x67\x64\x00\x28").encode(),
    stream.StreamInit(1, 1920, 1080, 60, 2, 48000, 1).encode(),
    stream.StreamError("Sandbox not connected").encode(),
    stream.Ping(7, 1_700_000_000_000_000).encode(),
    stream.Pong(7, 1, 2, 3, 4, 5, 6).encode(),
    stream.CursorImage(1, 10, -20, 3, 4).encode(),
    stream.CursorImage(1, 10, 20, 3, 4, 0x34325241, 2, 2, 8, b"\xff" * 16).encode(),
    stream.CursorName(1, 2, 3, "pointer").encode(),
    stream.SelfId(42).encode(),
    stream.RemoteUser(1, 9, "luke", "#ff0000", "https://x/a.png").encode(),
    stream.RemoteUserLeft(9).encode(),
    stream.RemoteCursor(2, 100, -5, "#0D99FF").encode(),
    stream.AgentCursor(1, 1920, 1080, 2, 1).encode(),
    stream.RemoteTouch(3, 9, 1, 10, -10, 32767, "#ff0000").encode(),
    stream.Ping(7, 1, b"\xde\xad").encode(),
]
TEXT_SAMPLES = [
    stream.Init("ses_01jabc", 1920, 1080, 60, 10000, video_mode="scanout", extra={"gop_size": 120}).to_text(),
    stream.ConnectionComplete(1920, 1080).to_text(),
    '{"type":"init","width":1e999,"session_id":null}',
    '{"ConnectionComplete":{"capabilities":[],"width":-0.0,"height":true}}',
    '{"type":"stream_status","state":"starting_video","message":"waiting"}',
    '{"StreamStatus":{"state":"starting_video","attempt":3}}',
]
stream_binary = st.one_of(st.sampled_from(STREAM_SAMPLES).flatmap(mutated), st.binary(max_size=64))
stream_text = st.one_of(st.sampled_from(TEXT_SAMPLES).flatmap(mutated), st.sampled_from(TEXT_SAMPLES).flatmap(
    numbers_swapped), st.text(max_size=40))


@fuzz(600)
@given(stream_binary)
def test_stream_parse_binary_mutated(data: bytes) -> None:
    try:
        event = stream.parse_binary(data)
    except RemoteProtocolError:
        return
    assert event.encode() == data  # accepted bytes are lossless


@fuzz(300)
@given(stream_text)
def test_stream_parse_text_mutated(text: str) -> None:
    try:
        stream.parse_text(text)
    except RemoteProtocolError:
        pass


@fuzz(300)
@given(st.sampled_from(["client", "server"]),
       st.lists(st.one_of(st.tuples(st.just(0), stream_binary), st.tuples(st.just(1), stream_text),
                          st.tuples(st.just(1), st.sampled_from(TEXT_SAMPLES).flatmap(mutated).map(
                              lambda t: t.encode("utf-8", "surrogatepass"))),
                          st.tuples(st.just(1), st.binary(max_size=16))), max_size=8))
def test_stream_connection_receive_mutated(role: str, messages: list) -> None:
    conn = stream.StreamConnection(role)
    for kind, data in messages:
        if conn.state is stream.State.CLOSED:
            break
        try:
            conn.receive(kind, data)
        except RemoteProtocolError:
            pass


@fuzz(300)
@given(st.lists(st.one_of(st.tuples(st.just(0), stream_binary), st.tuples(st.just(1), stream_text)), max_size=12),
       st.lists(st.integers(0, 10**12), min_size=1, max_size=12))
def test_stream_tally_never_fails(messages: list, times: list[int]) -> None:
    """The live capture's and analyze's shared rule: any message sequence gives a reportable tally."""
    conn = stream.StreamConnection("client")
    tally = stream.StreamTally(max_items=4)
    for i, (kind, data) in enumerate(messages):
        t_ns = sum(times[: i % len(times) + 1])
        try:
            event = conn.receive(kind, data)
        except RemoteProtocolError as exc:
            tally.add_error(t_ns, exc)
            continue
        category = tally.add(t_ns, event)
        assert category is stream.classify(event)
        assert stream.is_error(event) == isinstance(event, stream.StreamError)
    result = tally.result()
    json.dumps(result)
    assert tally.messages == len(messages) and len(result["protocol_errors"]) <= 4


# ---------------------------------------------------------------- HXFR

HXFR_SAMPLES = [
    hxfr.FrameRequest(0, 1920, 1080, hxfr.FORMAT_NV12, 1920, 0, 16_666_667, 1).encode(),
    hxfr.FrameRequest(17, 4, 2, hxfr.FORMAT_BGRA8888, 16, 1, 2, 0, b"\x01" * 32).encode(),
    hxfr.FrameResponse(1, 1, 1, (b"\x00\x00\x00\x01\x65", b"\x00\x00\x01\x41")).encode(),
    hxfr.KeyframeRequest().encode(), hxfr.Ping().encode(), hxfr.Pong().encode(),
    hxfr.ConfigRequest(1920, 1080, 8_000_000, 60, 1, 100, 40, 1).encode(),
    hxfr.EnableScanout(1, 1920, 1080, 60).encode(), hxfr.DisableScanout(1).encode(),
    hxfr.ScanoutResponse(1, 1, "Virtual-2").encode(), hxfr.Subscribe(1).encode(),
    hxfr.SubscribeResponse(1, 1).encode(), hxfr.ErrorResponse(-2, "Error: -2").encode(),
    hxfr.UnknownMessage(0x05, 0, 1, b"\x00" * 8).encode(),
]


@st.composite
def hxfr_streams(draw):
    parts = draw(st.lists(st.one_of(st.sampled_from(HXFR_SAMPLES), st.sampled_from(HXFR_SAMPLES).flatmap(mutated),
                                    st.builds(lambda t, f, s, n, b: hxfr.HEADER.pack(hxfr.MAGIC, t, f, s, n) + b,
                                              st.integers(0, 255), st.integers(0, 255), st.integers(0, 65535),
                                              st.sampled_from([0, 4, 8, 24, 28, 44, 72, 260, 4096, 4097, 2**32 - 1]),
                                              st.binary(max_size=300))),
                          max_size=6))
    return b"".join(parts)


@fuzz(500)
@given(st.sampled_from(["client", "server"]), hxfr_streams(), st.lists(st.integers(1, 300), min_size=1, max_size=8),
       st.booleans(), st.integers(0, 3))
def test_hxfr_connection_mutated_streams(role: str, data: bytes, cuts: list[int], eof: bool, requests: int) -> None:
    conn = hxfr.HxfrConnection(role, max_payload=4096)
    if role == "client":
        for i in range(requests):  # outstanding FRAME_REQUESTs, answered (or not) by what arrives
            conn.send(hxfr.FrameRequest(i, 1, 1, hxfr.FORMAT_NV12, 1, 0, 0, 0))
    pos, i = 0, 0
    try:
        while pos < len(data):
            step = cuts[i % len(cuts)]
            conn.receive_data(data[pos : pos + step])
            pos, i = pos + step, i + 1
            while (event := conn.next_event()) is not hxfr.NEED_DATA:
                assert event is not hxfr.EOF
        if eof:
            conn.receive_data(b"")
            while (event := conn.next_event()) is not hxfr.EOF:
                assert event is not hxfr.NEED_DATA
    except RemoteProtocolError:
        assert conn.state is hxfr.State.ERROR
        with pytest.raises(RemoteProtocolError):  # a failed connection stays failed
            conn.next_event()
    assert 0 <= conn.outstanding <= requests
    expired = conn.expire_outstanding()
    assert conn.outstanding == 0 and (expired is None or expired.count >= 1)


@fuzz(300)
@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 65535), st.binary(max_size=600))
def test_hxfr_decode_message_any_body(msg_type: int, flags: int, session_id: int, payload: bytes) -> None:
    try:
        event = hxfr.decode_message(msg_type, flags, session_id, payload)
    except RemoteProtocolError:
        return
    assert isinstance(event.encode(), bytes)


# ---------------------------------------------------------------- helix CLI output

STREAM_OUTPUT = """\
🎬 Streaming session ses_01jabcdefghijklmnopqrstuvw
📺 StreamInit: 1920x1080@60fps (H.264)
⏰ Duration reached (30s)

📊 Final Statistics (elapsed: 30.012s)
───────────────────────────────────────────────
Resolution:       1920x1080
Codec:            H.264
Video frames:     1794 (15 keyframes)
Audio frames:     0
Total data:       41.2 MB
Video bitrate:    11.0 Mbps
Avg frame size:   23.5 KB
Frame size range: 1.2 KB - 180.3 KB
Average FPS:      59.8 fps
Instant FPS:      60 fps
Batch messages:   0
Cursor updates:   3
───────────────────────────────────────────────
"""
START_OUTPUTS = [
    "ses_01jabcdefghijklmnopqrstuvw\n",
    "✅ Created spec task: demo (ID: spt_01jabcdefghijklmnopqrstuvw)\n   Session ID: ses_01jabcdefghijklmnopqrstuvw\n",
    "⏳ Task created (spt_01jabcdefghijklmnopqrstuvw) — sandbox still provisioning after 3m0s\n",
    "Error: unknown flag: --bogus\nUsage:\n  helix spectask start [flags]\n\nunknown flag: --bogus\n",
]
cli_texts = st.one_of(
    st.just(STREAM_OUTPUT).flatmap(numbers_swapped), st.just(STREAM_OUTPUT).flatmap(mutated),
    lines_of(STREAM_OUTPUT.splitlines() + START_OUTPUTS, max_lines=20), st.sampled_from(START_OUTPUTS).flatmap(mutated),
    st.text(max_size=80),
)


@fuzz(400)
@given(cli_texts, st.booleans())
def test_cli_output_parsers(text: str, as_bytes: bool) -> None:
    data = text.encode("utf-8", "surrogatepass") if as_bytes else text
    for parse in (cli_output.parse_stream_output, cli_output.parse_start_output):
        try:
            parse(data)
        except RemoteProtocolError:
            pass
    result = cli_output.parse_error_output(data)
    assert result is None or isinstance(result, str)


@fuzz(200)
@given(st.one_of(st.just("1m2.5s").flatmap(numbers_swapped), st.from_regex(r"-?[0-9.]{0,8}(ns|us|µs|ms|s|m|h){0,3}",
                                                                        fullmatch=True), st.text(max_size=12)))
def test_cli_go_duration(text: str) -> None:
    try:
        cli_output.parse_go_duration(text)
    except RemoteProtocolError:
        pass


HELP = """\
Usage:
  helix spectask start [task-id] [flags]

Flags:
  -a, --agent string         Agent ID to use (e.g., app_01xxx)
  -h, --help                 help for start
  -n, --name string          Task name (default "CLI Test Task")
      --runtime string       Sandbox runtime: ubuntu-desktop|headless-ubuntu
      --wait                 Block until the sandbox has booted

Global Flags:
      --url string   Helix API URL
"""


@fuzz(300)
@given(st.one_of(st.just(HELP).flatmap(mutated), lines_of(HELP.splitlines(), max_lines=16), st.text(max_size=80)),
       st.booleans())
def test_help_parsers(text: str, as_bytes: bool) -> None:
    data = text.encode("utf-8", "surrogatepass") if as_bytes else text
    try:
        help_ = cli_output.parse_start_help(data)
    except RemoteProtocolError as exc:
        assert exc.phase == "cli"
        return
    assert isinstance(help_.has_agent, bool) and isinstance(help_.runtime_choices, tuple)
    assert all(isinstance(f, cli_output.HelpFlag) for f in help_.flags.values())


# ---------------------------------------------------------------- probe and config arguments

hostile_numbers = st.one_of(st.floats(), st.integers(-(2**70), 2**70), st.booleans(), st.none(), st.text(max_size=8))


@fuzz(400)
@given(st.one_of(st.text(max_size=300), st.just("h" * 300), st.none(), st.integers()), hostile_numbers, hostile_numbers)
def test_probe_arguments_only_raise_probe_input_errors(host, port, timeout) -> None:
    from harness.drivers.frame_export import MAX_TIMEOUT, ProbeInputError, check_probe_args

    try:
        h, p, t = check_probe_args(host, port, timeout)
    except ProbeInputError as exc:
        assert "\n" not in exc.message
        return
    assert 1 <= p <= 65535 and 0 < t <= MAX_TIMEOUT and len(h) <= 253


# ---------------------------------------------------------------- .ips crash reports

def _nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=6)),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.sampled_from(["threads", "frames", "symbol", "triggered",
                                                                                    "termination", "indicator", "procName",
                                                                                    "exception", "signal", "x"]), inner,
                                                                   max_size=4)),
                           max_leaves=12)
IPS = ('{"app_name":"QEMULauncher","bug_type":"309"}\n{"procName":"QEMULauncher","termination":{"namespace":"SIGNAL",'
       '"indicator":"Abort trap: 6"},"threads":[{"triggered":true,"frames":[{"symbol":"abort"},{"symbol":"qemu_spice_init"}]}]}')


@fuzz(400)
@given(st.one_of(
    st.just(IPS).flatmap(mutated),
    st.tuples(json_values, json_values).map(lambda hb: json.dumps(hb[0]) + "\n" + json.dumps(hb[1])),
    st.integers(1, 50_000).map(lambda d: "{}\n" + _nested(d)),
    st.integers(1, 50_000).map(lambda d: '{}\n{"threads":' + _nested(d) + "}"),
    st.binary(max_size=64),
))
def test_ips_parser_never_raises(data) -> None:
    from harness.protocols.ips import MAX_FRAMES, CrashReport, parse_ips_bytes

    report = parse_ips_bytes(data, "x.ips")
    assert isinstance(report, CrashReport)
    assert all(isinstance(v, str) for v in (report.process, report.indicator, report.signal, report.parse_error))
    assert len(report.frames) <= MAX_FRAMES and all(isinstance(f, str) for f in report.frames)
    json.dumps(report.as_dict())
    report.summary()


# ---------------------------------------------------------------- Annex-B splitter under a cap

@fuzz(300)
@given(st.lists(st.one_of(st.binary(max_size=40), st.sampled_from([b"\x00\x00\x01\x65\x88", b"\x00\x00\x00\x01\x67",
                                                                   b"\x00\x00\x01\x41\x9a", b"\xff" * 90])), max_size=30),
       st.integers(16, 128), st.lists(st.integers(1, 64), min_size=1, max_size=6))
def test_capped_splitter_accounts_for_every_byte(parts: list[bytes], cap: int, cuts: list[int]) -> None:
    from harness.protocols.h264 import AnnexBAccessUnitSplitter

    data = b"".join(parts)
    splitter = AnnexBAccessUnitSplitter(max_pending=cap)
    out, pos, i = [], 0, 0
    while pos < len(data):
        step = cuts[i % len(cuts)]
        out += splitter.feed(data[pos : pos + step])
        pos, i = pos + step, i + 1
        assert len(splitter._buf) <= cap + 64 + 2
    out += splitter.flush()
    assert sum(map(len, out)) + splitter.skipped_bytes == len(data)
    if not splitter.skipped_bytes:
        assert b"".join(out) == data


# ---------------------------------------------------------------- log classifier

LOG_SAMPLES = [
    "[FRAME_READY] Dropping frame — VT still processing previous frame (dropped 12 total)",
    "[HELIX] Client 1: dropping frame (need 4625, have 106/1048576 bytes free, total drops=364100)",
    "0:00:34.030216978   333 0xe7a330000c00 DEBUG            vsockenc gstvsockenc.c:570:gst_vsockenc_handle_frame:"
    "<vsockenc0> Sent frame 1, resource_id=17, size=1920x1080, keyframe=1",
    "0:00:34.030216978   333 0xe7a330000c00 ERROR            vsockenc gstvsockenc.c:611:gst_vsockenc_read:"
    "<vsockenc0> Host encoder error -2: Error: -2",
    "DMA-BUF fd=42 -> GEM handle=3 -> resource_id=17",
    "[FRAME_READY] #100 scanout=1 resource=17 has_subscriber=YES",
    "[HELIX] Frame request: resource_id=0, 1920x1080",
    "[HELIX] resource_id=0 not supported - guest must provide explicit resource ID from DmaBuf",
    "[HELIX] VERSION: 2026-02-05-reject-resource-id-zero",
    "[FRAME_READY] Dropping frame 7 (dropped 12 total)",
    "[HELIX] Client 3: dropping frame 9, total drops=364100",
    "[drm:virtio_gpu_dequeue_ctrl_func [virtio_gpu]] *ERROR* response 0x1203 (command 0x105)",
    "Failed to bind TCP socket on port 15937",
    "Buffer is not DMA-BUF backed",
    "OOMKilled",
]
log_inputs = st.one_of(
    lines_of(LOG_SAMPLES, max_lines=12),
    lines_of(LOG_SAMPLES, max_lines=12).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=200),
)


@fuzz(400)
@given(log_inputs)
def test_logscan_never_fails(data: str | bytes) -> None:
    result = logscan.scan_text(data)  # never raises: undecodable bytes are counted
    json.dumps(result.as_dict())  # and the result is always reportable
    assert result.resource_ids.nonzero >= 0 and result.resource_ids.zero >= 0
    assert not result.timed_out


@fuzz(60)
@given(st.sampled_from(LOG_SAMPLES), st.integers(0, 200), st.sampled_from(["", "1", " ", "(", "total drops="]))
def test_logscan_repeated_pattern_lines_stay_fast(sample: str, cut: int, glue: str) -> None:
    """A 256 KiB line of one real line's prefix repeated: linear patterns finish in milliseconds."""
    import time

    unit = sample[: max(1, cut % (len(sample) + 1))] + glue
    line = (unit * ((1 << 18) // len(unit) + 1))[: 1 << 18]
    start = time.perf_counter()
    logscan.scan_text(line)
    assert time.perf_counter() - start < 1.0, unit


# ---------------------------------------------------------------- .env.usercreds

USERCREDS = "HELIX_API_KEY=hl-0123456789abcdef\nHELIX_URL=http://localhost:8080\nHELIX_PROJECT=prj_1\nHELIX_UBUNTU_AGENT=app_1\n"


@fuzz(400)
@given(st.one_of(st.just(USERCREDS).flatmap(mutated), lines_of(USERCREDS.splitlines() + [
    "export HELIX_API_KEY='hl-x'", "# comment", "HELIX_API_KEY=oh-hallo-insecure-token", "=value", "KEY", " \t "]),
    st.text(max_size=80)))
def test_usercreds_reader(text: str) -> None:
    try:
        creds = parse_usercreds(text)
    except UsercredsError as exc:
        assert "hl-0123456789abcdef" not in str(exc)  # values never reach a message
        return
    assert creds.api_key and creds.url and creds.project


# ---------------------------------------------------------------- target configs

SIM_TOML = (cfg_mod.Path(__file__).resolve().parents[2] / "fixtures" / "targets" / "sim.toml").read_text()
toml_scalars = st.one_of(st.integers(-(2**70), 2**70), st.floats(), st.booleans(), st.text(max_size=12),
                         st.lists(st.text(max_size=4), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(),
                                                                                    max_size=2))
SECTIONS = ["vm", "ssh", "guest", "frame_export", "host", "timeouts", "stream", "sim"]
KEYS = {name: [f.name for f in cfg_mod.fields(cls)] for name, cls in cfg_mod._SECTIONS.items()}


def _section(name: str):
    keys = st.one_of(st.sampled_from(KEYS[name]), st.text(max_size=5)) if name in KEYS else st.text(max_size=5)
    return st.one_of(st.dictionaries(keys, toml_scalars, max_size=4), toml_scalars)


config_dicts = st.builds(
    lambda known, other: {**other, **known},
    st.fixed_dictionaries({}, optional={name: _section(name) for name in SECTIONS} | {
        "name": toml_scalars, "kind": st.one_of(st.just("utm"), toml_scalars)}),
    st.dictionaries(st.text(max_size=6), toml_scalars, max_size=1),
)


@fuzz(400)
@given(config_dicts)
def test_parse_target_any_mapping(data: dict) -> None:
    try:
        target = cfg_mod.parse_target(data)
    except ConfigError:
        return
    for phase in ("boot", "ssh", "stack", "stream_extra", "teardown"):
        t = target.timeouts[phase]
        assert 0 < t < float("inf"), f"timeout {phase}={t}: a phase could wait forever"
    assert 0 < target.stream.duration < float("inf")


toml_texts = st.one_of(
    st.just(SIM_TOML).flatmap(mutated), st.just(SIM_TOML).flatmap(numbers_swapped),
    lines_of(SIM_TOML.splitlines() + ["[timeouts]", "boot = nan", "ssh = inf", "port = 1e400", "[ssh.port]",
                                      "a = " + "[" * 3000 + "]" * 3000, "id = " + "9" * 4400, "x = {a = {b = 1}}"],
             max_lines=24),
    st.text(max_size=60),
)


@fuzz(400)
@given(toml_texts, st.dictionaries(st.sampled_from(sorted(cfg_mod.ENV_OVERRIDES)), st.one_of(
    st.text(max_size=8), HUGE_NUMBERS), max_size=2))
def test_load_target_any_file(tmp_path_factory, text: str, env: dict) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz-target.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        cfg_mod.load_target(path, env=env)
    except ConfigError:
        pass


# ---------------------------------------------------------------- HXWSREC1 recordings

RECORDING = (rec.MAGIC + rec.encode_record(1, rec.KIND_TEXT, '{"ConnectionComplete":{}}')
             + rec.encode_record(2, rec.KIND_BINARY, STREAM_SAMPLES[0]) + rec.encode_record(3, rec.KIND_TEXT, b"\xff"))


@fuzz(400)
@given(st.one_of(st.just(RECORDING).flatmap(mutated), st.builds(
    lambda recs: rec.MAGIC + b"".join(recs), st.lists(st.builds(
        lambda t, k, n, body: rec.RECORD_HEADER.pack(t, k, n) + body, st.integers(0, 2**64 - 1), st.integers(0, 255),
        st.sampled_from([0, 1, 5, 2**31, 2**32 - 1]), st.binary(max_size=8)), max_size=4)), st.binary(max_size=40)))
def test_recording_reader(data: bytes) -> None:
    try:
        for record in rec.RecordingReader(io.BytesIO(data), max_record=1 << 20):
            if record.kind == rec.KIND_TEXT:
                try:
                    record.text
                except RemoteProtocolError:
                    pass
    except rec.RecordingError as exc:
        assert 0 <= exc.offset <= len(data)


# ---------------------------------------------------------------- utmctl output

UTM_LIST = utmctl.format_list([utmctl.VmEntry("17DC4F96-F1A9-4B51-962B-03D85998E0E7", "started", "Linux"),
                               utmctl.VmEntry("27DC4F96-F1A9-4B51-962B-03D85998E0E7", "stopped", "macOS 15")])
UTM_STDERR = [utmctl.format_event_error(-1743), utmctl.NO_GUI_MESSAGE + "\n",
              "Error from event: The operation couldn’t be completed. (OSStatus error -600.)\n"]


@fuzz(400)
@given(st.one_of(st.just(UTM_LIST).flatmap(mutated), lines_of(UTM_LIST.splitlines() + UTM_STDERR + list(utmctl.STATUSES)),
                 st.sampled_from(UTM_STDERR).flatmap(numbers_swapped), st.text(max_size=60)), st.booleans())
def test_utmctl_parsers(text: str, as_bytes: bool) -> None:
    data = text.encode("utf-8", "surrogatepass") if as_bytes else text
    for parse in (utmctl.parse_list, utmctl.parse_status):
        try:
            parse(data)
        except RemoteProtocolError:
            pass
    found = utmctl.find_event_error(data)
    assert found is None or isinstance(found.line, str)


# ---------------------------------------------------------------- the contract itself


def test_every_documented_error_is_a_harness_error() -> None:
    for cls in (RemoteProtocolError, rec.RecordingError, ConfigError, UsercredsError):
        assert issubclass(cls, HarnessError)
