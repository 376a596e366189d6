"""What docker prints: ``--format`` Go templates and tables, container columns, and ``--since``/``--until``
values. Go's own formatting (HumanDuration, %v, sizes) is :mod:`helix_sim.gofmt`."""

from __future__ import annotations

import datetime as _dt
import json
import re
import time
from typing import Any

from ...gofmt import go_value, parse_duration
from .output import CliError

_TEMPLATE_RE = re.compile(r"\{\{\s*(json\s+|index\s+)?(\.[\w.]*)\s*((?:\"[^\"]*\"\s*)*)\}\}")


def render_template(template: str, data: dict[str, Any]) -> str:
    """The Go-template subset docker users write: ``{{.A.B}}``, ``{{json .A}}``, ``{{index .A "k"}}``."""

    def lookup(path: str) -> Any:
        value: Any = data
        for part in [p for p in path.split(".") if p]:
            value = value.get(part) if isinstance(value, dict) else None
        return value

    def sub(m: re.Match[str]) -> str:
        func = (m.group(1) or "").strip()
        value = lookup(m.group(2))
        if func == "index":
            for key in re.findall(r'"([^"]*)"', m.group(3)):
                value = value.get(key) if isinstance(value, dict) else None
            return "" if value is None else go_value(value)
        if func == "json":
            return json.dumps(value, separators=(",", ":"))
        return go_value(value)

    leftover = _TEMPLATE_RE.sub("", template)
    if "{{" in leftover:
        raise CliError(f"template parsing error: unsupported template: {template!r}")
    return _TEMPLATE_RE.sub(sub, template)


def render_table(fmt: str, rows: list[dict[str, Any]], headers: dict[str, str]) -> str:
    """docker's ``--format`` (``table …`` adds a header row; columns as tabwriter(10, 1, 3))."""
    fmt = fmt.replace("\\t", "\t").replace("\\n", "\n")
    table = fmt.startswith("table")
    if table:
        fmt = fmt[len("table"):].strip(" ")
    lines = [render_template(fmt, row) for row in rows]
    if not table:
        return "".join(line + "\n" for line in lines)
    head = re.sub(r"\{\{\s*\.(\w+)\s*\}\}", lambda m: headers.get(m.group(1), m.group(1).upper()), fmt)
    cells = [line.split("\t") for line in [head, *lines]]
    ncol = max(len(c) for c in cells)
    widths = [max(10, max((len(c[i]) for c in cells if i < len(c)), default=0) + 3) for i in range(ncol)]
    out = []
    for row in cells:
        parts = [cell.ljust(widths[i]) if i < len(row) - 1 else cell for i, cell in enumerate(row)]
        out.append("".join(parts) + "\n")
    return "".join(out)


def short_command(command: str, no_trunc: bool = False) -> str:
    if not no_trunc and len(command) > 20:
        command = command[:19] + "…"
    return f'"{command}"'


def ports_text(attrs_or_summary: dict[str, Any]) -> str:
    bindings = ((attrs_or_summary.get("HostConfig") or {}).get("PortBindings")) or {}
    parts = []
    for container_port, hosts in sorted(bindings.items()):
        for h in hosts or []:
            parts.append(f"{h.get('HostIp') or '0.0.0.0'}:{h.get('HostPort')}->{container_port}")
    return ", ".join(parts)


def parse_since(value: str, now: float | None = None) -> str:
    """docker's ``--since``/``--until``: Unix time, RFC 3339 / date, or a Go duration before now."""
    now = time.time() if now is None else now
    if re.fullmatch(r"-?\d+(\.\d+)?", value):
        return value
    seconds = parse_duration(value)
    if seconds is not None:
        return f"{now - seconds:.9f}"
    try:
        dt = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f'invalid value for "since": failed to parse value as time or duration: "{value}"') from None
    if dt.tzinfo is None:
        dt = dt.astimezone()
    return f"{dt.timestamp():.9f}"
