"""The simulated ``helix`` CLI: ``helix spectask …`` (alias ``st``) with the real CLI's output.

This reproduces ``api/pkg/cli/spectask`` of helixml/helix at 68f96d7 (cobra v1.10.2, pflag
v1.0.10, gorilla/websocket v1.5.3) byte for byte where the harness reads it: ``start``,
``stream``, ``exec``, ``stop``, ``list``, ``screenshot`` and ``resume``. It talks to the
simulator's Helix API over real HTTP (requests) and a real WebSocket (``websockets``), reading
``HELIX_URL`` and ``HELIX_API_KEY`` as the Go code does, and it keeps the Go CLI's quirks:

- cobra's error path: stdout gets ``Error: <msg>``, the usage text, then ``<msg>`` again; exit 1;
- ``start`` prints the TASK id unless ``--wait``; a ``--wait`` timeout still exits 0;
- ``stream`` counts every 0x01 message (GOP replay included), ignores 0x31 StreamError, sends
  its init JSON with Go's sorted keys, prints the live block every 2 s (not with ``-v``), and
  exits 0 on duration, signal or a 1000 close even with zero frames;
- Go's ``%v`` of durations, ``formatBytes``/``formatBits``, and Go's error strings for HTTP
  and WebSocket failures.

Frames are parsed the way the Go CLI parses them (offsets, no validation), not with the strict
``protocols.stream`` core: a short or odd message must be counted exactly as the CLI counts it.
The built "binary" is a launcher written by the guest's ``go`` shim (``helix_sim/guest``);
``HELIX_CLI_ARGV0`` carries its path into the usage text, as ``os.Args[0]`` does in Go.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Sequence
from urllib.parse import quote_plus, urlsplit

DEFAULT_URL = "http://localhost:8080"
DEFAULT_TOKEN = "oh-hallo-insecure-token"
USER_AGENT = "Go-http-client/1.1"
HEADER_RULE = "━" * 50
STATS_RULE = "─" * 47
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000

# --- Go formatting -----------------------------------------------------------------------------


def go_round(ns: int, unit: int) -> int:
    """time.Duration.Round: to the nearest multiple of ``unit``, halves away from zero."""
    if unit <= 0:
        return ns
    if ns < 0:
        r = (-ns) % unit
        return ns + r if r + r < unit else ns - unit + r
    r = ns % unit
    return ns - r if r + r < unit else ns + unit - r


def go_duration(ns: int) -> str:
    """time.Duration.String: "0s", "999ns", "1.5µs", "4ms", "1.203s", "30s", "1m2s", "1h0m0s"."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < NS_PER_S:
        if u < 1_000:
            return f"{sign}{u}ns"
        prec, unit = (3, "µs") if u < 1_000_000 else (6, "ms")
        whole, frac = divmod(u, 10**prec)
        frac_text = f"{frac:0{prec}d}".rstrip("0")
        return f"{sign}{whole}{'.' + frac_text if frac_text else ''}{unit}"
    secs, frac = divmod(u, NS_PER_S)
    frac_text = f"{frac:09d}".rstrip("0")
    text = f"{secs % 60}{'.' + frac_text if frac_text else ''}s"
    minutes = secs // 60
    if minutes:
        text = f"{minutes % 60}m{text}"
        hours = minutes // 60
        if hours:
            text = f"{hours}h{text}"
    return sign + text


def _go_units(b: int, unit: int, letters: str, small: str, suffix: str) -> str:
    """spectask.go's formatBytes/formatBits loop: divide by ``unit`` while the quotient is ≥ ``unit``."""
    if b < unit:
        return f"{b} {small}"
    div, exp = unit, 0
    n = b // unit
    while n >= unit:
        div *= unit
        exp += 1
        n //= unit
    return f"{b / div:.1f} {letters[min(exp, len(letters) - 1)]}{suffix}"


def format_bytes(b: int) -> str:
    """spectask.go formatBytes: base 1024, "%d B" or "%.1f %cB"."""
    return _go_units(b, 1024, "KMGTPE", "B", "B")


def format_bits(b: int) -> str:
    """spectask.go formatBits: base 1000, "%d bps" or "%.1f %cbps"."""
    return _go_units(b, 1000, "KMG", "bps", "bps")


_CODECS = {0x01: "H.264", 0x02: "H.264 High 4:4:4", 0x10: "HEVC", 0x11: "HEVC Main10", 0x20: "AV1", 0x21: "AV1 10bit"}
_PROFILES = {66: "Baseline", 77: "Main", 88: "Extended", 100: "High", 110: "High 10", 122: "High 4:2:2",
             244: "High 4:4:4 Predictive"}


def codec_name(codec: int) -> str:
    return _CODECS.get(codec, f"Unknown(0x{codec:02x})")


def profile_name(profile_idc: int) -> str:
    return _PROFILES.get(profile_idc, f"Unknown({profile_idc})")


@dataclass(frozen=True, slots=True)
class SpsInfo:
    profile_idc: int
    constraint_byte: int
    level_idc: int

    def flag(self, n: int) -> int:
        """constraint_set<n>_flag (n = 0..5)."""
        return (self.constraint_byte >> (7 - n)) & 1


def parse_sps(data: bytes) -> SpsInfo | None:
    """spectask.go parseSPSFromH264: the first SPS after a 4- or 3-byte start code."""
    for i in range(len(data) - 4):
        if data[i] == 0 and data[i + 1] == 0 and data[i + 2] == 0 and data[i + 3] == 1:
            if i + 4 < len(data) and data[i + 4] & 0x1F == 7 and i + 7 < len(data):
                return SpsInfo(data[i + 5], data[i + 6], data[i + 7])
        if data[i] == 0 and data[i + 1] == 0 and data[i + 2] == 1:
            if i + 3 < len(data) and data[i + 3] & 0x1F == 7 and i + 6 < len(data):
                return SpsInfo(data[i + 4], data[i + 5], data[i + 6])
    return None


def go_json(value: Any) -> str:
    """encoding/json.Marshal of maps/slices/scalars: sorted map keys, compact, HTML-escaped."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def go_quote(text: str) -> str:
    """strconv.Quote (%q)."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\a":
            out.append("\\a")
        elif ch == "\b":
            out.append("\\b")
        elif ch == "\f":
            out.append("\\f")
        elif ch == "\v":
            out.append("\\v")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif not ch.isprintable():
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def go_quote_rune(ch: str) -> str:
    """%q of a byte/rune: 'x'."""
    return "'" + ("\\'" if ch == "'" else go_quote(ch)[1:-1].replace('\\"', '"')) + "'"


def _syscall_text(exc: OSError) -> str:
    """Go's syscall.Errno text: lower-case strerror ("no such file or directory")."""
    text = os.strerror(exc.errno) if exc.errno else str(exc)
    return text[:1].lower() + text[1:]


def go_json_decode(body: bytes) -> Any:
    """json.NewDecoder(body).Decode: the first JSON value, with Go's error texts."""
    text = body.decode("utf-8", errors="replace")
    stripped = text.lstrip(" \t\r\n")
    if not stripped:
        raise GoError("EOF")
    try:
        value, _ = json.JSONDecoder().raw_decode(stripped)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(stripped):
            raise GoError("unexpected EOF") from None
        ch = stripped[exc.pos]
        where = "looking for beginning of value" if exc.pos == 0 or exc.msg.startswith("Expecting value") else \
            "after object key" if "':'" in exc.msg else \
            "after object key:value pair" if "','" in exc.msg and "object" in exc.msg.lower() else \
            "looking for beginning of object key string" if "property name" in exc.msg else \
            "after array element" if "','" in exc.msg else "in literal"
        raise GoError(f"invalid character {go_quote_rune(ch)} {where}") from None
    return value


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


# --- errors and output -------------------------------------------------------------------------


class GoError(Exception):
    """An error a cobra RunE returns: ``message`` is its Error() text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class HelpRequested(Exception):
    """pflag's ErrHelp: print the command's help and exit 0."""


class Out:
    """Go writes straight to fd 1: every print is written and flushed at once, as UTF-8."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.lock = threading.RLock()

    def write(self, text: str | bytes) -> None:
        data = text.encode("utf-8") if isinstance(text, str) else text
        with self.lock:
            self._stream.write(data)
            self._stream.flush()


# --- cobra / pflag -----------------------------------------------------------------------------


@dataclass
class Flag:
    name: str
    kind: str  # bool | int | string | stringArray
    default: Any
    usage: str
    shorthand: str = ""
    hidden: bool = False

    @property
    def def_value(self) -> str:
        if self.kind == "bool":
            return "true" if self.default else "false"
        if self.kind == "stringArray":
            return "[" + ",".join(self.default or []) + "]"
        return str(self.default)

    def default_is_zero(self) -> bool:
        return self.def_value in {"bool": ("false", ""), "int": ("0",), "string": ("",), "stringArray": ("[]",)}[self.kind]

    @property
    def display(self) -> str:
        return f"-{self.shorthand}, --{self.name}" if self.shorthand else f"--{self.name}"


def _parse_go_int(text: str) -> int:
    """strconv.ParseInt(s, 0, 64)."""
    m = re.fullmatch(r"([+-]?)(0[xX](?:_?[0-9a-fA-F])+|0[bB](?:_?[01])+|0[oO](?:_?[0-7])+|0(?:_?[0-7])*|[1-9](?:_?[0-9])*)", text)
    if not m:
        raise GoError(f"strconv.ParseInt: parsing {go_quote(text)}: invalid syntax")
    body = m.group(2).replace("_", "")
    if len(body) > 1 and body[0] == "0" and body[1].isdigit():
        value = int(body, 8)
    else:
        value = int(body, 0)
    value = -value if m.group(1) == "-" else value
    if not -(2**63) <= value < 2**63:
        raise GoError(f"strconv.ParseInt: parsing {go_quote(text)}: value out of range")
    return value


def _parse_go_bool(text: str) -> bool:
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise GoError(f"strconv.ParseBool: parsing {go_quote(text)}: invalid syntax")


@dataclass
class Command:
    use: str
    short: str = ""
    long: str = ""
    aliases: tuple[str, ...] = ()
    args: Callable[[list[str]], str | None] | None = None
    run: Callable[["Context"], None] | None = None
    flags: list[Flag] = field(default_factory=list)
    children: list["Command"] = field(default_factory=list)
    parent: "Command | None" = None

    def __post_init__(self) -> None:
        self.flags.append(Flag("help", "bool", False, f"help for {self.name}", "h"))
        for child in self.children:
            child.parent = self

    @property
    def name(self) -> str:
        return self.use.split(" ", 1)[0]

    @property
    def command_path(self) -> str:
        return f"{self.parent.command_path} {self.name}" if self.parent else self.name

    @property
    def use_line(self) -> str:
        line = f"{self.parent.command_path} {self.use}" if self.parent else self.use
        return line if "[flags]" in line else line + " [flags]"

    def find_child(self, name: str) -> "Command | None":
        for child in self.children:
            if name == child.name or name in child.aliases:
                return child
        return None

    def usage_string(self) -> str:
        """cobra 1.10 defaultUsageFunc."""
        out = ["Usage:"]
        if self.run is not None:
            out.append(f"\n  {self.use_line}")
        if self.children:
            out.append(f"\n  {self.command_path} [command]")
        if self.aliases:
            out.append("\n\nAliases:\n  " + ", ".join((self.name, *self.aliases)))
        if self.children:
            out.append("\n\nAvailable Commands:")
            pad = max(11, max(len(c.name) for c in self.children))
            for child in sorted(self.children, key=lambda c: c.name):
                out.append(f"\n  {child.name.ljust(pad)} {child.short}")
        out.append("\n\nFlags:\n")
        out.append(flag_usages(self.flags).rstrip())
        if self.children:
            out.append(f'\n\nUse "{self.command_path} [command] --help" for more information about a command.')
        out.append("\n")
        return "".join(out)

    def help_string(self) -> str:
        text = (self.long or self.short).rstrip()
        head = f"{text}\n\n" if text else ""
        return head + self.usage_string()


def flag_usages(flags: Sequence[Flag]) -> str:
    """pflag FlagUsagesWrapped(0): sorted, aligned, defaults shown when not zero."""
    lines: list[str] = []
    maxlen = 0
    for flag in sorted(flags, key=lambda f: f.name):
        if flag.hidden:
            continue
        line = f"  -{flag.shorthand}, --{flag.name}" if flag.shorthand else f"      --{flag.name}"
        varname = {"bool": "", "int": "int", "string": "string", "stringArray": "stringArray"}[flag.kind]
        if varname:
            line += " " + varname
        line += "\x00"
        maxlen = max(maxlen, len(line.encode()))
        line += flag.usage
        if not flag.default_is_zero():
            line += f" (default {go_quote(flag.def_value)})" if flag.kind == "string" else f" (default {flag.def_value})"
        lines.append(line)
    out = []
    for line in lines:
        head, _, usage = line.partition("\x00")
        spacing = " " * (maxlen - len(head.encode()))
        out.append(f"{head} {spacing} {usage}\n")
    return "".join(out)


def exact_args(n: int) -> Callable[[list[str]], str | None]:
    return lambda args: None if len(args) == n else f"accepts {n} arg(s), received {len(args)}"


def maximum_args(n: int) -> Callable[[list[str]], str | None]:
    return lambda args: None if len(args) <= n else f"accepts at most {n} arg(s), received {len(args)}"


def minimum_args(n: int) -> Callable[[list[str]], str | None]:
    return lambda args: None if len(args) >= n else f"requires at least {n} arg(s), only received {len(args)}"


def parse_flags(cmd: Command, argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """pflag FlagSet.Parse with interspersed args."""
    values: dict[str, Any] = {f.name: list(f.default or []) if f.kind == "stringArray" else f.default for f in cmd.flags}
    long = {f.name: f for f in cmd.flags}
    short = {f.shorthand: f for f in cmd.flags if f.shorthand}
    args: list[str] = []

    def set_value(flag: Flag, raw: str) -> None:
        try:
            if flag.kind == "bool":
                values[flag.name] = _parse_go_bool(raw)
            elif flag.kind == "int":
                values[flag.name] = _parse_go_int(raw)
            elif flag.kind == "stringArray":
                values[flag.name].append(raw)
            else:
                values[flag.name] = raw
        except GoError as exc:
            raise GoError(f"invalid argument {go_quote(raw)} for {go_quote(flag.display)} flag: {exc.message}") from None

    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg or arg[0] != "-" or len(arg) == 1:
            args.append(arg)
            continue
        if arg[1] == "-":
            if len(arg) == 2:
                args.extend(argv[i:])
                break
            name = arg[2:]
            if name[0] in "-=":
                raise GoError(f"bad flag syntax: {arg}")
            name, eq, value = name.partition("=")
            flag = long.get(name)
            if flag is None:
                raise GoError(f"unknown flag: --{name}")
            if eq:
                set_value(flag, value)
            elif flag.kind == "bool":
                set_value(flag, "true")
            elif i < len(argv):
                set_value(flag, argv[i])
                i += 1
            else:
                raise GoError(f"flag needs an argument: {arg}")
            continue
        shorthands = arg[1:]
        while shorthands:
            c = shorthands[0]
            flag = short.get(c)
            if flag is None:
                raise GoError(f"unknown shorthand flag: {go_quote_rune(c)} in -{shorthands}")
            if len(shorthands) > 2 and shorthands[1] == "=":
                set_value(flag, shorthands[2:])
                shorthands = ""
            elif flag.kind == "bool":
                set_value(flag, "true")
                shorthands = shorthands[1:]
            elif len(shorthands) > 1:
                set_value(flag, shorthands[1:])
                shorthands = ""
            elif i < len(argv):
                set_value(flag, argv[i])
                i += 1
                shorthands = ""
            else:
                raise GoError(f"flag needs an argument: {go_quote_rune(c)} in -{shorthands}")
    return values, args


@dataclass
class Context:
    """What a RunE sees: parsed flags, positional args, env, and stdout."""

    cmd: Command
    flags: dict[str, Any]
    args: list[str]
    env: dict[str, str]
    out: Out

    def print(self, text: str) -> None:
        self.out.write(text)

    @property
    def api_url(self) -> str:
        return self.env.get("HELIX_URL") or DEFAULT_URL

    @property
    def token(self) -> str:
        return self.env.get("HELIX_API_KEY") or DEFAULT_TOKEN


def execute(root: Command, argv: list[str], env: dict[str, str], out: Out) -> int:
    """cobra Command.ExecuteC + helix's FatalErrorHandler: 0 on success, 1 on any error."""
    cmd = root
    rest = list(argv)
    # Command lookup: leading non-flag words name subcommands (cobra's Find).
    while True:
        idx = next((k for k, a in enumerate(rest) if not a.startswith("-")), None)
        if idx is None or idx != 0:
            break
        child = cmd.find_child(rest[0])
        if child is None:
            if cmd is root and cmd.children:
                msg = f"unknown command {go_quote(rest[0])} for {go_quote(cmd.command_path)}"
                out.write(f"Error: {msg}\nRun '{cmd.command_path} --help' for usage.\n{msg}\n")
                return 1
            break
        cmd = child
        rest = rest[1:]
    try:
        flags, args = parse_flags(cmd, rest)
        if flags.get("help"):
            raise HelpRequested
        if cmd.run is None:
            raise HelpRequested
        if cmd.args is not None:
            problem = cmd.args(args)
            if problem:
                raise GoError(problem)
        cmd.run(Context(cmd, flags, args, env, out))
        return 0
    except HelpRequested:
        out.write(cmd.help_string())
        return 0
    except GoError as exc:
        msg = exc.message
        out.write(f"Error: {msg}\n{cmd.usage_string()}\n{msg if msg.endswith(chr(10)) else msg + chr(10)}")
        return 1


# --- HTTP --------------------------------------------------------------------------------------


def _dial_address(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addr = info[0][4][0]
    except (socket.gaierror, IndexError):
        addr = host
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _net_error_text(url: str, exc: BaseException) -> str:
    """The net.OpError text Go shows for a failed dial/read."""
    host = urlsplit(url).hostname or ""
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for item in chain:
        if isinstance(item, socket.gaierror):
            return f"dial tcp: lookup {host}: no such host"
        if isinstance(item, ConnectionRefusedError):
            return f"dial tcp {_dial_address(url)}: connect: connection refused"
        if isinstance(item, ConnectionResetError):
            return f"read tcp {_dial_address(url)}: read: connection reset by peer"
        if isinstance(item, OSError) and item.errno == errno.EHOSTUNREACH:
            return f"dial tcp {_dial_address(url)}: connect: no route to host"
    text = str(exc)
    if "Name or service not known" in text or "nodename nor servname" in text or "Failed to resolve" in text:
        return f"dial tcp: lookup {host}: no such host"
    if "Connection refused" in text:
        return f"dial tcp {_dial_address(url)}: connect: connection refused"
    return text


class Http:
    """net/http.Client as the CLI uses it: one request per call, Go's error texts."""

    def __init__(self, token: str) -> None:
        import requests  # noqa: PLC0415 - keeps `--help` and usage errors fast

        self._requests = requests
        self.session = requests.Session()
        self.session.trust_env = False  # Go never proxies loopback; the sim is loopback
        self.session.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "gzip"})
        self.token = token

    def request(self, method: str, url: str, *, body: bytes | None = None, content_type: str | None = None,
                timeout: float | None = None) -> tuple[int, bytes, dict[str, str]]:
        headers = {"Authorization": "Bearer " + self.token}
        if content_type:
            headers["Content-Type"] = content_type
        op = method[:1] + method[1:].lower()
        try:
            resp = self.session.request(method, url, data=body if body is not None else None, headers=headers,
                                        timeout=timeout, allow_redirects=True)
            return resp.status_code, resp.content, dict(resp.headers)
        except self._requests.exceptions.Timeout:
            raise GoError(f"{op} {go_quote(url)}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)") from None
        except self._requests.exceptions.InvalidURL:
            raise GoError(f"{op} {go_quote(url)}: unsupported protocol scheme") from None
        except self._requests.exceptions.MissingSchema:
            raise GoError(f'{op} {go_quote(url)}: unsupported protocol scheme ""') from None
        except self._requests.exceptions.RequestException as exc:
            raise GoError(f"{op} {go_quote(url)}: {_net_error_text(url, exc)}") from None


# --- spectask start ------------------------------------------------------------------------------


def _task_url(api_url: str, task: dict[str, Any], project_fallback: str) -> str:
    project = _str(task.get("project_id")) or project_fallback
    org = _str(task.get("organization_id"))
    if not org or not project:
        return ""
    return f"{api_url.rstrip('/')}/orgs/{org}/projects/{project}/tasks/{_str(task.get('id'))}"


def _decode_object(body: bytes) -> dict[str, Any]:
    value = go_json_decode(body)
    if value is None:
        return {}
    if not isinstance(value, dict):
        kind = {list: "array", str: "string", bool: "bool"}.get(type(value), "number")
        raise GoError(f"json: cannot unmarshal {kind} into Go value of type spectask.SpecTask")
    return value


WAIT_TIMEOUT_S = 180.0
WAIT_POLL_S = 2.0


def _delay_scale() -> float:
    """The simulator's ``delay_scale`` (guest env ``HELIX_SIM_DELAY_SCALE``): scales modelled waits only."""
    try:
        value = float(os.environ.get("HELIX_SIM_DELAY_SCALE", "1"))
    except ValueError:
        return 1.0
    return value if 0.01 <= value <= 10 else 1.0


def run_start(ctx: Context) -> None:
    f = ctx.flags
    api_url, http = ctx.api_url, Http(ctx.token)
    quiet = f["quiet"]
    project = f["project"]
    if ctx.args:
        task_id = ctx.args[0]
    else:
        if not project:
            raise GoError("--project is required when creating a new task")
        if not quiet:
            ctx.print("Creating new spec task...\n")
        prompt = f["prompt"]
        if f["prompt-file"]:
            try:
                with open(f["prompt-file"], "rb") as fh:
                    data = fh.read().decode("utf-8", errors="replace")
            except OSError as exc:
                op = "read" if exc.errno == errno.EISDIR else "open"
                raise GoError(f"failed to read --prompt-file {go_quote(f['prompt-file'])}: "
                              f"{op} {f['prompt-file']}: {_syscall_text(exc)}") from None
            prompt = f"{prompt}\n\n{data}" if prompt else data
        if not prompt:
            prompt = "Testing RevDial connectivity"
        payload = {"name": f["name"], "prompt": prompt}
        if project:
            payload["project_id"] = project
        if f["agent"]:
            payload["app_id"] = f["agent"]
        try:
            status, body, _ = http.request("POST", api_url + "/api/v1/spec-tasks/from-prompt",
                                           body=go_json(payload).encode(), content_type="application/json")
            if status not in (200, 201):
                raise GoError(f"API returned {status}: {body.decode('utf-8', 'replace')}")
            task = _decode_object(body)
        except GoError as exc:
            raise GoError(f"failed to create spec task: {exc.message}") from None
        task_id = _str(task.get("id"))
        if not quiet:
            ctx.print(f"✅ Created spec task: {_str(task.get('name'))} (ID: {task_id})\n")
            if f["agent"]:
                ctx.print(f"   Agent: {f['agent']}\n")
        if f["attach"]:
            _upload_attachments(ctx, http, task_id, f["attach"])
            if not quiet:
                ctx.print(f"📎 Uploaded {len(f['attach'])} attachment(s)\n")

    if not quiet:
        ctx.print(f"Starting planning for task {task_id}...\n")
    try:
        status, body, _ = http.request("POST", f"{api_url}/api/v1/spec-tasks/{task_id}/start-planning", timeout=30)
        if status not in (200, 201):
            raise GoError(f"API returned {status}: {body.decode('utf-8', 'replace')}")
        task = _decode_object(body)
    except GoError as exc:
        raise GoError(f"failed to start planning: {exc.message}") from None
    if not quiet:
        ctx.print(f"✅ Task status: {_str(task.get('status'))}\n")

    if not (f["wait"] and not f["no-wait"]):
        if quiet:
            ctx.print(task_id + "\n")
        else:
            ctx.print(f"\n✅ Task created — planning started: {task_id}\n")
            url = _task_url(api_url, task, project)
            if url:
                ctx.print(f"   Open in browser: {url}\n")
            ctx.print("   The sandbox provisions in the background; the page shows it loading.\n")
        return

    if not quiet:
        ctx.print("⏳ Waiting for sandbox to start (this takes ~15 seconds)...\n")
    session = _wait_for_task_session(ctx, http, task_id, WAIT_TIMEOUT_S)
    if session is None:
        if quiet:
            ctx.print(task_id + "\n")
        else:
            ctx.print(f"\n⏳ Task created ({task_id}) — sandbox still provisioning after 3m.\n")
            url = _task_url(api_url, task, project)
            if url:
                ctx.print(f"   Open in browser: {url}\n")
        return
    sid = _str(session.get("id"))
    if quiet:
        ctx.print(sid + "\n")
    else:
        ctx.print(
            "\n✅ Sandbox is running!\n"
            f"   Session ID: {sid}\n"
            "\n📺 Connect to Desktop:\n"
            f"   Open in browser: {api_url}/sessions/{sid}\n"
            "\n📷 Test screenshot:\n"
            f"   helix spectask screenshot {sid}\n"
        )


def _upload_attachments(ctx: Context, http: Http, task_id: str, files: list[str]) -> None:
    import uuid  # noqa: PLC0415

    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for path in files:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise GoError(f"failed to upload attachments: read {go_quote(path)}: open {path}: {_syscall_text(exc)}") from None
        name = os.path.basename(path).replace('"', "%22")
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    try:
        status, resp, _ = http.request("POST", f"{ctx.api_url}/api/v1/spec-tasks/{task_id}/attachments", body=body,
                                       content_type=f"multipart/form-data; boundary={boundary}")
    except GoError as exc:
        raise GoError(f"failed to upload attachments: {exc.message}") from None
    if status not in (200, 201):
        raise GoError(f"failed to upload attachments: attachments API returned {status}: {resp.decode('utf-8', 'replace')}")


def _wait_for_task_session(ctx: Context, http: Http, task_id: str, timeout: float) -> dict[str, Any] | None:
    """waitForTaskSession: poll every 2 s; ``None`` on timeout (the CLI still exits 0)."""
    deadline = time.monotonic() + timeout
    last_status = ""
    while time.monotonic() < deadline:
        try:
            status, body, _ = http.request("GET", f"{ctx.api_url}/api/v1/spec-tasks/{task_id}", timeout=10)
            if status == 200:
                task = _decode_object(body)
                sid = _str(task.get("planning_session_id"))
                if sid:
                    s_status, s_body, _ = http.request("GET", f"{ctx.api_url}/api/v1/sessions/{sid}", timeout=10)
                    if s_status == 200:
                        session = go_json_decode(s_body)
                        session = session if isinstance(session, dict) else {}
                        meta = session.get("config") if isinstance(session.get("config"), dict) else {}
                        message = _str(meta.get("status_message"))
                        if message and message != last_status:
                            ctx.print(f"   {message}\n")
                            last_status = message
                        if _str(meta.get("dev_container_id")) or _str(meta.get("container_id")):
                            return session
        except GoError:
            pass
        time.sleep(WAIT_POLL_S * _delay_scale())  # the CLI's fixed poll interval (spectask.go waitForTaskSession)
    return None


# --- list / stop / screenshot / resume ----------------------------------------------------------


def run_list(ctx: Context) -> None:
    http = Http(ctx.token)
    status, body, _ = http.request("GET", ctx.api_url + "/api/v1/sessions")
    try:
        data = go_json_decode(body)
    except GoError as exc:
        raise GoError(f"failed to parse sessions: {exc.message}") from None
    sessions = data.get("sessions") if isinstance(data, dict) else None
    ctx.print("Active Sessions with External Agents:\n\n")
    count = 0
    for s in sessions if isinstance(sessions, list) else []:
        if not isinstance(s, dict):
            continue
        meta = s.get("metadata") if isinstance(s.get("metadata"), dict) else {}
        if _str(meta.get("dev_container_id")):
            count += 1
            sid = _str(s.get("session_id"))
            ctx.print(f"Session: {sid}\n  Type: {_str(s.get('type'))}\n")
            if _str(meta.get("container_name")):
                ctx.print(f"  Container: {_str(meta.get('container_name'))}\n")
            ctx.print(f"  Screenshot: helix spectask screenshot {sid}\n\n")
    if count == 0:
        ctx.print(
            "No sessions with active external agents found.\n"
            "\nTo start a session:\n"
            '  1. Fork a sample project:  helix project fork modern-todo-app --name "My Project"\n'
            '  2. Create a spec task:     helix spectask start <project-id> -n "Task Name"\n'
        )
    else:
        ctx.print(f"Found {count} session(s) with external agents.\n")


def _stop_session(ctx: Context, http: Http, sid: str) -> None:
    ctx.print(f"Stopping session {sid}...\n")
    try:
        status, body, _ = http.request("DELETE", f"{ctx.api_url}/api/v1/sessions/{sid}/stop-external-agent", timeout=30)
    except GoError as exc:
        raise GoError(f"failed to stop session: {exc.message}") from None
    if status != 200:
        raise GoError(f"stop failed: {status} - {body.decode('utf-8', 'replace')}")
    ctx.print(f"Session {sid} stopped.\n")


def run_stop(ctx: Context) -> None:
    http = Http(ctx.token)
    if ctx.flags["all"]:
        status, body, _ = http.request("GET", ctx.api_url + "/api/v1/sessions")
        try:
            data = go_json_decode(body)
        except GoError as exc:
            raise GoError(f"failed to parse sessions: {exc.message}") from None
        stopped = 0
        for s in (data.get("sessions") or []) if isinstance(data, dict) else []:
            meta = s.get("metadata") if isinstance(s, dict) and isinstance(s.get("metadata"), dict) else {}
            if _str(meta.get("dev_container_id")):
                sid = _str(s.get("session_id"))
                try:
                    _stop_session(ctx, http, sid)
                    stopped += 1
                except GoError as exc:
                    ctx.print(f"Failed to stop {sid}: {exc.message}\n")
        ctx.print(f"\nStopped {stopped} session(s).\n")
        return
    if not ctx.args:
        raise GoError("session ID required (or use --all)")
    _stop_session(ctx, http, ctx.args[0])


def run_screenshot(ctx: Context) -> None:
    sid = ctx.args[0]
    ctx.print(f"Testing screenshot for session {sid}...\n")
    http = Http(ctx.token)
    try:
        status, body, _ = http.request("GET", f"{ctx.api_url}/api/v1/external-agents/{sid}/screenshot", timeout=15)
    except GoError as exc:
        raise GoError(f"failed to get screenshot: {exc.message}") from None
    if status != 200:
        raise GoError(f"screenshot request failed: {status} - {body.decode('utf-8', 'replace')}")
    filename = f"screenshot-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.jpg"
    try:
        with open(filename, "wb") as fh:
            fh.write(body)
    except OSError as exc:
        raise GoError(f"failed to save screenshot: open {filename}: {_syscall_text(exc)}") from None
    ctx.print(f"✅ Screenshot saved: {filename} ({len(body)} bytes)\n")


def run_resume(ctx: Context) -> None:
    sid = ctx.args[0]
    ctx.print(f"Resuming session {sid}...\n")
    http = Http(ctx.token)
    try:
        status, body, _ = http.request("POST", f"{ctx.api_url}/api/v1/sessions/{sid}/resume", timeout=60)
    except GoError as exc:
        raise GoError(f"failed to resume session: {exc.message}") from None
    if status != 200:
        raise GoError(f"resume failed: {status} - {body.decode('utf-8', 'replace')}")
    try:
        result = go_json_decode(body)
    except GoError as exc:
        raise GoError(f"failed to parse response: {exc.message}") from None
    ctx.print("✅ Session resumed successfully!\n")
    if isinstance(result, dict) and isinstance(result.get("dev_container_id"), str):
        ctx.print(f"   Container ID: {result['dev_container_id']}\n")


# --- exec --------------------------------------------------------------------------------------


def run_exec(ctx: Context) -> None:
    sid, command = ctx.args[0], ctx.args[1:]
    env: dict[str, str] = {}
    for item in ctx.flags["env"]:
        key, eq, value = item.partition("=")
        if not eq:
            raise GoError(f"invalid environment variable format: {item} (expected KEY=VALUE)")
        env[key] = value
    # ExecRequest field order (command, background, env); omitempty drops false/empty.
    payload = '{"command":' + go_json(command)
    if ctx.flags["background"]:
        payload += ',"background":true'
    if env:
        payload += ',"env":' + go_json(env)
    payload += "}"
    timeout = ctx.flags["timeout"]
    http = Http(ctx.token)
    try:
        status, body, _ = http.request("POST", f"{ctx.api_url}/api/v1/external-agents/{sid}/exec",
                                       body=payload.encode(), content_type="application/json",
                                       timeout=timeout if timeout > 0 else None)
    except GoError as exc:
        raise GoError(f"request failed: {exc.message}") from None
    if status not in (200, 201):
        raise GoError(f"exec API returned {status}: {body.decode('utf-8', 'replace')}")
    output, error, exit_code = "", "", 0
    try:
        result = json.loads(body.decode("utf-8"))
        if not isinstance(result, dict):
            raise ValueError("not an object")
        output, error = _str(result.get("output")), _str(result.get("error"))
        code = result.get("exit_code")
        exit_code = code if isinstance(code, int) and not isinstance(code, bool) else 0
    except (ValueError, UnicodeDecodeError):
        output = body.decode("utf-8", "replace")  # not JSON: the body is the output
    if error:
        ctx.print(f"Error: {error}\n")
        if exit_code != 0:
            raise GoError(f"command exited with code {exit_code}")
        raise GoError("command failed")
    if output:
        ctx.print(output if output.endswith("\n") else output + "\n")
    if ctx.flags["background"]:
        ctx.print("Command started in background\n")


# --- stream ------------------------------------------------------------------------------------

#: The stream command's ticker: a Live Statistics block this often (without -v).
STATS_INTERVAL_S = 2.0
MSG_VIDEO, MSG_AUDIO, MSG_BATCH, MSG_STREAM_INIT, MSG_PONG, MSG_CURSOR = 0x01, 0x02, 0x03, 0x30, 0x41, 0x50
_CLOSE_NAMES = {
    1000: "normal", 1001: "going away", 1002: "protocol error", 1003: "unsupported data", 1005: "no status",
    1006: "abnormal closure", 1007: "invalid payload data", 1008: "policy violation", 1009: "message too big",
    1010: "mandatory extension missing", 1011: "internal server error", 1015: "TLS handshake error",
}


def close_error_text(code: int, reason: str = "") -> str:
    """gorilla/websocket CloseError.Error()."""
    text = f"websocket: close {code}"
    if code in _CLOSE_NAMES:
        text += f" ({_CLOSE_NAMES[code]})"
    if reason:
        text += f": {reason}"
    return text


def _clock() -> str:
    now = _dt.datetime.now()
    return now.strftime("%H:%M:%S.") + f"{now.microsecond // 1000:03d}"


def render_cursor_ascii(data: bytes, width: int, height: int, stride: int, fmt: int, max_size: int) -> tuple[str, str]:
    """spectask.go renderCursorASCII."""
    if width == 0 or height == 0 or len(data) < 4:
        return "", ""
    chars = " ░▒▓█"

    def rgba(p: bytes) -> tuple[int, int, int, int]:
        if fmt == 0x34325241:  # ARGB8888: A,R,G,B bytes
            return p[1], p[2], p[3], p[0]
        if fmt == 0x34324142:  # BGRA8888
            return p[2], p[1], p[0], p[3]
        if fmt == 0x34324241:  # ABGR8888
            return p[3], p[2], p[1], p[0]
        return p[0], p[1], p[2], p[3]  # RGBA8888 and default

    step_x = max(1, (width + max_size - 1) // max_size)
    step_y = max(1, (height + max_size - 1) // max_size)
    out_w = (width + step_x - 1) // step_x
    out_h = (height + step_y - 1) // step_y
    samples = ["Sample pixels (first 8): "]
    for i in range(8):
        if i * 4 + 3 >= len(data):
            break
        r, g, b, a = rgba(data[i * 4:i * 4 + 4])
        samples.append(("" if i == 0 else " ") + f"({r},{g},{b},{a})")
    art: list[str] = []
    for y in range(out_h):
        src_y = y * step_y
        if src_y >= height:
            break
        for x in range(out_w):
            src_x = x * step_x
            if src_x >= width:
                break
            idx = src_y * stride + src_x * 4
            if idx + 3 >= len(data) or idx < 0:
                art.append(" ")
                continue
            r, g, b, a = rgba(data[idx:idx + 4])
            if a == 0:
                art.append(" ")
                continue
            combined = (a + (r + g + b) // 3) // 2
            art.append(chars[min(len(chars) - 1, max(0, combined * (len(chars) - 1) // 255))])
        art.append("\n")
    return "".join(art), "".join(samples)


@dataclass
class StreamStats:
    """videoStreamStats, and the message handling of the stream command's reader goroutine."""

    start_ns: int
    total_messages: int = 0
    total_bytes: int = 0
    video_frames: int = 0
    video_bytes: int = 0
    audio_frames: int = 0
    audio_bytes: int = 0
    keyframes: int = 0
    batch_count: int = 0
    min_frame_size: int = 0
    max_frame_size: int = 0
    codec: int = 0
    width: int = 0
    height: int = 0
    fps: int = 0
    current_second: int = 0
    current_second_fps: int = 0
    last_second_fps: int = 0
    cursor_messages: int = 0
    last_cursor_width: int = 0
    last_cursor_height: int = 0
    last_cursor_hotspot_x: int = 0
    last_cursor_hotspot_y: int = 0

    def on_message(self, binary: bool, data: bytes, now_ns: int, *, verbose: bool = False,
                   emit: Callable[[str], None] = lambda s: None, out_file: IO[bytes] | None = None,
                   clock: Callable[[], str] = _clock) -> None:
        self.total_messages += 1
        self.total_bytes += len(data)
        if not binary:
            if verbose:
                emit(f"[{clock()}] Control: {data[:100].decode('utf-8', 'replace')}\n")
            return
        if not data:
            return
        kind = data[0]
        if kind == MSG_VIDEO:
            self.video_frames += 1
            self.video_bytes += len(data)
            current_sec = (now_ns - self.start_ns) // NS_PER_S
            if current_sec != self.current_second:
                self.last_second_fps = self.current_second_fps
                self.current_second = current_sec
                self.current_second_fps = 1
            else:
                self.current_second_fps += 1
            if len(data) >= 15:
                codec, flags = data[1], data[2]
                keyframe = bool(flags & 0x01)
                if self.codec == 0:
                    self.codec = codec
                if keyframe:
                    self.keyframes += 1
                    sps = parse_sps(data[15:])
                    if sps is not None:
                        if self.keyframes == 1 or verbose:
                            flags_text = "".join(str(sps.flag(n)) for n in range(6))
                            emit(f"🔑 SPS: profile_idc={sps.profile_idc} ({profile_name(sps.profile_idc)}) "
                                 f"constraint_set=[{flags_text}] level={sps.level_idc // 10}.{sps.level_idc % 10} "
                                 f"(raw=0x{sps.constraint_byte:02x})\n")
                            if sps.flag(3):
                                emit("   ✅ constraint_set3_flag=1 (zero-latency decode enabled)\n")
                            else:
                                emit("   ⚠️  constraint_set3_flag=0 (decoder may buffer frames)\n")
                    elif self.keyframes == 1:
                        emit("⚠️  First keyframe: no SPS NAL found\n")
                size = len(data) - 15
                if size < self.min_frame_size or self.min_frame_size == 0:
                    self.min_frame_size = size
                if size > self.max_frame_size:
                    self.max_frame_size = size
                if verbose:
                    emit(f"[{clock()}] Video: {codec_name(codec)} {size} bytes ({'KEY' if keyframe else 'delta'})\n")
                if out_file is not None:
                    out_file.write(data[15:])
        elif kind == MSG_AUDIO:
            self.audio_frames += 1
            self.audio_bytes += len(data)
        elif kind == MSG_BATCH:
            if len(data) >= 3:
                count = data[1] << 8 | data[2]
                self.video_frames += count
                self.batch_count += 1
                if verbose:
                    emit(f"[{clock()}] Batch: {count} frames\n")
        elif kind == MSG_STREAM_INIT:
            if len(data) >= 13:
                self.codec = data[1]
                self.width = data[2] << 8 | data[3]
                self.height = data[4] << 8 | data[5]
                self.fps = data[6]
                emit(f"📺 StreamInit: {self.width}x{self.height}@{self.fps}fps ({codec_name(self.codec)})\n")
        elif kind == MSG_CURSOR:
            self._on_cursor(data, verbose, emit, clock)
        # 0x41 Pong: nothing; 0x31 StreamError and everything else: no case in the CLI.

    def _on_cursor(self, data: bytes, verbose: bool, emit: Callable[[str], None], clock: Callable[[], str]) -> None:
        self.cursor_messages += 1
        if len(data) < 25:
            return
        hot_x, hot_y, bitmap_size = struct.unpack_from("<III", data, 13)  # the CLI composes them unsigned
        if bitmap_size >= 16 and len(data) >= 41:
            fmt, width, height, stride = struct.unpack_from("<IIII", data, 25)
            self.last_cursor_width, self.last_cursor_height = width, height
            self.last_cursor_hotspot_x, self.last_cursor_hotspot_y = hot_x, hot_y
            end = min(25 + bitmap_size, len(data))
            pixels = data[41:end] if end >= 41 else b""
            if verbose or self.cursor_messages == 1:
                emit(f"\n🖱️  [{clock()}] Cursor #{self.cursor_messages}: {width}x{height} hotspot=({hot_x},{hot_y}) "
                     f"stride={stride} format=0x{fmt:08x} ({len(pixels)} bytes)\n")
                art, samples = render_cursor_ascii(pixels, width, height, stride, fmt, 24)
                if art:
                    emit(f"    {samples}\n")
                    for line in art.split("\n"):
                        if line:
                            emit(f"    |{line}|\n")
        elif verbose:
            emit(f"🖱️  [{clock()}] Cursor: no bitmap (hotspot=({hot_x},{hot_y}))\n")

    def render(self, elapsed_ns: int, *, final: bool) -> str:
        """printStats: the Live/Final Statistics block."""
        header = "📊 Final Statistics" if final else "📈 Live Statistics"
        lines = [f"\n{header} (elapsed: {go_duration(go_round(elapsed_ns, NS_PER_S))})\n", STATS_RULE + "\n"]
        if self.width > 0:
            lines.append(f"Resolution:         {self.width}x{self.height}\n")
        if self.codec > 0:
            lines.append(f"Codec:              {codec_name(self.codec)}\n")
        frames = f"Video frames:       {self.video_frames}"
        lines.append(frames + (f" ({self.keyframes} keyframes)\n" if self.keyframes > 0 else "\n"))
        lines.append(f"Audio frames:       {self.audio_frames}\n")
        lines.append(f"Total data:         {format_bytes(self.total_bytes)}\n")
        seconds = elapsed_ns / NS_PER_S
        if seconds > 0:
            instant = self.last_second_fps
            if instant == 0 and self.current_second_fps > 0:
                instant = self.current_second_fps
            mark = " ⚠️" if 0 < instant < 50 else " ✅" if instant >= 55 else ""
            lines.append(f"Instant FPS:        {instant} fps{mark}\n")
            lines.append(f"Average FPS:        {self.video_frames / seconds:.1f} fps\n")
            lines.append(f"Video bitrate:      {format_bits(int(self.video_bytes * 8 / seconds))}/s\n")
        if self.video_frames > 0:
            lines.append(f"Avg frame size:     {format_bytes(self.video_bytes // self.video_frames)}\n")
            lines.append(f"Frame size range:   {format_bytes(self.min_frame_size)} - {format_bytes(self.max_frame_size)}\n")
        if self.batch_count > 0:
            lines.append(f"Batch messages:     {self.batch_count}\n")
        if self.cursor_messages > 0:
            cursor = f"Cursor updates:     {self.cursor_messages}"
            if self.last_cursor_width > 0:
                cursor += (f" (last: {self.last_cursor_width}x{self.last_cursor_height} "
                           f"hotspot=({self.last_cursor_hotspot_x},{self.last_cursor_hotspot_y}))")
            lines.append(cursor + "\n")
        lines.append(STATS_RULE + "\n")
        return "".join(lines)


def init_message(session_id: str, width: int, height: int, fps: int, bitrate: int, video_mode: str = "") -> str:
    """The init text frame exactly as the CLI marshals it (a Go map: keys sorted)."""
    msg: dict[str, Any] = {
        "type": "init", "session_id": session_id, "width": width, "height": height, "fps": fps,
        "bitrate": bitrate, "packet_size": 1024, "play_audio_local": False, "video_supported_formats": 1,
    }
    if video_mode:
        msg["video_mode"] = video_mode
    return go_json(msg)


def _ws_dial_error(exc: BaseException, url: str) -> GoError:
    from websockets.exceptions import InvalidMessage, InvalidStatus, InvalidURI  # noqa: PLC0415

    if isinstance(exc, InvalidStatus):
        body = (exc.response.body or b"")[:1024].decode("utf-8", "replace")
        return GoError(f"WebSocket connection failed: websocket: bad handshake - {body}")
    if isinstance(exc, InvalidURI):
        return GoError("WebSocket connection failed: malformed ws or wss URL")
    if isinstance(exc, TimeoutError):
        return GoError(f"WebSocket connection failed: dial tcp {_dial_address(url)}: i/o timeout")
    if isinstance(exc, OSError):
        return GoError(f"WebSocket connection failed: {_net_error_text(url, exc)}")
    if isinstance(exc, InvalidMessage):
        # The server hung up instead of answering the upgrade: http.ReadResponse's EOF.
        eof = isinstance(exc.__cause__, EOFError)
        return GoError("WebSocket connection failed: " + ("EOF" if eof else "malformed HTTP response"))
    return GoError("WebSocket connection failed: websocket: bad handshake")


class _StreamRun:
    """The stream command's goroutines: a reader thread, the 2 s ticker, duration and signals."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.wake = threading.Event()
        self.signalled = False
        self.last_error: str | None = None
        self.stats: StreamStats | None = None
        self.local = self.remote = ""

    def emit(self, text: str) -> None:
        self.ctx.print(text)

    def run(self) -> None:
        from websockets.sync.client import connect  # noqa: PLC0415

        ctx, f = self.ctx, self.ctx.flags
        sid = ctx.args[0]
        duration, output, verbose = f["duration"], f["output"], f["verbose"]
        width, height, fps, bitrate, mode = f["width"], f["height"], f["fps"], f["bitrate"], f["video-mode"]
        ctx.print(f"📊 Video Stream for session {sid}\n{HEADER_RULE}\n")
        ws_url = ctx.api_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        stream_url = f"{ws_url}/api/v1/external-agents/{quote_plus(sid)}/ws/stream"
        ctx.print(f"WebSocket URL: {stream_url}\n")
        if duration > 0:
            ctx.print(f"Duration: {duration} seconds\n")
        if output:
            ctx.print(f"Output file: {output}\n")
        ctx.print(f"{HEADER_RULE}\n\n")

        t0 = time.monotonic_ns()
        try:
            opened = connect(stream_url, additional_headers={"Authorization": "Bearer " + ctx.token}, max_size=None,
                             open_timeout=10, ping_interval=None, close_timeout=2, compression=None, proxy=None,
                             user_agent_header=USER_AGENT)
        except Exception as exc:  # noqa: BLE001 - every dial failure becomes Go's error text
            raise _ws_dial_error(exc, stream_url) from None
        with opened as conn:
            try:
                self._stream(conn, t0, sid, duration, output, verbose, width, height, fps, bitrate, mode)
            finally:
                # Go's deferred conn.Close(): the TCP connection goes, with no close frame of its own.
                conn.close_timeout = 0.5
                _quiet(conn.socket.shutdown, socket.SHUT_RDWR)

    def _stream(self, conn: Any, t0: int, sid: str, duration: int, output: str, verbose: bool, width: int,
                height: int, fps: int, bitrate: int, mode: str) -> None:
        ctx = self.ctx
        try:
            self.local = "%s:%d" % conn.socket.getsockname()[:2]
            self.remote = "%s:%d" % conn.socket.getpeername()[:2]
        except OSError:
            pass
        ctx.print(f"✅ Connected in {go_duration(go_round(time.monotonic_ns() - t0, NS_PER_MS))}\n\n")
        if mode:
            ctx.print(f"📤 Sending init message ({width}x{height}@{fps}fps, {bitrate}kbps, mode={mode})...\n")
        else:
            ctx.print(f"📤 Sending init message ({width}x{height}@{fps}fps, {bitrate}kbps)...\n")
        try:
            conn.send(init_message(sid, width, height, fps, bitrate, mode))
        except Exception as exc:  # noqa: BLE001
            raise GoError(f"failed to send init: {self._read_error(exc)}") from None
        ctx.print("✅ Init sent, waiting for video frames...\n\n")
        out_file = None
        if output:
            try:
                out_file = open(output, "wb")  # noqa: SIM115 - closed below
            except OSError as exc:
                raise GoError(f"failed to create output file: open {output}: {_syscall_text(exc)}") from None
            ctx.print(f"📁 Writing video data to {output}\n\n")
        try:
            self.stats = StreamStats(start_ns=time.monotonic_ns())
            self._loop(conn, duration, verbose, width, height, out_file)
        finally:
            if out_file is not None:
                out_file.close()

    def _read_error(self, exc: BaseException) -> str:
        from websockets.exceptions import ConnectionClosed  # noqa: PLC0415

        if isinstance(exc, ConnectionClosed):
            if exc.rcvd is not None:
                return close_error_text(exc.rcvd.code, exc.rcvd.reason)
            cause = exc.__cause__
            if isinstance(cause, ConnectionResetError):
                return f"read tcp {self.local}->{self.remote}: read: connection reset by peer"
            return close_error_text(1006, "unexpected EOF")
        if isinstance(exc, ConnectionResetError):
            return f"read tcp {self.local}->{self.remote}: read: connection reset by peer"
        return str(exc)

    def _reader(self, conn: Any, verbose: bool, out_file: IO[bytes] | None) -> None:
        from websockets.exceptions import ConnectionClosed  # noqa: PLC0415

        assert self.stats is not None
        try:
            while True:
                try:
                    message = conn.recv()
                except ConnectionClosed as exc:
                    if not (exc.rcvd is not None and exc.rcvd.code == 1000):
                        self.last_error = self._read_error(exc)
                    return
                except Exception as exc:  # noqa: BLE001 - a read error ends the stream like gorilla's
                    self.last_error = self._read_error(exc)
                    return
                binary = isinstance(message, bytes)
                data = message if binary else message.encode("utf-8")
                with self.ctx.out.lock, self.lock:
                    self.stats.on_message(binary, data, time.monotonic_ns(), verbose=verbose, emit=self.emit,
                                          out_file=out_file)
        finally:
            self.done.set()
            self.wake.set()

    def _mouse_sweep(self, conn: Any, width: int, height: int) -> None:
        if self.done.wait(2):
            return
        sweep = 0
        while not self.done.is_set():
            sweep += 1
            self.emit(f"🖱️  Starting mouse sweep #{sweep}\n")
            for x in range(100, width - 100, 50):
                msg = struct.pack(">BBhhhh", 0x12, 1, x, height // 2, width, height)
                try:
                    conn.send(msg)
                except Exception as exc:  # noqa: BLE001
                    self.emit(f"❌ Mouse sweep error: {self._read_error(exc)}\n")
                    return
                if self.done.wait(0.05):
                    return
            if self.done.wait(3):
                return

    def _print_stats(self, final: bool) -> None:
        assert self.stats is not None
        with self.ctx.out.lock, self.lock:
            self.emit(self.stats.render(time.monotonic_ns() - self.stats.start_ns, final=final))

    def _close(self, conn: Any) -> threading.Thread:
        """Send close 1000 without waiting for the reply (Go's WriteMessage + deferred Close)."""
        t = threading.Thread(target=lambda: _quiet(conn.close, 1000, ""), name="ws-close", daemon=True)
        t.start()
        return t

    def _loop(self, conn: Any, duration: int, verbose: bool, width: int, height: int,
              out_file: IO[bytes] | None) -> None:
        ctx = self.ctx
        previous = {}

        def on_signal(signum: int, frame: Any) -> None:
            self.signalled = True
            self.wake.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, on_signal)
            except ValueError:  # not the main thread (in-process tests): no signal handling
                pass
        reader = threading.Thread(target=self._reader, args=(conn, verbose, out_file), name="ws-reader", daemon=True)
        reader.start()
        if ctx.flags["mouse-sweep"]:
            self.emit("🖱️  Mouse sweep enabled - moving mouse horizontally across middle of screen\n")
            threading.Thread(target=self._mouse_sweep, args=(conn, width, height), name="mouse-sweep",
                             daemon=True).start()
        start = time.monotonic()
        next_tick = start + STATS_INTERVAL_S
        end = start + duration if duration > 0 else None
        closer: threading.Thread | None = None
        try:
            while True:
                if self.signalled:
                    self.emit("\n🛑 Interrupted...\n")
                    closer = self._close(conn)
                    self._print_stats(True)
                    return
                if self.done.is_set():
                    reader.join()
                    if self.last_error is not None:
                        self.emit(f"\n❌ Connection error: {self.last_error}\n")
                        self._print_stats(True)
                        raise GoError(self.last_error)
                    self.emit("\n📭 Connection closed by server\n")
                    self._print_stats(True)
                    return
                now = time.monotonic()
                if end is not None and now >= end:
                    self.emit(f"\n⏰ Duration reached ({duration}s)\n")
                    closer = self._close(conn)
                    self._print_stats(True)
                    return
                if now >= next_tick:
                    if not verbose:
                        self._print_stats(False)
                    while next_tick <= now:  # a ticker drops the ticks it could not deliver
                        next_tick += STATS_INTERVAL_S
                    continue
                wait_until = next_tick if end is None else min(next_tick, end)
                self.wake.wait(max(0.0, wait_until - now))
                self.wake.clear()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if closer is not None:
                closer.join(timeout=3)


def _quiet(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - best-effort close of a finished stream
        pass


def run_stream(ctx: Context) -> None:
    _StreamRun(ctx).run()


def _not_simulated(ctx: Context) -> None:
    raise GoError(f"`helix spectask {ctx.cmd.name}` is not simulated by helix-e2e "
                  "(simulated: start, stream, exec, stop, list, screenshot, resume)")


# --- command tree --------------------------------------------------------------------------------

_START_LONG = """Start a spec task planning session which creates a sandbox desktop.

If no task-id is provided, a new spec task will be created.
Use --project to specify which project to create the task in.
Use --agent to specify which Helix agent/app to use (e.g., app_01xxx).

Example workflow:
  1. Fork a sample project:  helix project fork modern-todo-app --name "My Project"
  2. Start a spec task:      helix spectask start --project prj_xxx --agent app_xxx -n "Add dark mode"
  3. Connect via browser:    Visit /sessions/<session-id> to access the desktop"""

_STOP_LONG = """Stops a running sandbox session and its container.

Use --all to stop all sessions with external agents.

Examples:
  helix spectask stop ses_01xxx      # Stop specific session
  helix spectask stop --all          # Stop all sessions
"""

_STREAM_LONG = """Connects to the WebSocket video streaming protocol and displays real-time statistics.

This command streams raw H.264/HEVC/AV1 video frames directly over WebSocket.
This is ideal for testing and debugging the video pipeline.

Statistics displayed:
  - Frame rate (FPS)
  - Bitrate (Mbps)
  - Frame sizes and types (keyframe vs delta)
  - Resolution and codec
  - Keyframe count

Video modes:
  - shm:      Shared memory path (default, most compatible, 1-2 CPU copies)
  - native:   Native GStreamer DMA-BUF (requires GStreamer 1.24+, fewer copies)
  - zerocopy: pipewirezerocopysrc plugin (true zero-copy, requires plugin)

Examples:
  helix spectask stream ses_01xxx                             # Run until Ctrl+C (1080p default)
  helix spectask stream ses_01xxx --width 3840 --height 2160  # Stream at 4K resolution
  helix spectask stream ses_01xxx --duration 30               # Run for 30 seconds
  helix spectask stream ses_01xxx --output video.h264         # Save raw video to file
  helix spectask stream ses_01xxx --video-mode zerocopy       # Test zero-copy streaming
  helix spectask stream ses_01xxx --mouse-sweep               # Sweep mouse to trigger cursor updates
  helix spectask stream ses_01xxx -v                          # Verbose mode (show each frame)
"""

_EXEC_LONG = """Execute a command inside a running session container.

This command allows you to run arbitrary commands in the desktop container
associated with a Helix session. Useful for:
  - Running scripts or tools
  - Debugging container state
  - Setting up test environments
  - Installing dependencies

Examples:
  # Run a simple command
  helix spectask exec ses_01xxx ls -la /home/retro/work

  # Run a background process
  helix spectask exec ses_01xxx --background python3 server.py

  # Run with environment variables
  helix spectask exec ses_01xxx --env FOO=bar --env BAZ=qux printenv

  # Run a shell command
  helix spectask exec ses_01xxx bash -c "echo hello && pwd"
"""


def build_tree(argv0: str) -> Command:
    """The `helix` root with the `spectask` subtree (Use/Short/Args/flags as in the Go source)."""
    start = Command(
        "start [task-id]", "Start a spec task planning session (creates sandbox)", _START_LONG,
        args=maximum_args(1), run=run_start,
        flags=[
            Flag("name", "string", "CLI Test Task", "Task name", "n"),
            Flag("project", "string", "", "Project ID (required when creating new task)", "p"),
            Flag("agent", "string", "", "Agent ID to use (e.g., app_01xxx)", "a"),
            Flag("prompt", "string", "", "Task prompt/description"),
            Flag("prompt-file", "string", "", "Read the task prompt from a file (e.g. a design doc) — dispatch a full "
                 "brief without committing it to the repo. Appended after --prompt if both are set."),
            Flag("attach", "stringArray", [], "Attach file(s) to the task (repeatable). Uploaded as spec-task "
                 "attachments the agent reads at design/tasks/<task>/attachments/<name> — good for logs/large "
                 "context without bloating the prompt."),
            Flag("quiet", "bool", False, "Only output the task ID (session ID with --wait)", "q"),
            Flag("wait", "bool", False, "Block until the sandbox has booted, then print session-level connect info "
                 "(default: return immediately with the task URL — the browser page shows it loading)"),
            Flag("no-wait", "bool", False, "Deprecated: no-wait is now the default; kept as a no-op for back-compat",
                 hidden=True),
        ],
    )
    stream = Command(
        "stream <session-id>", "Connect to video stream and display real-time statistics", _STREAM_LONG,
        args=exact_args(1), run=run_stream,
        flags=[
            Flag("duration", "int", 0, "Run for specified seconds (0 = until interrupted)", "d"),
            Flag("output", "string", "", "Write raw video frames to file", "o"),
            Flag("verbose", "bool", False, "Print each frame received", "v"),
            Flag("width", "int", 1920, "Video stream width in pixels"),
            Flag("height", "int", 1080, "Video stream height in pixels"),
            Flag("fps", "int", 60, "Video stream frames per second"),
            Flag("bitrate", "int", 10000, "Video stream bitrate in kbps"),
            Flag("video-mode", "string", "", "Video capture mode: shm, native, or zerocopy (default: container env)"),
            Flag("mouse-sweep", "bool", False, "Sweep mouse horizontally across middle of screen to trigger cursor "
                 "shape changes"),
        ],
    )
    exec_cmd = Command(
        "exec <session-id> <command> [args...]", "Execute a command inside a session container", _EXEC_LONG,
        args=minimum_args(2), run=run_exec,
        flags=[
            Flag("background", "bool", False, "Run command in background (don't wait for output)"),
            Flag("env", "stringArray", [], "Environment variables (KEY=VALUE format, can be repeated)"),
            Flag("timeout", "int", 30, "Timeout in seconds (0 for no timeout)"),
        ],
    )
    stop = Command("stop <session-id>", "Stop a running sandbox session", _STOP_LONG, args=maximum_args(1),
                   run=run_stop, flags=[Flag("all", "bool", False, "Stop all sessions with external agents")])

    def stub(use: str, short: str, args: Callable[[list[str]], str | None] | None = None,
             aliases: tuple[str, ...] = ()) -> Command:
        return Command(use, short, aliases=aliases, args=args, run=_not_simulated)

    spectask = Command(
        "spectask", "Spec task testing and management", aliases=("st",),
        children=[
            start,
            Command("screenshot <session-id>", "Test screenshot endpoint (tests RevDial connectivity)",
                    args=exact_args(1), run=run_screenshot),
            Command("list", "List active spec task sessions with external agents", run=run_list),
            Command("resume <session-id>", "Resume an existing session (tests session restore functionality)",
                    args=exact_args(1), run=run_resume),
            stub("list-agents", "List agents (apps) in an organization", aliases=("agents",)),
            stream,
            stop,
            stub("interact <session-id>", "Interact with a Helix session - chat, view history, send prompts",
                 exact_args(1)),
            stub("live <session-id>", "Combined live view with video stream stats and session chat", exact_args(1)),
            stub("test", "Run automated tests against a session"),
            stub("send <session-id> <message>", "Send a message to a session and optionally wait for completion",
                 exact_args(2)),
            Command("mcp", "Direct MCP tool access for testing", children=[
                stub("session <session-id> <tool>", "Call Session MCP tools", exact_args(2)),
                stub("desktop <session-id> <tool>", "Call Desktop MCP tools", exact_args(2)),
                stub("list <session-id>", "List available MCP tools for a session", exact_args(1)),
            ]),
            stub("e2e", "Run end-to-end integration test"),
            stub("health", "Check system health and container status"),
            stub("keyboard-test <session-id>", "Test keyboard input over WebSocket stream", exact_args(1)),
            stub("scroll-test <session-id>", "Test scroll input over DirectInput WebSocket", exact_args(1)),
            stub("benchmark <session-id>", "Benchmark video streaming performance with GPU stress test",
                 exact_args(1)),
            stub("latency <session-id>", "Measure key-to-eyeball input latency", exact_args(1)),
            exec_cmd,
            stub("copy <session-id> <local-file>", "Copy a file into a session container", exact_args(2)),
        ],
    )
    return Command(argv0, "Helix", "Private GenAI Platform", children=[spectask])


# --- entry point -------------------------------------------------------------------------------


def load_dotenv(env: dict[str, str], path: str = ".env") -> None:
    """godotenv.Load(): KEY=value lines of ./.env, never overriding the environment."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, eq, value = line.partition("=")
        if not eq:
            continue
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        env.setdefault(key, value)


def main(argv: list[str] | None = None, *, stdout: IO[bytes] | None = None, env: dict[str, str] | None = None) -> int:
    """Run the CLI. As a process (``argv`` None) it reads ./.env as the Go binary does."""
    args = list(sys.argv[1:] if argv is None else argv)
    environ = dict(os.environ if env is None else env)
    argv0 = environ.pop("HELIX_CLI_ARGV0", "") or "helix"
    if argv is None:
        load_dotenv(environ)
    env = environ
    out = Out(stdout if stdout is not None else sys.stdout.buffer)
    return execute(build_tree(argv0), args, env, out)
