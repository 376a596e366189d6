"""The log classifier: one declarative table of signatures, applied to any log text.

Each pattern has a name, a severity (openQA's info / soft / hard / fatal), a kind (what part of
the result it feeds) and a regex. Adding a signature is one line in ``PATTERNS``. Input is
streamed line by line; undecodable bytes are counted, never fatal.

Bounded time and memory, whatever the input (issue 12):

- every regex runs in linear time on any line: it starts with a literal (so a candidate start is
  rare and cheap), has no unbounded repetition followed by more pattern, and a pattern that needs text
  further along the line finds it with a second, ``tail`` regex searched once from where the first
  match ended; a plain substring ``needles`` check skips lines that cannot match at all;
- a scan has a deadline (``DEFAULT_DEADLINE_S``): a scan that runs out of time stops, sets
  ``timed_out`` and says so in ``as_dict()``;
- every list in the result is capped; what did not fit is counted in ``omitted``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from ..deadline import Deadline

SEVERITIES = ("info", "soft", "hard", "fatal")
#: Seconds a scan may take before it stops and reports ``timed_out``.
DEFAULT_DEADLINE_S = 60.0
#: Longest line handed to the patterns (longer "lines" are cut by ``iter_lines``).
MAX_LINE = 1 << 20
#: Cap of each list of the result (rejections, fallbacks, versions); hangs and errors keep more.
MAX_LIST = 50
MAX_EVENTS = 100

#: vsockenc GStreamer debug line (macos-frame-export.md §2). Bounded fields, no start inside a number.
VSOCKENC_LINE = re.compile(
    r"(?<![0-9:.])(?P<ts>\d{1,4}:\d\d:\d\d\.\d{1,12})[ \t]{1,32}(?P<pid>\d{1,10})[ \t]{1,32}"
    r"(?P<thr>0x[0-9a-f]{1,16})[ \t]{1,32}(?P<lvl>\w{1,16})[ \t]{1,32}vsockenc[ \t]{1,32}"
    r"(?P<file>[^:\s]{1,256}):(?P<line>\d{1,9}):(?P<fn>\w{1,256}):<(?P<obj>[^>\n]{1,256})>\s(?P<msg>.*)"
)


@dataclass(frozen=True)
class Pattern:
    name: str
    severity: str
    kind: str  # resource_id | zero_reason | rejection | fallback | hang | error | version | drop
    regex: re.Pattern[str]
    hint: str = ""
    #: plain substrings, one of which a line must contain before the regex runs
    needles: tuple[str, ...] = ()
    #: searched from the end of ``regex``'s match for the groups further along the line
    tail: re.Pattern[str] | None = None

    def search(self, line: str) -> dict[str, str] | None:
        """The named groups of a match in ``line``, or None. Linear in ``len(line)``."""
        if self.needles and not any(n in line for n in self.needles):
            return None
        match = self.regex.search(line)
        if match is None:
            return None
        groups = match.groupdict()
        if self.tail is not None:
            rest = self.tail.search(line, match.end())
            if rest is None:
                return None
            groups.update(rest.groupdict())
        return groups


def _p(name: str, severity: str, kind: str, regex: str, hint: str = "", *, needles: tuple[str, ...] = (),
       tail: str | None = None) -> Pattern:
    assert severity in SEVERITIES
    return Pattern(name, severity, kind, re.compile(regex), hint, needles, re.compile(tail) if tail else None)


PATTERNS: tuple[Pattern, ...] = (
    # resource ids
    _p("vsockenc_sent_frame", "info", "resource_id", r"Sent frame (?P<frame>\d+), resource_id=(?P<rid>\d+), size=(?P<w>\d+)x(?P<h>\d+), keyframe=(?P<key>\d)",
       needles=("Sent frame ",)),
    _p("vsockenc_dmabuf", "info", "resource_id", r"DMA-BUF fd=(?P<fd>-?\d+) -> GEM handle=(?P<gem>\d+) -> resource_id=(?P<rid>\d+)",
       needles=("DMA-BUF fd=",)),
    _p("qemu_frame_ready", "info", "resource_id", r"\[FRAME_READY\] #(?P<frame>\d+) scanout=(?P<scanout>\d+) resource=(?P<rid>\d+) has_subscriber=YES",
       needles=("[FRAME_READY] #",)),
    _p("qemu_frame_request", "info", "resource_id", r"\[HELIX\] Frame request: resource_id=(?P<rid>\d+), (?P<w>\d+)x(?P<h>\d+)",
       needles=("[HELIX] Frame request: ",)),
    # resource_id=0 fallbacks and rejections
    _p("vsockenc_not_dmabuf", "soft", "zero_reason", r"Buffer is not DMA-BUF backed",
       "vsockenc fell back to resource_id=0 because buffers are not DMA-BUF backed; use scanout mode",
       needles=("Buffer is not DMA-BUF backed",)),
    _p("vsockenc_no_resource", "soft", "zero_reason", r"Failed to get resource ID for frame",
       needles=("Failed to get resource ID for frame",)),
    _p("qemu_reject_zero", "info", "rejection", r"\[HELIX\] resource_id=0 not supported - guest must provide explicit resource ID from DmaBuf",
       needles=("resource_id=0 not supported",)),
    _p("vsockenc_host_error", "hard", "rejection", r"Host encoder error (?P<code>-?\d+): (?P<msg>.*)",
       needles=("Host encoder error ",)),
    _p("qemu_no_pixel_fallback", "soft", "fallback", r"\[HELIX\] No pixel data, falling back to DisplaySurface",
       needles=("No pixel data, falling back",)),
    _p("qemu_scanout_fallback", "soft", "fallback", r"\[HELIX\] Using scanout resource_id=(?P<rid>\d+)",
       needles=("[HELIX] Using scanout resource_id=",)),
    # versions
    _p("qemu_version", "info", "version", r"\[HELIX\] VERSION: (?P<version>\S+)", needles=("[HELIX] VERSION: ",)),
    # drops: the count is further along the line (tail), never `.*` between the two
    _p("qemu_vt_drop", "soft", "drop", r"\[FRAME_READY\] Dropping frame ", needles=("[FRAME_READY] Dropping frame ",),
       tail=r"\(dropped (?P<total>\d+) total\)"),
    _p("qemu_client_drop", "soft", "drop", r"\[HELIX\] Client (?P<client>\d+): dropping frame ", needles=("[HELIX] Client ",),
       tail=r"total drops=(?P<total>\d+)"),
    _p("bridge_frame_dropped", "soft", "drop", r"scanout frame dropped \(channel full\)",
       needles=("scanout frame dropped (channel full)",)),
    # hangs
    _p("virtio_gpu_error", "fatal", "hang", r"\[drm:virtio_gpu_dequeue_ctrl_func \[virtio_gpu\]\] \*ERROR\* response 0x(?P<resp>[0-9a-f]+) \(command 0x(?P<cmd>[0-9a-f]+)\)",
       "guest GPU command failed (blob/Metal heap exhaustion?): collect `sample <qemu-pid> 1`, do not restart",
       needles=("virtio_gpu_dequeue_ctrl_func",)),
    _p("blocked_reentrant_io", "hard", "hang", r"Blocked re-entrant IO on MemoryRegion: (?P<region>\S+)",
       needles=("Blocked re-entrant IO on MemoryRegion: ",)),
    _p("hung_task", "fatal", "hang", r"blocked for more than \d+ seconds|blocked on mutex likely owned by",
       needles=("blocked for more than ", "blocked on mutex likely owned by")),
    _p("qemu_transfer_read_crash", "fatal", "hang", r"About to call virgl_renderer_transfer_read_iov \(THIS IS WHERE CRASH HAPPENS",
       needles=("About to call virgl_renderer_transfer_read_iov",)),
    # errors
    _p("vsockenc_error", "hard", "error", r"\bERROR[ \t]+vsockenc\s", needles=("vsockenc",)),
    _p("qemu_error_reply", "hard", "error", r"QEMU error: (?P<msg>.*)", needles=("QEMU error: ",)),
    _p("qemu_bind_failed", "fatal", "error", r"Failed to bind TCP socket on port (?P<port>\d+)",
       "another process (a stale QEMU?) holds the frame-export port", needles=("Failed to bind TCP socket on port ",)),
    _p("qemu_exited", "fatal", "error", r"QEMU exited from an error|QEMU exited: ", needles=("QEMU exited",)),
    _p("qemu_vt_encode_failed", "hard", "error", r"\[HELIX\] VideoToolbox encode failed: (?P<status>-?\d+)",
       needles=("VideoToolbox encode failed: ",)),
    _p("bridge_qemu_read_error", "hard", "error", r"QEMU frame read error", needles=("QEMU frame read error",)),
    _p("subscribe_rejected", "hard", "error", r"subscribe rejected for scanout (?P<scanout>\d+)",
       needles=("subscribe rejected for scanout ",)),
    _p("oom_killed", "fatal", "error", r"OOMKilled|Out of memory: Killed process", needles=("OOMKilled", "Out of memory: Killed process")),
    _p("spice_missing", "fatal", "error", r"-spice: invalid option|gl=es: Parameter 'gl' expects",
       needles=("-spice: invalid option", "gl=es: Parameter 'gl' expects")),
)


@dataclass
class ResourceIds:
    source: str = ""  # "vsockenc" | "frame_ready" | "frame_request" | "" (none seen)
    nonzero: int = 0
    zero: int = 0
    samples: list[str] = field(default_factory=list)
    by_source: dict[str, dict[str, int]] = field(default_factory=dict)
    zero_reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "nonzero": self.nonzero,
            "zero": self.zero,
            "samples": self.samples,
            "by_source": self.by_source,
            "zero_reasons": self.zero_reasons,
        }


_SOURCE = {
    "vsockenc_sent_frame": "vsockenc",
    "vsockenc_dmabuf": "vsockenc",
    "qemu_frame_ready": "frame_ready",
    "qemu_frame_request": "frame_request",
}


@dataclass
class ScanResult:
    resource_ids: ResourceIds = field(default_factory=ResourceIds)
    rejections: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    hangs: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    drops: dict[str, int] = field(default_factory=dict)
    lines: int = 0
    undecodable_lines: int = 0
    max_samples: int = 8
    #: the scan ran out of time and stopped early (the rest of the input was not read)
    timed_out: bool = False
    #: items that did not fit a capped list, by list name
    omitted: dict[str, int] = field(default_factory=dict)
    #: over-long "lines" cut into pieces of ``MAX_LINE`` bytes
    cut_lines: int = 0

    def as_dict(self) -> dict:
        return {
            "resource_ids": self.resource_ids.as_dict(),
            "rejections": self.rejections,
            "fallbacks": self.fallbacks,
            "versions": self.versions,
            "hangs": self.hangs,
            "errors": self.errors,
            "drops": self.drops,
            "lines": self.lines,
            "undecodable_lines": self.undecodable_lines,
            "timed_out": self.timed_out,
            "omitted": dict(self.omitted),
            "cut_lines": self.cut_lines,
        }

    def _keep(self, name: str, bucket: list, item: object, cap: int) -> None:
        if len(bucket) < cap:
            bucket.append(item)
        else:
            self.omitted[name] = self.omitted.get(name, 0) + 1

    def feed_line(self, line: str) -> None:
        self.lines += 1
        for pat in PATTERNS:
            m = pat.search(line)
            if m is None:
                continue
            text = line[:1000].strip()[:400]
            if pat.kind == "resource_id":
                rid = m["rid"].strip("0") != ""  # nonzero? (any length of digits)
                src = _SOURCE[pat.name]
                ids = self.resource_ids
                counts = ids.by_source.setdefault(src, {"nonzero": 0, "zero": 0})
                if rid:
                    ids.nonzero += 1
                    counts["nonzero"] += 1
                else:
                    ids.zero += 1
                    counts["zero"] += 1
                if len(ids.samples) < self.max_samples:
                    ids.samples.append(text)
            elif pat.kind == "zero_reason":
                if len(self.resource_ids.zero_reasons) < self.max_samples and text not in self.resource_ids.zero_reasons:
                    self.resource_ids.zero_reasons.append(text)
            elif pat.kind == "rejection":
                self._keep("rejections", self.rejections, text, MAX_LIST)
            elif pat.kind == "fallback":
                self._keep("fallbacks", self.fallbacks, text, MAX_LIST)
            elif pat.kind == "version":
                self._keep("versions", self.versions, m["version"][:200], MAX_LIST)
            elif pat.kind == "drop":
                total = m.get("total")
                key = pat.name
                self.drops[key] = max(self.drops.get(key, 0), _count(total)) if total else self.drops.get(key, 0) + 1
            elif pat.kind in ("hang", "error"):
                bucket = self.hangs if pat.kind == "hang" else self.errors
                self._keep(pat.kind + "s", bucket,
                           {"pattern": pat.name, "severity": pat.severity, "line": text, "hint": pat.hint}, MAX_EVENTS)
        # The source of resource ids: the path that produced most of them.
        if self.resource_ids.by_source:
            self.resource_ids.source = max(
                self.resource_ids.by_source, key=lambda s: sum(self.resource_ids.by_source[s].values())
            )


#: Counts in log lines are cut here: a garbage digit run must not break int() (4300-digit limit).
MAX_COUNT = 10**18


def _count(digits: str) -> int:
    return int(digits) if len(digits) <= 18 else MAX_COUNT


def iter_lines(chunks: Iterable[bytes], result: ScanResult | None = None) -> Iterator[str]:
    """Split a byte stream into text lines without holding it all in memory.

    Each byte is looked at once; a "line" longer than ``MAX_LINE`` bytes is cut into pieces (counted
    in ``result.cut_lines``).
    """
    pending = bytearray()
    for chunk in chunks:
        start = 0
        find = chunk.find
        while (nl := find(b"\n", start)) != -1:
            if pending:
                pending += chunk[start:nl]
                if len(pending) <= MAX_LINE:
                    yield _decode(bytes(pending), result)
                    pending.clear()
                else:
                    yield from _cut(pending, result, final=True)
            elif nl - start <= MAX_LINE:
                yield _decode(chunk[start:nl], result)
            else:
                yield from _cut(bytearray(chunk[start:nl]), result, final=True)
            start = nl + 1
        pending += chunk[start:]
        if len(pending) > MAX_LINE:
            yield from _cut(pending, result, final=False)
    if pending:
        yield from _cut(pending, result, final=True)


def _cut(pending: bytearray, result: ScanResult | None, *, final: bool) -> Iterator[str]:
    """Yield ``MAX_LINE`` pieces of ``pending`` (all of it when ``final``), removing them."""
    while len(pending) > MAX_LINE or (final and pending):
        piece = bytes(pending[:MAX_LINE])
        del pending[:MAX_LINE]
        if result is not None and pending:  # a cut: more of the same line follows
            result.cut_lines += 1
        yield _decode(piece, result)


def _decode(raw: bytes, result: ScanResult | None) -> str:
    try:
        return raw.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        if result is not None:
            result.undecodable_lines += 1
        return raw.decode("utf-8", "replace").rstrip("\r")


def _deadline(deadline: Deadline | float | None) -> Deadline:
    if deadline is None:
        return Deadline(DEFAULT_DEADLINE_S)
    if isinstance(deadline, Deadline):
        return deadline
    if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or not math.isfinite(deadline) \
            or deadline <= 0:
        raise ValueError(f"a scan deadline must be a finite number of seconds > 0, got {deadline!r}")
    return Deadline(deadline)


def _scan(lines: Iterable[str], result: ScanResult, deadline: Deadline) -> ScanResult:
    for line in lines:
        if deadline.expired:
            result.timed_out = True
            break
        result.feed_line(line)
    return result


def scan_text(text: str | bytes, result: ScanResult | None = None, *,
              deadline: Deadline | float | None = None) -> ScanResult:
    """Classify a log held in memory. ``deadline`` (a ``Deadline`` or seconds; default
    ``DEFAULT_DEADLINE_S``) bounds the time: past it the scan stops with ``timed_out``."""
    result = result or ScanResult()
    data = text.encode("utf-8", "replace") if isinstance(text, str) else text
    return _scan(iter_lines([data], result), result, _deadline(deadline))


def scan_file(path, result: ScanResult | None = None, chunk_size: int = 1 << 16, *,
              deadline: Deadline | float | None = None) -> ScanResult:
    """Classify a log file, streaming it (see ``scan_text`` for ``deadline``)."""
    result = result or ScanResult()
    limit = _deadline(deadline)

    def chunks():
        with open(path, "rb") as fh:
            while True:
                block = fh.read(chunk_size)
                if not block:
                    return
                yield block

    return _scan(iter_lines(chunks(), result), result, limit)
