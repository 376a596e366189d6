"""Parsers for ``helix spectask`` output (reference: helix-stream.md §2, §3).

- ``parse_stream_output``: the block after ``📊 Final Statistics``, the end-reason line and ``📺 StreamInit:``.
- ``parse_start_output``: the quiet (``ses_…``/``spt_…`` line) and verbose forms, incl. still-provisioning.
- ``parse_error_output``: cobra's ``Error: <msg>`` + usage + ``<msg>`` form (exit 1).
- ``parse_help_flags`` / ``parse_start_help``: the ``Flags:`` of a cobra ``--help``, and which of the two
  CLI generations ``spectask start --help`` shows (``--agent`` vs ``--runtime``, upstream-corrections.md §2).

The ``Codec:`` line of the Final Statistics is conditional (``spectask.go`` ``printStats``: only when a
StreamInit or a frame set the codec), so a run with no StreamInit and 0 frames parses to that, with
the CLI's own error. Output that is missing what we need raises ``RemoteProtocolError`` with phase ``cli``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "FINAL_STATISTICS", "StreamStats", "StartResult", "parse_stream_output", "parse_start_output",
    "parse_error_output", "parse_go_duration", "HelpFlag", "StartHelp", "parse_help_flags", "parse_start_help",
    "RUNTIMES", "RUNTIME_DESKTOP", "SESSION_ID_RE", "is_session_id",
]

FINAL_STATISTICS = "📊 Final Statistics"
SEPARATOR = "─" * 47
_ID = r"[0-9a-z]{26}"

_FINAL_HEADER_RE = re.compile(r"^📊 Final Statistics(?: \(elapsed: ([^)\n]*)\))?[ \t]*$", re.M)
# Regexes from the reference, anchored per line.
_AVERAGE_FPS_RE = re.compile(r"^Average FPS:\s+([\d.]+) fps", re.M)
_VIDEO_FRAMES_RE = re.compile(r"^Video frames:\s+(\d+)(?: \((\d+) keyframes\))?", re.M)
_INSTANT_FPS_RE = re.compile(r"^Instant FPS:\s+(\d+) fps", re.M)
_RESOLUTION_RE = re.compile(r"^Resolution:\s+(\d+)x(\d+)", re.M)
_CODEC_RE = re.compile(r"^Codec:[ \t]+(.+?)[ \t]*$", re.M)
_AUDIO_FRAMES_RE = re.compile(r"^Audio frames:\s+(\d+)", re.M)
_TOTAL_DATA_RE = re.compile(r"^Total data:[ \t]+(.+?)[ \t]*$", re.M)
_VIDEO_BITRATE_RE = re.compile(r"^Video bitrate:[ \t]+(.+?)[ \t]*$", re.M)
_AVG_FRAME_RE = re.compile(r"^Avg frame size:[ \t]+(.+?)[ \t]*$", re.M)
_FRAME_RANGE_RE = re.compile(r"^Frame size range:[ \t]+(.+?) - (.+?)[ \t]*$", re.M)
_BATCH_RE = re.compile(r"^Batch messages:\s+(\d+)", re.M)
_CURSOR_RE = re.compile(r"^Cursor updates:\s+(\d+)", re.M)
_STREAM_INIT_RE = re.compile(r"^📺 StreamInit: (\d+)x(\d+)@(\d+)fps \((.*)\)[ \t]*$", re.M)
_END_REASONS = (
    ("duration", re.compile(r"^⏰ Duration reached \((\d+)s\)", re.M)),
    ("interrupted", re.compile(r"^🛑 Interrupted\.\.\.", re.M)),
    ("server_closed", re.compile(r"^📭 Connection closed by server", re.M)),
    ("connection_error", re.compile(r"^❌ Connection error: (.*)$", re.M)),
)
_GO_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

#: A Helix session id: ``ses_`` + a lowercase ULID (helix-stream.md §2, ``api/pkg/system/uuid.go``).
SESSION_ID_RE = re.compile(rf"ses_{_ID}")


def is_session_id(value: object) -> bool:
    """True for a well-formed ``ses_…`` id (26 lowercase ULID characters)."""
    return isinstance(value, str) and SESSION_ID_RE.fullmatch(value) is not None


_SESSION_QUIET_RE = re.compile(rf"^(ses_{_ID})[ \t]*$", re.M)
_SESSION_VERBOSE_RE = re.compile(rf"^   Session ID: (ses_{_ID})$", re.M)
_TASK_RES = (
    re.compile(rf"^(spt_{_ID})[ \t]*$", re.M),
    re.compile(rf"^✅ Created spec task: .* \(ID: (spt_{_ID})\)[ \t]*$", re.M),
    re.compile(rf"^✅ Task created — planning started: (spt_{_ID})[ \t]*$", re.M),
    re.compile(rf"^⏳ Task created \((spt_{_ID})\) — sandbox still provisioning", re.M),
    re.compile(rf"^Starting planning for task (spt_{_ID})\.\.\.", re.M),
)
_STILL_PROVISIONING_RE = re.compile(rf"^⏳ Task created \((spt_{_ID})\) — sandbox still provisioning after ", re.M)
_USAGE_RE = re.compile(r"^Usage:[ \t]*$", re.M)
_ERROR_LINE_RE = re.compile(r"^Error: (.*)$", re.M)


def _text(output: str | bytes) -> str:
    if isinstance(output, (bytes, bytearray)):
        output = bytes(output).decode("utf-8", "replace")
    if not isinstance(output, str):
        raise LocalProtocolError(f"CLI output must be str or bytes, got {type(output).__name__}")
    return output.replace("\r\n", "\n")


def _fail(message: str, text: str) -> RemoteProtocolError:
    error = parse_error_output(text)
    if error:
        message = f"{message}; the CLI said: Error: {error}"
    return RemoteProtocolError(message, phase="cli", data=text.encode("utf-8", "replace")[-4096:])


def parse_go_duration(value: str) -> float:
    """Seconds in a Go ``time.Duration`` string (``30s``, ``1m2s``, ``1.203s``, ``4ms``, ``0s``)."""
    value = value.strip()
    sign = -1.0 if value.startswith("-") else 1.0
    body = value[1:] if value[:1] in ("-", "+") else value
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    for match in _GO_DURATION_RE.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        pos = match.end()
    if not body or pos != len(body):
        raise RemoteProtocolError(f"not a Go duration: {value!r}", phase="cli", data=value.encode("utf-8", "replace"))
    return sign * total


@dataclass(frozen=True, slots=True)
class StreamStats:
    """What ``helix spectask stream`` reported at the end."""

    resolution: tuple[int, int] | None
    codec: str | None  # None: no `Codec:` line (no StreamInit and no frame set one)
    video_frames: int
    keyframes: int
    audio_frames: int
    average_fps: float
    instant_fps: int
    total_data: str
    elapsed_s: float
    end_reason: str | None  # "duration" | "interrupted" | "server_closed" | "connection_error" | None
    connection_error: str | None
    stream_init: tuple[int, int, int, str] | None  # (width, height, fps, codec name)
    video_bitrate: str | None = None
    avg_frame_size: str | None = None
    frame_size_range: tuple[str, str] | None = None
    batch_messages: int = 0
    cursor_updates: int = 0
    cli_error: str | None = None  # cobra's `Error: <msg>` after the statistics (exit 1), if any

    @property
    def error(self) -> str | None:
        """The stream's own error as the CLI printed it: the connection error, else cobra's error."""
        return self.connection_error or self.cli_error


def _required(regex: re.Pattern[str], block: str, label: str, text: str) -> re.Match[str]:
    match = regex.search(block)
    if match is None:
        raise _fail(f"the Final Statistics block has no {label!r} line", text)
    return match


def parse_stream_output(output: str | bytes) -> StreamStats:
    """Parse ``helix spectask stream`` stdout; only the block after ``📊 Final Statistics`` counts."""
    text = _text(output)
    try:
        return _parse_stream_output(text)
    except ValueError as exc:  # e.g. an absurdly long digit run
        raise _fail(f"malformed number in the stream output: {exc}", text) from None


def _parse_stream_output(text: str) -> StreamStats:
    headers = list(_FINAL_HEADER_RE.finditer(text))
    if not headers:
        raise _fail(f"no '{FINAL_STATISTICS}' block in the stream output ({len(text)} chars)", text)
    header = headers[-1]
    if header.group(1) is None:
        raise _fail("the Final Statistics header has no '(elapsed: …)'", text)
    elapsed_s = parse_go_duration(header.group(1))
    block = text[header.end() :]
    lines = block.split("\n")
    separators = [i for i, line in enumerate(lines) if line.strip() == SEPARATOR]
    if len(separators) >= 2:
        block = "\n".join(lines[separators[0] + 1 : separators[1]])

    frames = _required(_VIDEO_FRAMES_RE, block, "Video frames:", text)
    codec_match = _CODEC_RE.search(block)
    audio = _required(_AUDIO_FRAMES_RE, block, "Audio frames:", text)
    total = _required(_TOTAL_DATA_RE, block, "Total data:", text).group(1)
    instant = _required(_INSTANT_FPS_RE, block, "Instant FPS:", text)
    average_text = _required(_AVERAGE_FPS_RE, block, "Average FPS:", text).group(1)
    try:
        average = float(average_text)
    except ValueError:
        raise _fail(f"Average FPS {average_text!r} is not a number", text) from None
    resolution = _RESOLUTION_RE.search(block)
    bitrate = _VIDEO_BITRATE_RE.search(block)
    avg_frame = _AVG_FRAME_RE.search(block)
    frame_range = _FRAME_RANGE_RE.search(block)
    batch = _BATCH_RE.search(block)
    cursor = _CURSOR_RE.search(block)

    before = text[: header.start()]
    end_reason, connection_error, end_pos = None, None, -1
    for reason, regex in _END_REASONS:
        for match in regex.finditer(before):
            if match.start() > end_pos:
                end_pos, end_reason = match.start(), reason
                connection_error = match.group(1) if reason == "connection_error" else None
    init = _STREAM_INIT_RE.search(text)

    return StreamStats(
        resolution=(int(resolution.group(1)), int(resolution.group(2))) if resolution else None,
        codec=codec_match.group(1) if codec_match else None,
        video_frames=int(frames.group(1)),
        keyframes=int(frames.group(2) or 0),
        audio_frames=int(audio.group(1)),
        average_fps=average,
        instant_fps=int(instant.group(1)),
        total_data=total,
        elapsed_s=elapsed_s,
        end_reason=end_reason,
        connection_error=connection_error,
        stream_init=(int(init.group(1)), int(init.group(2)), int(init.group(3)), init.group(4)) if init else None,
        video_bitrate=bitrate.group(1) if bitrate else None,
        avg_frame_size=avg_frame.group(1) if avg_frame else None,
        frame_size_range=(frame_range.group(1), frame_range.group(2)) if frame_range else None,
        batch_messages=int(batch.group(1)) if batch else 0,
        cursor_updates=int(cursor.group(1)) if cursor else 0,
        cli_error=parse_error_output(text[header.end() :]),
    )


@dataclass(frozen=True, slots=True)
class StartResult:
    """``helix spectask start``: the session id (``--wait`` success), the task id, and the 3-min timeout form."""

    session_id: str | None
    task_id: str | None
    still_provisioning: bool = False


def parse_start_output(output: str | bytes) -> StartResult:
    """Parse ``spectask start`` stdout (quiet or verbose). No ``ses_``/``spt_`` id → ``RemoteProtocolError``."""
    text = _text(output)
    session = _SESSION_VERBOSE_RE.search(text) or _SESSION_QUIET_RE.search(text)
    task = None
    for regex in _TASK_RES:
        match = regex.search(text)
        if match:
            task = match.group(1)
            break
    if session is None and task is None:
        raise _fail("no session id (ses_…) or task id (spt_…) in the spectask start output", text)
    return StartResult(
        session_id=session.group(1) if session else None,
        task_id=task,
        still_provisioning=bool(_STILL_PROVISIONING_RE.search(text)),
    )


def parse_error_output(output: str | bytes) -> str | None:
    """The message of cobra's ``Error: <msg>`` (printed before the usage text), or None."""
    text = _text(output)
    usages = list(_USAGE_RE.finditer(text))
    if usages:
        head = text[: usages[-1].start()]
        errors = list(_ERROR_LINE_RE.finditer(head))
        if errors:
            return head[errors[-1].start() + len("Error: ") :].rstrip("\n")
    errors = list(_ERROR_LINE_RE.finditer(text))
    return errors[-1].group(1) if errors else None


# ---------------------------------------------------------------- cobra --help

#: ``--runtime`` values of the newer CLI (upstream-corrections.md §2); a headless task has no stream.
RUNTIME_DESKTOP = "ubuntu-desktop"
RUNTIMES = (RUNTIME_DESKTOP, "headless-ubuntu")

_FLAGS_HEADER_RE = re.compile(r"^(?:Global )?Flags:[ \t]*$", re.M)
# pflag FlagUsagesWrapped: "  -a, --agent string   usage" / "      --wait   usage" (2+ spaces before usage).
_FLAG_LINE_RE = re.compile(
    r"^ {2}(?:-(?P<short>[^\s-]), | {4})--(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,63})"
    r"(?: (?P<type>[A-Za-z0-9_]{1,32}))?(?: {2,}(?P<usage>[^\n]*))?$"
)
_DEFAULT_RE = re.compile(r' \(default (?P<value>"[^"\n]{0,256}"|[^)\n]{0,256})\)$')
_CHOICES_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}(?:\|[a-z0-9][a-z0-9-]{0,63}){1,16}")


@dataclass(frozen=True, slots=True)
class HelpFlag:
    """One flag of a cobra ``--help``: ``type`` is pflag's type name (None for a bool flag)."""

    name: str
    shorthand: str | None
    type: str | None
    usage: str
    default: str | None = None


def parse_help_flags(output: str | bytes) -> dict[str, HelpFlag]:
    """The flags of a cobra ``--help`` text (its ``Flags:`` and ``Global Flags:`` sections), by long name.

    Output without a ``Flags:`` section (e.g. cobra's ``Error: unknown command …``) raises
    ``RemoteProtocolError`` with the CLI's error.
    """
    text = _text(output)
    sections = list(_FLAGS_HEADER_RE.finditer(text))
    if not sections:
        raise _fail("no 'Flags:' section in the --help output", text)
    flags: dict[str, HelpFlag] = {}
    for header in sections:
        for line in text[header.end() + 1 :].split("\n"):
            if not line.strip():
                break
            match = _FLAG_LINE_RE.match(line[:4096])
            if match is None:
                continue  # a wrapped usage line
            usage = (match.group("usage") or "").rstrip()
            default = _DEFAULT_RE.search(usage)
            value = default.group("value") if default else None
            if value and value.startswith('"'):
                value = value[1:-1]
            name = match.group("name")
            flags.setdefault(name, HelpFlag(name, match.group("short"), match.group("type"), usage, value))
    return flags


@dataclass(frozen=True, slots=True)
class StartHelp:
    """What ``spectask start --help`` offers. The older CLI has ``--agent``; the newer one has no
    ``--agent`` and has ``--runtime ubuntu-desktop|headless-ubuntu`` (upstream-corrections.md §2)."""

    flags: dict[str, HelpFlag]

    @property
    def has_agent(self) -> bool:
        return "agent" in self.flags

    @property
    def has_runtime(self) -> bool:
        return "runtime" in self.flags

    @property
    def runtime_choices(self) -> tuple[str, ...]:
        """The ``--runtime`` values its usage text names (``a|b`` lists, else the known names), or ()."""
        flag = self.flags.get("runtime")
        if flag is None:
            return ()
        listed = _CHOICES_RE.search(flag.usage)
        if listed:
            return tuple(dict.fromkeys(listed.group().split("|")))
        return tuple(name for name in RUNTIMES if name in flag.usage)

    def has_flag(self, name: str) -> bool:
        return name in self.flags


def parse_start_help(output: str | bytes) -> StartHelp:
    """Parse ``helix spectask start --help`` (see ``StartHelp``); no ``Flags:`` → ``RemoteProtocolError``."""
    text = _text(output)
    flags = parse_help_flags(text)
    if "help" not in flags:
        raise _fail("the --help output lists no -h/--help flag: not cobra help", text)
    return StartHelp(flags)
