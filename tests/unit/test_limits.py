"""Hostile and careless input: one clear line, bounded time, bounded memory (issue 12).

Every console command that reads input we do not control is run in a child process on pathological
input (non-finite and out-of-range numbers, huge and nested inputs, repeated-pattern log lines). Each
case asserts the exit status, that stderr holds no traceback and one ``error:`` line naming the input,
a wall-time bound and a peak-RSS bound.

The peak RSS is the child's own ``VmHWM`` (``/proc/self/status``), written by the child at exit: on
Linux ``ru_maxrss`` (``wait4``, ``getrusage(RUSAGE_CHILDREN)``, psutil) carries over the high-water mark
of the process that forked it, here a pytest of a few hundred MB, so it would measure pytest. Where
there is no ``/proc`` the ``wait4`` figure is used.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.protocols import hxfr
from harness.protocols.recording import KIND_BINARY, KIND_TEXT, MAGIC, RecordingWriter
from harness.protocols.stream import StreamError, VideoFrame

_CHILD = """\
import atexit, os
def _hwm(path=os.environ.get("HELIX_E2E_TEST_HWM")):
    if not path:
        return
    try:
        with open("/proc/self/status") as fh:
            kb = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return
    with open(path, "w") as out:
        out.write(str(kb))
atexit.register(_hwm)
from harness.cli import entrypoint
entrypoint()
"""
CLI = [sys.executable, "-c", _CHILD]
#: Peak RSS of a small command (python, harness, PyAV and numpy imported) stays well under this.
BASE_RSS_MB = 150


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss_mb: float

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if "error:" in line]


def run_cli(tmp_path: Path, *args: str, timeout: float = 60.0) -> Run:
    """``helix-e2e ARGS`` in a child process; its own peak RSS comes from ``wait4``."""
    out, err, hwm = tmp_path / "stdout.txt", tmp_path / "stderr.txt", tmp_path / "hwm.txt"
    hwm.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HELIX_E2E_TEST_HWM": str(hwm)}
    with open(out, "wb") as fo, open(err, "wb") as fe:
        start = time.monotonic()
        proc = subprocess.Popen([*CLI, *args], stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, cwd=tmp_path, env=env)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - start > timeout:
                proc.kill()
                os.wait4(proc.pid, 0)
                pytest.fail(f"helix-e2e {' '.join(a[:60] for a in args)} did not finish within {timeout}s")
            time.sleep(0.01)
        seconds = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped: keep Popen from waiting again
    if hwm.exists():
        peak_mb = int(hwm.read_text()) / 1024
    else:
        peak_mb = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    run = Run(proc.returncode, out.read_text("utf-8", "replace"), err.read_text("utf-8", "replace"), seconds, peak_mb)
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    return run


def one_error_line(run: Run, *words: str) -> str:
    assert run.rc != 0
    assert len(run.error_lines) == 1, run.stderr
    line = run.error_lines[0]
    for word in words:
        assert word in line, line
    return line


# ---------------------------------------------------------------- probe-frame-export arguments

@pytest.mark.parametrize(("args", "words"), [
    (["--timeout", "nan"], ["--timeout", "'nan'", "finite", "(0, 3600]"]),
    (["--timeout", "inf"], ["--timeout", "'inf'", "(0, 3600]"]),
    (["--timeout", "-1"], ["--timeout", "'-1'"]),
    (["--timeout", "0"], ["--timeout", "'0'"]),
    (["--timeout", "1e400"], ["--timeout"]),
    (["--port", "70000"], ["--port", "'70000'", "1..65535"]),
    (["--port", "0"], ["--port", "'0'", "1..65535"]),
    (["--port", "-1"], ["--port", "'-1'", "1..65535"]),
    (["--host", "h" * 300], ["--host", "300 chars", "253"]),
    (["--host", "a;b"], ["--host", "'a;b'"]),
])
def test_probe_refuses_bad_arguments_in_one_line(tmp_path, args, words) -> None:
    run = run_cli(tmp_path, "probe-frame-export", *args, timeout=20)
    assert run.rc == 2 and run.stdout == ""
    one_error_line(run, *words)
    assert len(run.stderr.strip().splitlines()) == 1
    assert run.seconds < 10 and run.peak_rss_mb < BASE_RSS_MB


class _HugeReplyServer:
    """Answers the probe with a FRAME_RESPONSE header announcing 64 MiB, then streams the body."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(20)
            try:
                conn.recv(4096)
                size = 64 * 1024 * 1024
                conn.sendall(hxfr.HEADER.pack(hxfr.MAGIC, hxfr.MsgType.FRAME_RESPONSE, 0, 1, size))
                chunk = b"\x00\x00\x00\x01\x65" + b"\xab" * (1 << 20)
                for _ in range(64):
                    conn.sendall(chunk)
            except OSError:
                pass  # the probe stops reading once it has classified the reply

    def close(self) -> None:
        self.sock.close()
        self.thread.join(timeout=20)


def test_probe_holds_little_of_a_64_mib_reply(tmp_path) -> None:
    server = _HugeReplyServer()
    try:
        run = run_cli(tmp_path, "probe-frame-export", "--port", str(server.port), "--timeout", "10", "--json")
    finally:
        server.close()
    result = json.loads(run.stdout)
    assert result["verdict"] == "accepted" and "67108864" in result["message"]
    assert len(run.stdout) < 64 * 1024  # not 134 MB of hex
    received = [item for item in result["exchange"] if item["dir"] == "received"]
    assert len(received) == 1 and len(received[0]["hex"]) <= 2 * 4096
    assert result["omitted_bytes"] == result["received_bytes"] - len(received[0]["hex"]) // 2
    assert run.seconds < 10 and run.peak_rss_mb < BASE_RSS_MB


# ---------------------------------------------------------------- scan-logs

@pytest.mark.parametrize("unit", [
    "[FRAME_READY] Dropping frame ",
    "[HELIX] Client 1: dropping frame ",
    "0:00:00.1 1 0x1 DEBUG vsockenc a",
    "Host encoder error 1",
    "1",
])
def test_scan_logs_one_mib_line_is_linear(tmp_path, unit) -> None:
    log = tmp_path / "huge.log"
    log.write_text(unit * ((1 << 20) // len(unit)) + "\n" + unit * 1000 + "\n")
    run = run_cli(tmp_path, "scan-logs", str(log), "--json")
    assert run.rc == 0
    out = json.loads(run.stdout)
    assert out["lines"] == 2 and out["timed_out"] is False
    assert run.seconds < 8 and run.peak_rss_mb < BASE_RSS_MB  # 21 s and quadratic before


def test_scan_logs_caps_its_lists_and_counts_the_rest(tmp_path) -> None:
    log = tmp_path / "versions.log"
    log.write_text("".join(f"[HELIX] VERSION: build-{i}\n[HELIX] resource_id=0 not supported - guest must provide "
                           f"explicit resource ID from DmaBuf\nQEMU error: {i}\n" for i in range(30_000)))
    run = run_cli(tmp_path, "scan-logs", str(log), "--json")
    out = json.loads(run.stdout)
    assert len(out["versions"]) == 50 and out["omitted"]["versions"] == 30_000 - 50
    assert len(out["rejections"]) == 50 and out["omitted"]["rejections"] == 30_000 - 50
    assert len(out["errors"]) == 100 and out["omitted"]["errors"] == 30_000 - 100
    assert len(run.stdout) < 200_000
    assert run.seconds < 15 and run.peak_rss_mb < BASE_RSS_MB


def test_scan_logs_of_hostile_ips_files(tmp_path) -> None:
    files = {
        "list.ips": "[1]\n",
        "shape.ips": '{"app_name":"QEMULauncher"}\n{"threads":[{"frames":5}]}\n',
        "deep.ips": "{}\n" + "[" * 200_000 + "]" * 200_000 + "\n",
        "deep-header.ips": "{" * 100_000 + "\n{}\n",
        "types.ips": '{"app_name":{"x":[1]}}\n{"procName":["a"],"termination":{"indicator":{"a":[[]]}},"threads":"x"}\n',
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    run = run_cli(tmp_path, "scan-logs", *files, "--json")
    assert run.rc == 0
    crashes = {Path(c["path"]).name: c for c in json.loads(run.stdout)["crashes"]}
    assert set(crashes) == set(files)
    assert "nested too deeply" in crashes["deep.ips"]["parse_error"]
    assert "not a list" in crashes["shape.ips"]["parse_error"] and crashes["shape.ips"]["process"] == "QEMULauncher"
    assert crashes["list.ips"]["parse_error"] and crashes["types.ips"]["process"] == ""
    text_run = run_cli(tmp_path, "scan-logs", *files)
    assert text_run.rc == 0 and text_run.stdout.count("unparsed:") == len(files) - 0
    assert run.seconds < 10 and run.peak_rss_mb < BASE_RSS_MB


def test_scan_logs_unreadable_file_is_one_line(tmp_path) -> None:
    run = run_cli(tmp_path, "scan-logs", str(tmp_path / "missing.log"))
    one_error_line(run, "missing.log", "scan-logs")


# ---------------------------------------------------------------- analyze

PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c63f8ff"
                    "ff3f0005fe02fea7d6a4e30000000049454e44ae426082")


@pytest.mark.parametrize(("name", "data"), [
    ("empty.h264", b""),
    ("random.bin", bytes((i * 7919 + 13) % 251 for i in range(200_000))),  # no 00 00 01 in it
    ("image.png", PNG),
    ("one-start-code.bin", b"\xff" * 100 + b"\x00\x00\x01\x41" + b"\x17" * 500),  # a "slice" that never decodes
])
def test_analyze_says_no_h264_found(tmp_path, name, data) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    for extra in ([], ["--json"], ["--no-decode"]):
        run = run_cli(tmp_path, "analyze", str(path), *extra)
        assert run.rc == 1
        one_error_line(run, name, "no H.264 found")
        if extra == ["--json"]:
            assert json.loads(run.stdout)["h264_found"] is False
        assert run.seconds < 15 and run.peak_rss_mb < BASE_RSS_MB


def test_analyze_without_start_codes_is_bounded(tmp_path) -> None:
    """384 MiB of zeros (a sparse file): the splitter keeps at most its 64 MiB cap and says what it cut."""
    path = tmp_path / "zeros.bin"
    with open(path, "wb") as fh:
        fh.truncate(384 << 20)
    run = run_cli(tmp_path, "analyze", str(path), "--json", "--no-decode", timeout=90)
    result = json.loads(run.stdout)
    assert result["h264_found"] is False and result["skipped_bytes"] == 384 << 20
    assert any("skipped" in w for w in result["warnings"])
    assert any("warning:" in line and "skipped" in line for line in run.stderr.splitlines())
    assert run.peak_rss_mb < 250, run.peak_rss_mb  # 174 MB; the whole file, twice (768+ MB) before
    assert run.seconds < 30


def _recording(path: Path, frames: int = 60) -> bytes:
    au = bytes.fromhex("00 00 00 01 67 42 c0 1f 00 00 00 01 68 ce 3c 80 00 00 01 65 88 84")
    with open(path, "wb") as fh:
        writer = RecordingWriter(fh)
        writer.write(1_000_000, KIND_TEXT, '{"state":"starting_video"}')
        for i in range(frames):
            writer.write(2_000_000_000 + i * 33_333_333, KIND_BINARY, VideoFrame(1, 1, i * 33_333, 64, 64, au).encode())
        writer.write(5_000_000_000, KIND_BINARY, StreamError("boom").encode())
        writer.close()
    return path.read_bytes()


def test_analyze_truncated_recording_analyses_the_complete_part(tmp_path) -> None:
    path = tmp_path / "cut.hxwsrec"
    data = _recording(path)
    path.write_bytes(data[:-7])  # the StreamError record is cut
    run = run_cli(tmp_path, "analyze", str(path), "--json", "--no-decode")
    assert run.rc == 0
    result = json.loads(run.stdout)
    assert result["frames"] + result["replay_frames"] == 60 and result["stream_errors"] == []
    assert result["recording_truncated_at"] == len(data) - len(StreamError("boom").encode()) - 13
    assert result["warnings"] and "truncated" in result["warnings"][0]
    warnings = [line for line in run.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "cut.hxwsrec" in warnings[0] and not run.error_lines
    assert result["status_before_first_frame"][0]["state"] == "starting_video"
    assert result["time_to_first_frame_s"] == pytest.approx(1.999, abs=0.001)


@pytest.mark.parametrize(("args", "words"), [
    (["--warmup", "nan"], ["--warmup", "'nan'", "[0, 3600]"]),
    (["--warmup", "-1"], ["--warmup", "'-1'"]),
    (["--warmup", "inf"], ["--warmup", "'inf'"]),
])
def test_analyze_refuses_bad_numbers(tmp_path, args, words) -> None:
    path = tmp_path / "r.hxwsrec"
    _recording(path, frames=3)
    run = run_cli(tmp_path, "analyze", str(path), *args)
    assert run.rc == 2
    one_error_line(run, *words)


def test_analyze_missing_file_and_a_bad_magic_recording(tmp_path) -> None:
    one_error_line(run_cli(tmp_path, "analyze", str(tmp_path / "nope.h264")), "nope.h264")
    fake = tmp_path / "fake.hxwsrec"
    fake.write_bytes(MAGIC + struct.pack(">QBI", 1, 9, 5) + b"hello")  # kind 9 in the first record
    run = run_cli(tmp_path, "analyze", str(fake), "--json")
    result = json.loads(run.stdout)
    assert result["recording_truncated_at"] == len(MAGIC) and "kind 9" in result["warnings"][0]
    assert run.rc == 1 and "no video frames" in one_error_line(run)


# ---------------------------------------------------------------- config values at load time

@pytest.mark.parametrize(("toml", "words"), [
    ("[timeouts]\nscale = 1e8\n", ["[timeouts] scale", "[0.01, 100]"]),
    ("[timeouts]\nboot = inf\n", ["timeouts.boot", "finite"]),
    ("[stream]\nduration = 0\n", ["[stream] duration", "> 0"]),
    ("[stream]\nduration = -5\nwarmup = 0\n", ["[stream] duration"]),
    ("[stream]\nwidth = -1920\n", ["[stream] width", "1..65535"]),
    ("[stream]\nbitrate = -1\n", ["[stream] bitrate"]),
    ("[ssh]\nconnect_timeout = -1\n", ["[ssh] connect_timeout"]),
    ("[ssh]\nhost = \"" + "h" * 300 + "\"\n", ["[ssh] host", "253"]),
    ("[guest]\nusercreds = \".env.usercreds;touch${IFS}pwned\"\n", ["[guest] usercreds", "plain path"]),
    ("[guest]\ncli_path = \"/tmp/helix$(id)\"\n", ["[guest] cli_path"]),
    ("[guest]\nhelix_dir = \"~/helix\\nrm -rf ~\"\n", ["[guest] helix_dir"]),
    ("[guest]\nsandbox_service = \"sandbox; reboot\"\n", ["[guest] sandbox_service", "plain name"]),
    ("[guest]\ncompose_profiles = \"a,b|c\"\n", ["[guest] compose_profiles"]),
])
def test_config_errors_are_one_line_naming_the_key(tmp_path, toml, words) -> None:
    target = tmp_path / "t.toml"
    target.write_text('name = "t"\n' + toml)
    run = run_cli(tmp_path, "doctor", "--target", str(target), "--json")
    assert run.rc == 2
    one_error_line(run, *words)
    assert run.seconds < 15


def test_interrupt_gives_one_line(tmp_path) -> None:
    """SIGINT during a long scan: `interrupted`, exit 130, no traceback."""
    log = tmp_path / "big.log"
    log.write_text("[FRAME_READY] #1 scanout=1 resource=17 has_subscriber=YES\n" * 1_000_000)
    proc = subprocess.Popen([*CLI, "scan-logs", str(log)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert "Traceback" not in err
    assert proc.returncode == 130 or (proc.returncode == 0 and "lines:" in out)  # finished before the signal
