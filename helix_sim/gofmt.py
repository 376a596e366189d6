"""Go's formatting, once, for every simulated Go program: the guest's ``docker`` and ``helix`` CLIs, the
Docker engine (dockerd), the Helix API and desktop-bridge.

What the real programs print comes from Go's standard library (``time``, ``strconv``, ``encoding/json``,
``text/template``, ``syscall``) and from ``github.com/docker/go-units``; each helper names the function
it reproduces. Light on purpose (standard library only): the guest CLIs import it at start-up.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from typing import Any

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
#: Go's zero ``time.Time`` as RFC 3339 (dockerd's FinishedAt of a container that never stopped).
ZERO_TIME = "0001-01-01T00:00:00Z"


class GoError(Exception):
    """A Go ``error``: ``message`` is its Error() text; ``code`` is the exit status a CLI ends with."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# --- time.Duration -----------------------------------------------------------------------------


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


_DURATION_RE = re.compile(r"((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+")
_DURATION_PART_RE = re.compile(r"(\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> float | None:
    """time.ParseDuration of an unsigned duration ("1h30m", "1.5s", "300ms"), in seconds; None if not one."""
    if not _DURATION_RE.fullmatch(text):
        return None
    return sum(float(n) * _DURATION_UNITS[u] for n, _, u in _DURATION_PART_RE.findall(text))


def human_duration(seconds: float) -> str:
    """go-units HumanDuration, as docker prints `Up 3 seconds` / `5 minutes ago`."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    m = s // 60
    if m == 1:
        return "About a minute"
    if m < 60:
        return f"{m} minutes"
    h = round(s / 3600)
    if h == 1:
        return "About an hour"
    if h < 48:
        return f"{h} hours"
    if h < 24 * 7 * 2:
        return f"{h // 24} days"
    return f"{h // (24 * 7)} weeks"


# --- time.Time ---------------------------------------------------------------------------------


def rfc3339_nano(t_ns: int, *, fixed: bool = False) -> str:
    """time.RFC3339Nano in UTC (trailing zeros trimmed), or with ``fixed`` docker's 9-digit variant (logs).
    A time at or before the epoch is Go's zero time."""
    if t_ns <= 0:
        return ZERO_TIME
    secs, nanos = divmod(t_ns, NS_PER_S)
    base = datetime.fromtimestamp(secs, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{nanos:09d}"
    if not fixed:
        frac = frac.rstrip("0")
    return f"{base}.{frac}Z" if frac else f"{base}Z"


def rfc3339_seconds(t: float) -> str:
    """A ``time.Time`` marshalled to JSON (RFC 3339 nano, UTC) from seconds since the epoch (µs precision)."""
    return rfc3339_nano(round(t * 1_000_000) * 1000)


def rfc3339_millis(t: float) -> str:
    """slog's TextHandler time: RFC 3339 in UTC with milliseconds (2026-08-08T12:34:56.789Z)."""
    dt = datetime.fromtimestamp(t, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def clock_millis(now: datetime | None = None) -> str:
    """Local time formatted "15:04:05.000"."""
    now = datetime.now() if now is None else now
    return now.strftime("%H:%M:%S.") + f"{now.microsecond // 1000:03d}"


# --- strconv -----------------------------------------------------------------------------------


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


_GO_INT_RE = re.compile(
    r"([+-]?)(0[xX](?:_?[0-9a-fA-F])+|0[bB](?:_?[01])+|0[oO](?:_?[0-7])+|0(?:_?[0-7])*|[1-9](?:_?[0-9])*)"
)


def parse_int(text: str) -> int:
    """strconv.ParseInt(s, 0, 64); raises :class:`GoError` with strconv's text."""
    m = _GO_INT_RE.fullmatch(text)
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


def parse_bool(text: str) -> bool:
    """strconv.ParseBool; raises :class:`GoError` with strconv's text."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise GoError(f"strconv.ParseBool: parsing {go_quote(text)}: invalid syntax")


# --- numbers and values ------------------------------------------------------------------------


def bytes_size(n: float) -> str:
    """go-units BytesSize as ``docker info`` prints Total Memory ("7.654GiB")."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.4g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1024
    return f"{n}B"


def go_value(value: Any) -> str:
    """text/template's printing of a value (fmt %v): ``<no value>``, ``map[k:v]``, ``[a b]``."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_value(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list):
        return "[" + " ".join(go_value(v) for v in value) + "]"
    return str(value)


# --- encoding/json and syscall ------------------------------------------------------------------


def go_json(value: Any) -> str:
    """encoding/json.Marshal of maps/slices/scalars: sorted map keys, compact, HTML-escaped."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def go_json_decode(body: bytes) -> Any:
    """json.NewDecoder(body).Decode: the first JSON value; raises :class:`GoError` with Go's texts."""
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


def errno_text(exc: OSError) -> str:
    """syscall.Errno's text: lower-case strerror ("no such file or directory")."""
    text = os.strerror(exc.errno) if exc.errno else str(exc)
    return text[:1].lower() + text[1:]
