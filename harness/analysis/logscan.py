"""The log classifier: one declarative table of signatures, applied to any log text.

Each pattern has a name, a severity (openQA's info / soft / hard / fatal), a kind (what part of
the result it feeds) and a regex. Adding a signature is one line in ``PATTERNS``. Input is
streamed line by line; undecodable bytes are counted, never fatal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator

SEVERITIES = ("info", "soft", "hard", "fatal")

#: vsockenc GStreamer debug line (macos-frame-export.md §2).
VSOCKENC_LINE = re.compile(
    r"(?P<ts>\d+:\d\d:\d\d\.\d+)\s+(?P<pid>\d+)\s+(?P<thr>0x[0-9a-f]+)\s+(?P<lvl>\w+)\s+vsockenc\s+"
    r"(?P<file>[^:]+):(?P<line>\d+):(?P<fn>\w+):<(?P<obj>[^>]+)>\s(?P<msg>.*)"
)


@dataclass(frozen=True)
class Pattern:
    name: str
    severity: str
    kind: str  # resource_id | rejection | hang | error | version | drop | info
    regex: re.Pattern[str]
    hint: str = ""


def _p(name: str, severity: str, kind: str, regex: str, hint: str = "") -> Pattern:
    assert severity in SEVERITIES
    return Pattern(name, severity, kind, re.compile(regex), hint)


PATTERNS: tuple[Pattern, ...] = (
    # resource ids
    _p("vsockenc_sent_frame", "info", "resource_id", r"Sent frame (?P<frame>\d+), resource_id=(?P<rid>\d+), size=(?P<w>\d+)x(?P<h>\d+), keyframe=(?P<key>\d)"),
    _p("vsockenc_dmabuf", "info", "resource_id", r"DMA-BUF fd=(?P<fd>-?\d+) -> GEM handle=(?P<gem>\d+) -> resource_id=(?P<rid>\d+)"),
    _p("qemu_frame_ready", "info", "resource_id", r"\[FRAME_READY\] #(?P<frame>\d+) scanout=(?P<scanout>\d+) resource=(?P<rid>\d+) has_subscriber=YES"),
    _p("qemu_frame_request", "info", "resource_id", r"\[HELIX\] Frame request: resource_id=(?P<rid>\d+), (?P<w>\d+)x(?P<h>\d+)"),
    # resource_id=0 fallbacks and rejections
    _p("vsockenc_not_dmabuf", "soft", "zero_reason", r"Buffer is not DMA-BUF backed",
       "vsockenc fell back to resource_id=0 because buffers are not DMA-BUF backed; use scanout mode"),
    _p("vsockenc_no_resource", "soft", "zero_reason", r"Failed to get resource ID for frame"),
    _p("qemu_reject_zero", "info", "rejection", r"\[HELIX\] resource_id=0 not supported - guest must provide explicit resource ID from DmaBuf"),
    _p("vsockenc_host_error", "hard", "rejection", r"Host encoder error (?P<code>-?\d+): (?P<msg>.*)"),
    _p("qemu_no_pixel_fallback", "soft", "fallback", r"\[HELIX\] No pixel data, falling back to DisplaySurface"),
    _p("qemu_scanout_fallback", "soft", "fallback", r"\[HELIX\] Using scanout resource_id=(?P<rid>\d+)"),
    # versions
    _p("qemu_version", "info", "version", r"\[HELIX\] VERSION: (?P<version>\S+)"),
    # drops
    _p("qemu_vt_drop", "soft", "drop", r"\[FRAME_READY\] Dropping frame .* \(dropped (?P<total>\d+) total\)"),
    _p("qemu_client_drop", "soft", "drop", r"\[HELIX\] Client (?P<client>\d+): dropping frame .*total drops=(?P<total>\d+)"),
    _p("bridge_frame_dropped", "soft", "drop", r"scanout frame dropped \(channel full\)"),
    # hangs
    _p("virtio_gpu_error", "fatal", "hang", r"\[drm:virtio_gpu_dequeue_ctrl_func \[virtio_gpu\]\] \*ERROR\* response 0x(?P<resp>[0-9a-f]+) \(command 0x(?P<cmd>[0-9a-f]+)\)",
       "guest GPU command failed (blob/Metal heap exhaustion?): collect `sample <qemu-pid> 1`, do not restart"),
    _p("blocked_reentrant_io", "hard", "hang", r"Blocked re-entrant IO on MemoryRegion: (?P<region>\S+)"),
    _p("hung_task", "fatal", "hang", r"blocked for more than \d+ seconds|blocked on mutex likely owned by"),
    _p("qemu_transfer_read_crash", "fatal", "hang", r"About to call virgl_renderer_transfer_read_iov \(THIS IS WHERE CRASH HAPPENS"),
    # errors
    _p("vsockenc_error", "hard", "error", r"\bERROR\s+vsockenc\s"),
    _p("qemu_error_reply", "hard", "error", r"QEMU error: (?P<msg>.*)"),
    _p("qemu_bind_failed", "fatal", "error", r"Failed to bind TCP socket on port (?P<port>\d+)",
       "another process (a stale QEMU?) holds the frame-export port"),
    _p("qemu_exited", "fatal", "error", r"QEMU exited from an error|QEMU exited: "),
    _p("qemu_vt_encode_failed", "hard", "error", r"\[HELIX\] VideoToolbox encode failed: (?P<status>-?\d+)"),
    _p("bridge_qemu_read_error", "hard", "error", r"QEMU frame read error"),
    _p("subscribe_rejected", "hard", "error", r"subscribe rejected for scanout (?P<scanout>\d+)"),
    _p("oom_killed", "fatal", "error", r"OOMKilled|Out of memory: Killed process"),
    _p("spice_missing", "fatal", "error", r"-spice: invalid option|gl=es: Parameter 'gl' expects"),
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
        }

    def feed_line(self, line: str) -> None:
        self.lines += 1
        for pat in PATTERNS:
            m = pat.regex.search(line)
            if not m:
                continue
            text = line.strip()[:400]
            if pat.kind == "resource_id":
                rid = m.group("rid").strip("0") != ""  # nonzero? (any length of digits)
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
                if len(self.rejections) < 50:
                    self.rejections.append(text)
            elif pat.kind == "fallback":
                if len(self.fallbacks) < 50:
                    self.fallbacks.append(text)
            elif pat.kind == "version":
                self.versions.append(m.group("version"))
            elif pat.kind == "drop":
                total = m.groupdict().get("total")
                key = pat.name
                self.drops[key] = max(self.drops.get(key, 0), _count(total)) if total else self.drops.get(key, 0) + 1
            elif pat.kind in ("hang", "error"):
                bucket = self.hangs if pat.kind == "hang" else self.errors
                if len(bucket) < 100:
                    bucket.append({"pattern": pat.name, "severity": pat.severity, "line": text, "hint": pat.hint})
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
    """Split a byte stream into text lines without holding it all in memory."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            yield _decode(raw, result)
        if len(pending) > 1 << 20:  # a 1 MiB "line" is garbage: cut it
            yield _decode(pending, result)
            pending = b""
    if pending:
        yield _decode(pending, result)


def _decode(raw: bytes, result: ScanResult | None) -> str:
    try:
        return raw.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        if result is not None:
            result.undecodable_lines += 1
        return raw.decode("utf-8", "replace").rstrip("\r")


def scan_text(text: str | bytes, result: ScanResult | None = None) -> ScanResult:
    result = result or ScanResult()
    data = text.encode("utf-8", "replace") if isinstance(text, str) else text
    for line in iter_lines([data], result):
        result.feed_line(line)
    return result


def scan_file(path, result: ScanResult | None = None, chunk_size: int = 1 << 16) -> ScanResult:
    result = result or ScanResult()

    def chunks():
        with open(path, "rb") as fh:
            while True:
                block = fh.read(chunk_size)
                if not block:
                    return
                yield block

    for line in iter_lines(chunks(), result):
        result.feed_line(line)
    return result
