"""The harness's own footprint on the host while a stream flows: CPU seconds, peak RSS, bytes written.

On a real runner the harness shares the Mac with the VM whose frame rate it judges, so every run
reports what the harness itself cost during the stream phase (issue 15). :class:`FootprintMeter`
measures, from :meth:`~FootprintMeter.start` to :meth:`~FootprintMeter.stop`, this process and every
process it started on the host (children, grandchildren …), except the simulator: the simulator is
the far end (the Mac and its VM), not the harness. A process is the simulator when its command line
runs ``helix_sim`` (``python -m helix_sim up``, ``helix-e2e sim up``) or when its pid was handed to
:func:`exclude_pid` (a bench's loopback sender, say); everything below it is excluded too.

- **CPU**: this process's user+system time (all threads: the receive loop, the decoder, pytest) and
  that of the children, as deltas over the window. A child that exits during the window counts by its
  rusage once reaped, so for one that was already running at the start its earlier CPU is removed.
- **Peak RSS**: the largest sum of resident sets seen, sampled every :data:`SAMPLE_S` on a thread of the
  meter (the children every :data:`CHILDREN_EVERY` samples), and this process's own high-water mark
  (``ru_maxrss``) when it rose during the window.
- **Bytes written**: Linux counts the bytes handed to ``write(2)`` (psutil ``write_chars``), macOS the
  bytes written to disk (``proc_pid_rusage``); ``None`` where the OS tells neither.

Measuring never fails a capture: anything the OS refuses is left out and logged at debug level.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import resource
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import psutil

log = logging.getLogger(__name__)

#: Seconds between two samples of this process's RSS.
SAMPLE_S = 0.25
#: The children (their list, CPU, RSS and writes) are sampled every this many samples.
CHILDREN_EVERY = 4
MB = 1024 * 1024

_EXCLUDED: set[int] = set()
_lock = threading.Lock()


def exclude_pid(pid: int) -> None:
    """Leave process ``pid`` and everything below it out of the harness's footprint (it is the far end)."""
    with _lock:
        _EXCLUDED.add(int(pid))


def include_pid(pid: int) -> None:
    """Undo :func:`exclude_pid` (a pid can be reused once its process is gone)."""
    with _lock:
        _EXCLUDED.discard(int(pid))


def _is_simulator(proc: psutil.Process) -> bool:
    with _lock:
        if proc.pid in _EXCLUDED:
            return True
    try:
        argv = proc.cmdline()
    except (psutil.Error, OSError):
        return False
    if "helix_sim" in argv:
        return True
    return any(a == "sim" and b == "up" for a, b in zip(argv, argv[1:]))


@dataclass
class Footprint:
    """What the harness cost during the stream phase; :meth:`as_dict` is ``metrics.json["harness"]``."""

    analysis: str
    stream_cpu_s: float
    stream_cpu_percent_of_core: float
    peak_rss_mb: float
    bytes_written: int | None
    stream_s: float
    processes: int  # this process and the children measured (the most seen at once)
    #: CPU seconds of the content analysis after the stream (``deferred``: the whole decode; else draining).
    analysis_cpu_s: float | None = None
    #: ``sampled``: which frames the content checks saw (``analysis.modes.FrameSampler.report``).
    sampled: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "analysis": self.analysis,
            "stream_cpu_s": self.stream_cpu_s,
            "stream_cpu_percent_of_core": self.stream_cpu_percent_of_core,
            "peak_rss_mb": self.peak_rss_mb,
            "bytes_written": self.bytes_written,
            "stream_s": self.stream_s,
            "processes": self.processes,
            "analysis_cpu_s": self.analysis_cpu_s,
            "sampled": self.sampled,
        }


# -- what the OS tells ----------------------------------------------------------------------------


def own_cpu_s() -> float:
    """CPU seconds of this process (every thread) and of the children it has reaped."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS: bytes; Linux: KiB


class _RusageInfoV2(ctypes.Structure):
    _fields_ = [("ri_uuid", ctypes.c_uint8 * 16)] + [(name, ctypes.c_uint64) for name in (
        "ri_user_time", "ri_system_time", "ri_pkg_idle_wkups", "ri_interrupt_wkups", "ri_pageins",
        "ri_wired_size", "ri_resident_size", "ri_phys_footprint", "ri_proc_start_abstime",
        "ri_proc_exit_abstime", "ri_child_user_time", "ri_child_system_time", "ri_child_pkg_idle_wkups",
        "ri_child_interrupt_wkups", "ri_child_pageins", "ri_child_elapsed_abstime", "ri_diskio_bytesread",
        "ri_diskio_byteswritten")]


_RUSAGE_INFO_V2 = 2
_libproc: Any = None


def _darwin_bytes_written(pid: int) -> int | None:
    global _libproc
    if _libproc is None:
        # libproc lives in libSystem, which every process has loaded (dlopen(NULL) finds it there too).
        _libproc = ctypes.CDLL(ctypes.util.find_library("proc"), use_errno=True)
        _libproc.proc_pid_rusage.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_RusageInfoV2)]
        _libproc.proc_pid_rusage.restype = ctypes.c_int
    info = _RusageInfoV2()
    if _libproc.proc_pid_rusage(pid, _RUSAGE_INFO_V2, ctypes.byref(info)) != 0:
        return None
    return int(info.ri_diskio_byteswritten)


def bytes_written(proc: psutil.Process) -> int | None:
    """Bytes ``proc`` has written so far (see the module docstring), or ``None``."""
    try:
        if sys.platform == "darwin":
            return _darwin_bytes_written(proc.pid)
        io = proc.io_counters()
    except (psutil.Error, OSError, AttributeError, NotImplementedError):
        return None
    return int(getattr(io, "write_chars", io.write_bytes))


# -- the meter ------------------------------------------------------------------------------------


@dataclass
class _Child:
    proc: psutil.Process
    direct: bool
    cpu0: float  # CPU seconds when first seen (0 for a child started during the window)
    cpu: float
    written0: int | None
    written: int | None
    gone: bool = False


class FootprintMeter:
    """Measure this process and its host children (not the simulator) between :meth:`start` and :meth:`stop`.

    ``with FootprintMeter() as meter: …`` works too; :meth:`result` then gives the numbers."""

    def __init__(self, *, sample_s: float = SAMPLE_S, children_every: int = CHILDREN_EVERY) -> None:
        self.sample_s = sample_s
        self.children_every = max(1, children_every)
        self._me = psutil.Process()
        self._children: dict[tuple[int, float], _Child] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = self._t1 = 0.0
        self._cpu0 = self._cpu1 = 0.0
        self._written0: int | None = None
        self._written1: int | None = None
        self._maxrss0 = 0
        self._peak = 0
        self._children_rss = 0
        self._most = 1
        self._first_sample = True
        self._sim: dict[int, bool] = {}  # pid → is (the root of) a simulator, asked once per pid

    def __enter__(self) -> "FootprintMeter":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._cpu0 = own_cpu_s()
        self._written0 = bytes_written(self._me)
        self._maxrss0 = _maxrss_bytes()
        self._sample(children=True)
        self._first_sample = False
        self._thread = threading.Thread(target=self._run, name="harness-footprint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the window (idempotent)."""
        if self._thread is None or self._t1:
            return
        self._stop.set()
        self._thread.join(timeout=5.0)
        self._sample(children=True)
        self._t1 = time.monotonic()
        self._cpu1 = own_cpu_s()
        self._written1 = bytes_written(self._me)
        grown = _maxrss_bytes()
        if grown > self._maxrss0:  # this window set the process's high-water mark: exact
            self._peak = max(self._peak, grown + self._children_rss)

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(self.sample_s):
            n += 1
            self._sample(children=n % self.children_every == 0)

    def _sample(self, *, children: bool) -> None:
        try:
            rss = self._me.memory_info().rss
        except (psutil.Error, OSError) as exc:
            log.debug("footprint: own RSS unavailable: %s", exc)
            return
        if children:
            self._children_rss = self._sample_children()
        self._peak = max(self._peak, rss + self._children_rss)

    def _descendants(self) -> list[tuple[psutil.Process, bool]]:
        """(process, is a direct child) for every host descendant outside the simulator's trees."""
        try:
            found = self._me.children(recursive=True)
        except (psutil.Error, OSError) as exc:
            log.debug("footprint: children unavailable: %s", exc)
            return []
        by_pid = {p.pid: p for p in found}
        parent: dict[int, int] = {}
        for p in found:
            try:
                parent[p.pid] = p.ppid()
            except (psutil.Error, OSError):
                parent[p.pid] = -1
        for p in found:
            if p.pid not in self._sim:
                self._sim[p.pid] = _is_simulator(p)
        with _lock:
            registered = set(_EXCLUDED)
        excluded = {p.pid for p in found if self._sim[p.pid] or p.pid in registered}
        out = []
        for p in found:
            pid, skip = p.pid, False
            while pid in by_pid:
                if pid in excluded:
                    skip = True
                    break
                pid = parent.get(pid, -1)
            if not skip:
                out.append((p, parent.get(p.pid) == self._me.pid))
        return out

    def _sample_children(self) -> int:
        rss_total = 0
        seen = set()
        for proc, direct in self._descendants():
            try:
                key = (proc.pid, proc.create_time())
                with proc.oneshot():
                    t = proc.cpu_times()
                    rss = proc.memory_info().rss
            except (psutil.Error, OSError):
                continue
            cpu = t.user + t.system
            written = bytes_written(proc)
            child = self._children.get(key)
            if child is None:
                base_cpu = cpu if self._first_sample else 0.0
                base_written = written if self._first_sample else 0
                child = self._children[key] = _Child(proc, direct, base_cpu, cpu, base_written, written)
            child.cpu, child.written = cpu, written if written is not None else child.written
            seen.add(key)
            rss_total += rss
        for key, child in self._children.items():
            if key not in seen:
                child.gone = True
        self._most = max(self._most, 1 + len(seen))
        return rss_total

    def result(self, analysis: str) -> Footprint:
        """The numbers of the window (call after :meth:`stop`)."""
        stream_s = max(self._t1 - self._t0, 1e-9)
        cpu = self._cpu1 - self._cpu0  # this process, and the children it reaped (their whole lives)
        written = (self._written1 - self._written0) if None not in (self._written0, self._written1) else None
        for child in self._children.values():
            if not child.gone:
                cpu += child.cpu - child.cpu0
            elif child.direct:
                cpu -= child.cpu0  # reaped: rusage counted its CPU from before the window too
            else:
                cpu += child.cpu - child.cpu0  # reaped by its own parent: its last sample is what we know
            if written is not None and child.written is not None and child.written0 is not None:
                written += max(0, child.written - child.written0)
        cpu = max(0.0, cpu)
        return Footprint(
            analysis=analysis,
            stream_cpu_s=round(cpu, 3),
            stream_cpu_percent_of_core=round(100.0 * cpu / stream_s, 2),
            peak_rss_mb=round(self._peak / MB, 1),
            bytes_written=written,
            stream_s=round(stream_s, 3),
            processes=self._most,
        )
