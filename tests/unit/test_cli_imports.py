"""Console commands import only what they need (issue 15): no PyAV or numpy for `analyze --no-decode`,
`probe-frame-export` or `scan-logs` (the doctor has its own test, test_doctor_imports.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from harness.protocols.recording import KIND_BINARY, RecordingWriter
from harness.protocols.stream import CODEC_H264, FLAG_KEYFRAME, VideoFrame

HEAVY = ("av", "numpy", "cv2")
PROBE = """
import json, sys
from harness.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("HEAVY=" + json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.stderr)
print("CODE=" + str(code), file=sys.stderr)
"""
#: An IDR access unit with SPS and PPS (bytes are never decoded on the --no-decode path).
AU = bytes.fromhex("00000001674d4015e8c02ff2c0440000000168ee3c80000001658884")


def _run(tmp_path, *argv: str) -> tuple[list[str], str]:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    lines = dict(line.split("=", 1) for line in proc.stderr.splitlines() if line.startswith(("HEAVY=", "CODE=")))
    assert "HEAVY" in lines, proc.stderr
    return json.loads(lines["HEAVY"]), proc.stdout


def _recording(path) -> None:
    with open(path, "wb") as fh:
        writer = RecordingWriter(fh)
        for i in range(90):
            writer.write(1_000_000_000 + i * 33_333_333, KIND_BINARY,
                         VideoFrame(CODEC_H264, FLAG_KEYFRAME, i * 33_333, 640, 368, AU).encode())
        writer.close()


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@pytest.mark.parametrize("command", ["analyze --no-decode", "probe-frame-export", "scan-logs"])
def test_light_commands_import_no_decoder(tmp_path, command) -> None:
    rec, log = tmp_path / "s.hxwsrec", tmp_path / "helix-debug.log"
    _recording(rec)
    log.write_text("[HELIX] VERSION: test\n")
    argv = {
        "analyze --no-decode": ["analyze", str(rec), "--no-decode", "--json"],
        "probe-frame-export": ["probe-frame-export", "--port", _closed_port(), "--timeout", "2", "--json"],
        "scan-logs": ["scan-logs", str(log), "--json"],
    }[command]
    loaded, out = _run(tmp_path, *argv)
    assert json.loads(out)  # the command really ran and printed its JSON
    assert loaded == [], f"`helix-e2e {command}` imported {loaded}"
    if command.startswith("analyze"):
        assert json.loads(out)["frames"] == 90
