"""The harness's footprint (issue 15): its own CPU, peak RSS and bytes written during a window, with the
processes it started counted and the simulator (and what is handed to ``exclude_pid``) left out."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from harness.drivers.footprint import FootprintMeter, bytes_written, exclude_pid, include_pid

PUBLIC_KEYS = ("analysis", "stream_cpu_s", "stream_cpu_percent_of_core", "peak_rss_mb", "bytes_written")


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def _busy_child(seconds: float, *marker: str) -> subprocess.Popen:
    """A python child that burns ``seconds`` of CPU, then waits for its stdin to close."""
    code = (f"import sys, time\nend = time.process_time() + {seconds}\n"
            "while time.process_time() < end: pass\nprint('done', flush=True)\nsys.stdin.read()\n")
    return subprocess.Popen([sys.executable, "-c", code, *marker], stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def _finish(proc: subprocess.Popen) -> None:
    assert proc.stdout.readline().strip() == b"done"  # its CPU is spent (it blocks on stdin now)


def _stop(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    proc.wait(timeout=10)
    proc.stdout.close()


def test_own_cpu_rss_and_writes(tmp_path) -> None:
    payload = b"x" * (2 << 20)
    with FootprintMeter(sample_s=0.05) as meter:
        _burn(0.3)
        (tmp_path / "out.bin").write_bytes(payload)
        blob = bytearray(40 << 20)  # RSS rises during the window
        blob[::4096] = b"y" * len(blob[::4096])
        time.sleep(0.1)  # let the sampler see it
    fp = meter.result("deferred").as_dict()
    assert list(fp)[:5] == list(PUBLIC_KEYS)
    assert fp["analysis"] == "deferred"
    assert fp["stream_cpu_s"] >= 0.25
    assert fp["stream_cpu_percent_of_core"] == pytest.approx(100 * fp["stream_cpu_s"] / fp["stream_s"], rel=0.02)
    assert fp["peak_rss_mb"] >= 40
    if bytes_written(meter._me) is not None:  # Linux (write(2) bytes) and macOS (disk bytes)
        assert fp["bytes_written"] >= len(payload) or sys.platform == "darwin"
    del blob


def test_children_count_and_the_simulator_does_not(tmp_path) -> None:
    """A child started before the window and one started in it count; a `helix_sim` child and an excluded one do not."""
    before = _busy_child(0.0)
    _finish(before)  # idle from here on: its earlier CPU is not the window's
    sim = _busy_child(0.8, "helix_sim")  # its command line says simulator
    far = _busy_child(0.8)
    exclude_pid(far.pid)
    try:
        with FootprintMeter(sample_s=0.05, children_every=1) as meter:
            during = _busy_child(0.4)
            for proc in (sim, far, during):
                _finish(proc)
            time.sleep(0.15)  # one more sample of the children while they are alive
        fp = meter.result("live")
    finally:
        include_pid(far.pid)
        for proc in (before, sim, far, during):
            _stop(proc)
    # The window holds `during`'s 0.4 s (plus an interpreter's start); sim's or far's 0.8 s would show.
    assert 0.35 <= fp.stream_cpu_s < 0.9, fp
    assert fp.processes >= 3  # this process, `before` and `during`


def test_a_child_reaped_in_the_window_counts_once() -> None:
    with FootprintMeter(sample_s=0.05, children_every=1) as meter:
        proc = _busy_child(0.3)
        _finish(proc)
        time.sleep(0.1)
        _stop(proc)  # reaped: rusage has it now, and the meter saw it alive before
    fp = meter.result("live")
    assert 0.25 <= fp.stream_cpu_s < 0.6, fp
