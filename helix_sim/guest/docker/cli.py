"""`docker` in the simulated guest: the docker CLI subset the Helix stack and the harness use.

It talks to the simulator's Docker Engine API (``$DOCKER_HOST``) through docker-py, as the real
CLI talks to dockerd:

- ``docker compose [-f F] [-p P] [--profile P] up -d | ps | exec -T | logs | stop | rm | down | config``
  (compose file + ``COMPOSE_PROFILES`` from the env or the project's ``.env``; containers are
  ``<project>-<service>-1`` with the compose labels);
- ``docker ps``, ``logs``, ``inspect``, ``exec``, ``info``, ``version``, ``start|stop|restart|rm``,
  ``image inspect``;
- ``docker system dial-stdio``: a raw byte pipe between stdin/stdout and the engine socket, which
  docker-py's ``ssh://`` transport runs on the far side of an SSH channel.

Commands run inside containers (``compose exec`` / ``docker exec``) are simulated: ``pg_isready``
in postgres, and ``docker …`` in the sandbox, whose inner dockerd is the same engine seen
through the ``helix.sandbox`` label (the desktop containers live there, not on the VM).
Daemon errors print ``Error response from daemon: <msg>`` and exit 1, as the real CLI does.

Run as ``python -m helix_sim.guest.docker ARGS``) by the guest's ``bin/docker``; it imports
nothing from ``harness`` and imports docker-py only when a command needs it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import select
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

CLIENT_VERSION = "27.5.1"
COMPOSE_VERSION = "2.32.4"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NUMBER_LABEL = "com.docker.compose.container-number"
ONEOFF_LABEL = "com.docker.compose.oneoff"
#: Desktop containers carry this label naming the sandbox container whose dockerd runs them.
SANDBOX_LABEL = "helix.sandbox"
COMPOSE_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")


class CliError(Exception):
    """Ends the command: ``message`` goes to stderr, ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# --- output ---------------------------------------------------------------------------------


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def _out_bytes(data: bytes, stream: int = 1) -> None:
    target = sys.stderr if stream == 2 else sys.stdout
    target.flush()
    target.buffer.write(data)
    target.buffer.flush()


# --- a small YAML reader (block style, as compose files are written) -------------------------


class YamlError(ValueError):
    pass


def _strip_comment(line: str) -> str:
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'" and (i == 0 or line[i - 1] in " [,:-"):
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def _split_flow(text: str, lineno: int) -> list[str]:
    items, cur, quote = [], "", ""
    for ch in text:
        if quote:
            cur += ch
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
            cur += ch
        elif ch == ",":
            items.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if quote:
        raise YamlError(f"line {lineno}: unterminated quote")
    if cur.strip():
        items.append(cur.strip())
    return items


def _scalar(text: str, lineno: int) -> Any:
    text = text.strip()
    if text.startswith('"'):
        if not text.endswith('"') or len(text) < 2:
            raise YamlError(f"line {lineno}: unterminated double-quoted string")
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise YamlError(f"line {lineno}: bad double-quoted string: {exc}") from None
    if text.startswith("'"):
        if not text.endswith("'") or len(text) < 2:
            raise YamlError(f"line {lineno}: unterminated single-quoted string")
        return text[1:-1].replace("''", "'")
    if text.startswith("["):
        if not text.endswith("]"):
            raise YamlError(f"line {lineno}: multi-line flow sequences are not supported")
        return [_scalar(item, lineno) for item in _split_flow(text[1:-1], lineno)]
    if text.startswith("{"):
        if text.replace(" ", "") == "{}":
            return {}
        raise YamlError(f"line {lineno}: flow mappings are not supported")
    if text[:1] in "|>":
        raise YamlError(f"line {lineno}: block scalars are not supported")
    if text in ("~", "null", "Null", "NULL"):
        return None
    return text


_KEY_RE = re.compile(r"""^("(?:[^"\\]|\\.)*"|'[^']*'|[^\s"'#:][^:]*?)\s*:(?:\s+(.*))?$""")


def parse_yaml(text: str) -> Any:
    """Block mappings and sequences of scalars, plain/quoted scalars, flow sequences, comments."""
    lines: list[tuple[int, str, int]] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw)
        if not line.strip() or line.strip() in ("---", "..."):
            continue
        lead = line[: len(line) - len(line.lstrip())]
        if "\t" in lead:
            raise YamlError(f"line {lineno}: tabs are not allowed in indentation")
        lines.append((len(lead), line.strip(), lineno))
    if not lines:
        return None
    value, pos = _parse_block(lines, 0, lines[0][0])
    if pos != len(lines):
        raise YamlError(f"line {lines[pos][2]}: bad indentation")
    return value


def _is_item(content: str) -> bool:
    return content == "-" or content.startswith("- ")


def _parse_block(lines: list[tuple[int, str, int]], pos: int, indent: int) -> tuple[Any, int]:
    if _is_item(lines[pos][1]):
        return _parse_seq(lines, pos, indent)
    return _parse_map(lines, pos, indent)


def _parse_map(lines: list[tuple[int, str, int]], pos: int, indent: int) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    while pos < len(lines) and lines[pos][0] == indent and not _is_item(lines[pos][1]):
        _, content, lineno = lines[pos]
        match = _KEY_RE.match(content)
        if not match:
            raise YamlError(f"line {lineno}: expected `key: value`, got {content!r}")
        key = _scalar(match.group(1), lineno)
        rest = match.group(2)
        pos += 1
        if rest:
            out[key] = _scalar(rest, lineno)
        elif pos < len(lines) and lines[pos][0] > indent:
            out[key], pos = _parse_block(lines, pos, lines[pos][0])
        elif pos < len(lines) and lines[pos][0] == indent and _is_item(lines[pos][1]):
            out[key], pos = _parse_seq(lines, pos, indent)
        else:
            out[key] = None
    if pos < len(lines) and lines[pos][0] > indent:
        raise YamlError(f"line {lines[pos][2]}: bad indentation")
    return out, pos


def _parse_seq(lines: list[tuple[int, str, int]], pos: int, indent: int) -> tuple[list[Any], int]:
    out: list[Any] = []
    while pos < len(lines) and lines[pos][0] == indent and _is_item(lines[pos][1]):
        _, content, lineno = lines[pos]
        item = content[1:].strip()
        pos += 1
        if not item:
            if pos < len(lines) and lines[pos][0] > indent:
                value, pos = _parse_block(lines, pos, lines[pos][0])
                out.append(value)
            else:
                out.append(None)
        elif re.match(r"^[\w.-]+:(\s|$)", item):
            raise YamlError(f"line {lineno}: mappings inside sequences are not supported")
        else:
            out.append(_scalar(item, lineno))
    return out, pos


# --- compose project ------------------------------------------------------------------------

_VAR_RE = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])((?:[^{}]|\{[^{}]*\})*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?err}``, ``$VAR``, ``$$``."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        value = env.get(name)
        if op in (":-", "-"):
            if value is None or (op == ":-" and value == ""):
                return interpolate(arg, env)
            return value
        if op in (":?", "?"):
            if value is None or (op == ":?" and value == ""):
                raise CliError(f"required variable {name} is missing a value: {arg}")
            return value
        if op in (":+", "+"):
            return interpolate(arg, env) if value else ""
        return value or ""

    return _VAR_RE.sub(sub, text)


def read_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key] = value
    return out


def _walk(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_walk(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _walk(v, fn) for k, v in value.items()}
    return value


@dataclass
class Service:
    name: str
    config: dict[str, Any]

    @property
    def profiles(self) -> list[str]:
        return [str(p) for p in self.config.get("profiles") or []]

    @property
    def depends_on(self) -> list[str]:
        dep = self.config.get("depends_on") or []
        return list(dep.keys()) if isinstance(dep, dict) else [str(d) for d in dep]


@dataclass
class Project:
    name: str
    directory: Path
    files: list[Path]
    services: dict[str, Service]
    env: dict[str, str]
    profiles: list[str] = field(default_factory=list)

    def active(self) -> list[Service]:
        return [s for s in self.services.values() if not s.profiles or set(s.profiles) & set(self.profiles)]

    def container_name(self, service: Service) -> str:
        return str(service.config.get("container_name") or f"{self.name}-{service.name}-1")

    def image(self, service: Service) -> str:
        return str(service.config.get("image") or f"{self.name}-{service.name}")

    def ordered(self, names: list[str] | None = None) -> list[Service]:
        """Active services (or ``names`` and what they depend on) in dependency order."""
        active = {s.name: s for s in self.active()}
        wanted = list(names) if names else list(active)
        for name in wanted:
            if name not in self.services:
                raise CliError(f"no such service: {name}")
            if name not in active:
                raise CliError(f"service {name!r} is not enabled by the active profiles")
        order: list[Service] = []
        seen: set[str] = set()

        def visit(name: str, stack: tuple[str, ...]) -> None:
            if name in seen:
                return
            if name in stack:
                raise CliError(f"dependency cycle detected: {' -> '.join((*stack, name))}")
            service = self.services.get(name)
            if service is None:
                raise CliError(f"service {stack[-1]!r} depends on undefined service {name!r}: invalid compose project")
            for dep in service.depends_on:
                visit(dep, (*stack, name))
            seen.add(name)
            order.append(service)

        for name in wanted:
            visit(name, ())
        return order

    def environment(self, service: Service) -> list[str]:
        env: dict[str, str] = {}
        env_files = service.config.get("env_file") or []
        for f in [env_files] if isinstance(env_files, str) else env_files:
            path = self.directory / str(f)
            if not path.is_file():
                raise CliError(f"env file {path} not found: stat {path}: no such file or directory")
            env.update(read_env_file(path))
        raw = service.config.get("environment") or []
        if isinstance(raw, dict):
            env.update({str(k): "" if v is None else str(v) for k, v in raw.items()})
        else:
            for item in raw:
                key, eq, value = str(item).partition("=")
                env[key] = value if eq else self.env.get(key, "")
        return [f"{k}={v}" for k, v in env.items()]

    def ports(self, service: Service) -> dict[str, Any]:
        """Compose ``ports`` → docker-py ``ports=`` (``{"8080/tcp": ("0.0.0.0", 8080)}``)."""
        out: dict[str, Any] = {}
        for spec in service.config.get("ports") or []:
            parts = str(spec).split(":")
            container = parts[-1]
            proto = "tcp"
            if "/" in container:
                container, proto = container.split("/", 1)
            if len(parts) == 1:
                continue  # container-only port: not published
            host_ip = parts[0] if len(parts) == 3 else "0.0.0.0"
            host_port = parts[-2]
            if "-" in container or "-" in host_port:
                continue  # port ranges: not simulated
            out[f"{container}/{proto}"] = (host_ip, int(host_port))
        return out


def load_project(files: list[str], project_name: str | None, profiles: list[str], project_dir: str | None) -> Project:
    cwd = Path.cwd()
    if files:
        paths = [Path(f) if os.path.isabs(f) else cwd / f for f in files]
    else:
        found = [cwd / name for name in COMPOSE_FILES if (cwd / name).is_file()]
        if not found:
            raise CliError("no configuration file provided: not found")
        paths = found[:1]
    directory = Path(project_dir).absolute() if project_dir else paths[0].parent
    env = read_env_file(directory / ".env")
    env.update(os.environ)
    services: dict[str, Service] = {}
    for path in paths:
        try:
            text = path.read_text()
        except OSError as exc:
            raise CliError(f"open {path}: {exc.strerror.lower() if exc.strerror else exc}") from None
        try:
            data = parse_yaml(text) or {}
        except YamlError as exc:
            raise CliError(f"yaml: {exc}") from None
        data = _walk(data, lambda s: interpolate(s, env))
        if not isinstance(data, dict) or not isinstance(data.get("services") or {}, dict):
            raise CliError(f"validating {path}: services must be a mapping")
        for name, cfg in (data.get("services") or {}).items():
            merged = dict(services[name].config) if name in services else {}
            merged.update(cfg or {})
            services[name] = Service(name, merged)
    name = project_name or env.get("COMPOSE_PROJECT_NAME") or directory.name
    name = re.sub(r"[^a-z0-9_-]", "", name.lower()) or "default"
    active = [p.strip() for p in env.get("COMPOSE_PROFILES", "").split(",") if p.strip()]
    active += profiles
    return Project(name, directory, paths, services, env, active)


# --- engine access --------------------------------------------------------------------------


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _cannot_connect() -> CliError:
    return CliError(f"Cannot connect to the Docker daemon at {docker_host()}. Is the docker daemon running?")


class Engine:
    """docker-py against ``$DOCKER_HOST``, seen from the VM (``scope=None``) or from inside a sandbox."""

    def __init__(self, scope: str | None = None) -> None:
        import docker  # noqa: PLC0415 - slow to import; dial-stdio never needs it

        self._docker = docker
        self.scope = scope
        try:
            self.client = docker.DockerClient(base_url=docker_host(), timeout=60)
        except docker.errors.DockerException:
            raise _cannot_connect() from None
        self.api = self.client.api

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a docker-py call; daemon errors become ``Error response from daemon: …``."""
        errors = self._docker.errors
        try:
            return fn(*args, **kwargs)
        except errors.APIError as exc:
            raise CliError(f"Error response from daemon: {exc.explanation or exc}") from None
        except (errors.DockerException, OSError):
            raise _cannot_connect() from None
        except Exception as exc:  # requests' ConnectionError and friends
            if type(exc).__module__.startswith(("requests", "urllib3")):
                raise _cannot_connect() from None
            raise

    def visible(self, summary_or_attrs: dict[str, Any]) -> bool:
        labels = summary_or_attrs.get("Labels")
        if labels is None:
            labels = (summary_or_attrs.get("Config") or {}).get("Labels")
        owner = (labels or {}).get(SANDBOX_LABEL)
        return owner == self.scope if self.scope else owner is None

    def list(self, *, all: bool = False, filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        rows = self.call(self.api.containers, all=all, filters=filters or None)
        return [r for r in rows if self.visible(r)]

    def inspect(self, name: str) -> dict[str, Any]:
        attrs = self.call(self.api.inspect_container, name)
        if not self.visible(attrs):
            raise CliError(f"Error response from daemon: No such container: {name}")
        return attrs

    def find(self, name: str) -> dict[str, Any] | None:
        try:
            return self.inspect(name)
        except CliError:
            return None

    def raw_logs(self, container_id: str, params: dict[str, Any]) -> Iterator[tuple[int, bytes]]:
        """Yield (stream, bytes) from the logs endpoint, demultiplexed as the docker CLI does."""
        url = self.api._url("/containers/{0}/logs", container_id)
        # A follower may sit idle for long: no read timeout then (the client's is 60 s).
        timeout = None if params.get("follow") else self.api.timeout
        res = self.call(self.api._get, url, params=params, stream=True, timeout=timeout)
        self.call(self.api._raise_for_status, res)
        raw = res.raw
        multiplexed = "multiplexed" in res.headers.get("Content-Type", "") or not self._is_tty(container_id)
        try:
            while True:
                if not multiplexed:
                    chunk = raw.read(32 * 1024)
                    if not chunk:
                        return
                    yield 1, chunk
                    continue
                header = raw.read(8)
                if len(header) < 8:
                    return
                stream, size = header[0], int.from_bytes(header[4:8], "big")
                data = raw.read(size) if size else b""
                yield (2 if stream == 2 else 1), data
        finally:
            res.close()

    def _is_tty(self, container_id: str) -> bool:
        return bool(((self.inspect(container_id).get("Config")) or {}).get("Tty"))


# --- formatting helpers ---------------------------------------------------------------------


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


def _go_value(value: Any) -> str:
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_value(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go_value(v) for v in value) + "]"
    return str(value)


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
            return "" if value is None else _go_value(value)
        if func == "json":
            return json.dumps(value, separators=(",", ":"))
        return _go_value(value)

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


def _short_command(command: str, no_trunc: bool = False) -> str:
    if not no_trunc and len(command) > 20:
        command = command[:19] + "…"
    return f'"{command}"'


def _ports_text(attrs_or_summary: dict[str, Any]) -> str:
    bindings = ((attrs_or_summary.get("HostConfig") or {}).get("PortBindings")) or {}
    parts = []
    for container_port, hosts in sorted(bindings.items()):
        for h in hosts or []:
            parts.append(f"{h.get('HostIp') or '0.0.0.0'}:{h.get('HostPort')}->{container_port}")
    return ", ".join(parts)


def _status_of(attrs: dict[str, Any]) -> str:
    state = attrs.get("State") or {}
    status = state.get("Status", "")
    now = time.time()
    if status in ("running", "restarting"):
        return f"Up {human_duration(now - _parse_ts(state.get('StartedAt')))}"
    if status == "exited":
        return f"Exited ({state.get('ExitCode', 0)}) {human_duration(now - _parse_ts(state.get('FinishedAt')))} ago"
    return status.capitalize()


def _parse_ts(value: Any) -> float:
    if not value or str(value).startswith("0001-"):
        return time.time()
    text = str(value).replace("Z", "+00:00")
    match = re.match(r"^(.*?\.\d{1,6})\d*(.*)$", text)
    if match:
        text = match.group(1) + match.group(2)
    try:
        return _dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return time.time()


def parse_since(value: str, now: float | None = None) -> str:
    """docker's ``--since``/``--until``: Unix time, RFC 3339 / date, or a Go duration before now."""
    now = time.time() if now is None else now
    if re.fullmatch(r"-?\d+(\.\d+)?", value):
        return value
    dur = re.fullmatch(r"((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+", value)
    if dur:
        units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
        total = sum(float(n) * units[u] for n, _, u in re.findall(r"(\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", value))
        return f"{now - total:.9f}"
    try:
        dt = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f'invalid value for "since": failed to parse value as time or duration: "{value}"') from None
    if dt.tzinfo is None:
        dt = dt.astimezone()
    return f"{dt.timestamp():.9f}"


# --- argument parsing -----------------------------------------------------------------------


@dataclass
class Args:
    flags: dict[str, Any]
    positional: list[str]


def parse_args(argv: list[str], spec: dict[str, str], *, stop_at_positional: bool = False) -> Args:
    """pflag-ish parsing. ``spec`` maps every spelling (``-f``, ``--file``) to ``name:kind``
    where kind is ``bool``, ``str`` or ``list``."""
    flags: dict[str, Any] = {}
    positional: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            positional.extend(argv[i + 1:])
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            if stop_at_positional:
                positional.extend(argv[i + 1:])
                break
            i += 1
            continue
        key, eq, value = arg.partition("=")
        if key not in spec and not key.startswith("--") and len(key) > 2:
            # combined short bools (-it) or a short flag with its value attached (-n5)
            first = key[:2]
            if first in spec and spec[first].endswith(":bool") and all(f"-{c}" in spec for c in key[2:]):
                argv = [*argv[:i], *[f"-{c}" for c in key[1:]], *argv[i + 1:]]
                continue
            if first in spec and not spec[first].endswith(":bool"):
                key, eq, value = first, "=", key[2:]
        if key not in spec:
            shown = key if key.startswith("--") else f"shorthand flag: '{key[1:]}' in {arg}"
            raise CliError(f"unknown flag: {shown}" if key.startswith("--") else f"unknown {shown}")
        name, kind = spec[key].split(":")
        if kind == "bool":
            flags[name] = value.lower() not in ("false", "0") if eq else True
        else:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise CliError(f"flag needs an argument: {key}")
                value = argv[i]
            if kind == "list":
                flags.setdefault(name, []).append(value)
            else:
                flags[name] = value
        i += 1
    return Args(flags, positional)


# --- commands inside containers -------------------------------------------------------------


def run_in_container(engine: Engine, attrs: dict[str, Any], cmd: list[str]) -> int:
    """What `docker exec <ctr> CMD` does in the simulated containers."""
    name = attrs.get("Name", "").lstrip("/")
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    service = labels.get(SERVICE_LABEL, "")
    image = (attrs.get("Config") or {}).get("Image", "")
    if not cmd:
        raise CliError("no command specified")
    prog = os.path.basename(cmd[0])
    if prog == "pg_isready" and ("postgres" in image or service == "postgres"):
        a = parse_args(cmd[1:], {"-h": "host:str", "--host": "host:str", "-p": "port:str", "--port": "port:str",
                                 "-U": "user:str", "--username": "user:str", "-d": "db:str", "--dbname": "db:str",
                                 "-t": "timeout:str", "--timeout": "timeout:str", "-q": "quiet:bool", "--quiet": "quiet:bool"})
        where = f"{a.flags['host']}:{a.flags.get('port', '5432')}" if "host" in a.flags else \
            f"/var/run/postgresql:{a.flags.get('port', '5432')}"
        if not a.flags.get("quiet"):
            _out(f"{where} - accepting connections\n")
        return 0
    if prog == "docker" and (service.startswith("sandbox") or "sandbox" in image):
        return main(cmd[1:], scope=name)
    if prog == "true":
        return 0
    if prog == "false":
        return 1
    if prog == "echo":
        _out(" ".join(cmd[1:]) + "\n")
        return 0
    _err(
        "OCI runtime exec failed: exec failed: unable to start container process: exec: "
        f'"{cmd[0]}": executable file not found in $PATH: unknown\n'
    )
    return 126


def _exec(engine: Engine, container: str, cmd: list[str]) -> int:
    attrs = engine.find(container)
    if attrs is None:
        raise CliError(f"Error response from daemon: No such container: {container}")
    if not (attrs.get("State") or {}).get("Running"):
        raise CliError(f"Error response from daemon: container {attrs.get('Id', container)} is not running")
    return run_in_container(engine, attrs, cmd)


# --- docker commands ------------------------------------------------------------------------

_PS_HEADERS = {
    "ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "RunningFor": "CREATED", "CreatedAt": "CREATED AT",
    "Status": "STATUS", "Ports": "PORTS", "Names": "NAMES", "Name": "NAME", "State": "STATE", "Labels": "LABELS",
    "Service": "SERVICE", "Project": "PROJECT", "Size": "SIZE", "Mounts": "MOUNTS", "Networks": "NETWORKS",
}


def _ps_row(summary: dict[str, Any], attrs: dict[str, Any] | None, no_trunc: bool = False) -> dict[str, Any]:
    labels = summary.get("Labels") or {}
    created = summary.get("Created") or time.time()
    name = (summary.get("Names") or ["/"])[0].lstrip("/")
    command = summary.get("Command") or ""
    return {
        "ID": summary.get("Id", "") if no_trunc else summary.get("Id", "")[:12],
        "Image": summary.get("Image", ""),
        "Command": _short_command(command, no_trunc),
        "CreatedAt": _dt.datetime.fromtimestamp(created).astimezone().strftime("%Y-%m-%d %H:%M:%S %z %Z"),
        "RunningFor": f"{human_duration(time.time() - created)} ago",
        "Ports": _ports_text(attrs or summary),
        "State": summary.get("State", ""),
        "Status": summary.get("Status", ""),
        "Names": name,
        "Name": name,
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        "Service": labels.get(SERVICE_LABEL, ""),
        "Project": labels.get(PROJECT_LABEL, ""),
        "Size": "0B",
        "Mounts": "",
        "Networks": "bridge",
    }


def cmd_ps(engine: Engine, argv: list[str]) -> int:
    a = parse_args(argv, {"-a": "all:bool", "--all": "all:bool", "-q": "quiet:bool", "--quiet": "quiet:bool",
                          "--format": "format:str", "-f": "filter:list", "--filter": "filter:list",
                          "--no-trunc": "no_trunc:bool", "-n": "last:str", "--last": "last:str",
                          "-l": "latest:bool", "--latest": "latest:bool", "-s": "size:bool", "--size": "size:bool"})
    filters: dict[str, list[str]] = {}
    for f in a.flags.get("filter", []):
        key, _, value = f.partition("=")
        filters.setdefault(key, []).append(value)
    rows = engine.list(all=bool(a.flags.get("all")), filters=filters)
    if a.flags.get("quiet"):
        _out("".join(r["Id"][:12] + "\n" for r in rows))
        return 0
    data = [_ps_row(r, engine.find(r["Id"]), bool(a.flags.get("no_trunc"))) for r in rows]
    fmt = a.flags.get("format") or "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
    if fmt == "json":
        _out("".join(json.dumps(d, separators=(",", ":")) + "\n" for d in data))
        return 0
    _out(render_table(fmt, data, _PS_HEADERS))
    return 0


_LOGS_SPEC = {"--since": "since:str", "--until": "until:str", "-t": "timestamps:bool", "--timestamps": "timestamps:bool",
              "-n": "tail:str", "--tail": "tail:str", "-f": "follow:bool", "--follow": "follow:bool",
              "--details": "details:bool"}


def _log_params(flags: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {"stdout": 1, "stderr": 1, "follow": int(bool(flags.get("follow"))),
                              "timestamps": int(bool(flags.get("timestamps"))), "tail": flags.get("tail", "all")}
    if flags.get("since"):
        params["since"] = parse_since(flags["since"])
    if flags.get("until"):
        params["until"] = parse_since(flags["until"])
    return params


def cmd_logs(engine: Engine, argv: list[str]) -> int:
    a = parse_args(argv, _LOGS_SPEC)
    if len(a.positional) != 1:
        raise CliError('"docker logs" requires exactly 1 argument.\nSee \'docker logs --help\'.\n\n'
                       "Usage:  docker logs [OPTIONS] CONTAINER\n\nFetch the logs of a container")
    attrs = engine.inspect(a.positional[0])
    for stream, data in engine.raw_logs(attrs["Id"], _log_params(a.flags)):
        _out_bytes(data, stream)
    return 0


def cmd_inspect(engine: Engine, argv: list[str]) -> int:
    a = parse_args(argv, {"-f": "format:str", "--format": "format:str", "--type": "type:str",
                          "-s": "size:bool", "--size": "size:bool"})
    if not a.positional:
        raise CliError('"docker inspect" requires at least 1 argument.\nSee \'docker inspect --help\'.')
    found: list[dict[str, Any]] = []
    missing: list[str] = []
    for name in a.positional:
        attrs = None
        if a.flags.get("type") in (None, "container"):
            attrs = engine.find(name)
        if attrs is None and a.flags.get("type") in (None, "image"):
            try:
                attrs = engine.call(engine.api.inspect_image, name)
            except CliError:
                attrs = None
        if attrs is None:
            missing.append(name)
        else:
            found.append(attrs)
    if a.flags.get("format"):
        _out("".join(render_template(a.flags["format"], d) + "\n" for d in found))
    else:
        _out(json.dumps(found, indent=4, ensure_ascii=False) + "\n")
    if missing:
        _err("".join(f"Error: No such object: {name}\n" for name in missing))
        return 1
    return 0


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.4g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1024
    return f"{n}B"


def cmd_info(engine: Engine | None, argv: list[str]) -> int:
    a = parse_args(argv, {"-f": "format:str", "--format": "format:str"})
    if engine is None:
        engine = Engine()
    info = engine.call(engine.api.info)
    if engine.scope:
        rows = engine.list(all=True)
        running = sum(1 for r in rows if r.get("State") == "running")
        info.update(Containers=len(rows), ContainersRunning=running, ContainersStopped=len(rows) - running,
                    ContainersPaused=0, Name=engine.scope[:12])
    if a.flags.get("format"):
        _out(render_template(a.flags["format"], info) + "\n")
        return 0
    _out(
        "Client:\n"
        f" Version:    {CLIENT_VERSION}\n"
        " Context:    default\n"
        " Debug Mode: false\n"
        " Plugins:\n"
        "  compose: Docker Compose (Docker Inc.)\n"
        f"    Version:  v{COMPOSE_VERSION}\n"
        "    Path:     /usr/libexec/docker/cli-plugins/docker-compose\n"
        "\n"
        "Server:\n"
        f" Containers: {info.get('Containers', 0)}\n"
        f"  Running: {info.get('ContainersRunning', 0)}\n"
        f"  Paused: {info.get('ContainersPaused', 0)}\n"
        f"  Stopped: {info.get('ContainersStopped', 0)}\n"
        f" Images: {info.get('Images', 0)}\n"
        f" Server Version: {info.get('ServerVersion', '')}\n"
        f" Storage Driver: {info.get('Driver', '')}\n"
        f" Logging Driver: {info.get('LoggingDriver', '')}\n"
        f" Cgroup Driver: {info.get('CgroupDriver', '')}\n"
        f" Cgroup Version: {info.get('CgroupVersion', '')}\n"
        f" Kernel Version: {info.get('KernelVersion', '')}\n"
        f" Operating System: {info.get('OperatingSystem', '')}\n"
        f" OSType: {info.get('OSType', '')}\n"
        f" Architecture: {info.get('Architecture', '')}\n"
        f" CPUs: {info.get('NCPU', 0)}\n"
        f" Total Memory: {_human_bytes(float(info.get('MemTotal', 0)))}\n"
        f" Name: {info.get('Name', '')}\n"
        f" ID: {info.get('ID', '')}\n"
        f" Docker Root Dir: {info.get('DockerRootDir', '')}\n"
        " Debug Mode: false\n"
        " Experimental: false\n"
        " Insecure Registries:\n"
        "  127.0.0.0/8\n"
        " Live Restore Enabled: false\n"
        "\n"
    )
    return 0


def cmd_version(engine: Engine, argv: list[str]) -> int:
    v = engine.call(engine.api.version)
    _out(
        "Client: Docker Engine - Community\n"
        f" Version:           {CLIENT_VERSION}\n"
        f" API version:       {v.get('ApiVersion', '')}\n"
        " Go version:        go1.22.11\n"
        f" OS/Arch:           linux/{v.get('Arch', 'arm64')}\n"
        " Context:           default\n"
        "\n"
        "Server: Docker Engine - Community\n"
        " Engine:\n"
        f"  Version:          {v.get('Version', '')}\n"
        f"  API version:      {v.get('ApiVersion', '')} (minimum version {v.get('MinAPIVersion', '')})\n"
        f"  Go version:       {v.get('GoVersion', '')}\n"
        f"  OS/Arch:          {v.get('Os', 'linux')}/{v.get('Arch', '')}\n"
    )
    return 0


def cmd_lifecycle(engine: Engine, verb: str, argv: list[str]) -> int:
    a = parse_args(argv, {"-f": "force:bool", "--force": "force:bool", "-t": "time:str", "--time": "time:str",
                          "-v": "volumes:bool", "--volumes": "volumes:bool"})
    if not a.positional:
        raise CliError(f'"docker {verb}" requires at least 1 argument.\nSee \'docker {verb} --help\'.')
    status = 0
    for name in a.positional:
        try:
            attrs = engine.inspect(name)
            cid = attrs["Id"]
            if verb == "start":
                engine.call(engine.api.start, cid)
            elif verb == "stop":
                engine.call(engine.api.stop, cid, timeout=int(a.flags.get("time", 10)))
            elif verb == "restart":
                engine.call(engine.api.restart, cid, timeout=int(a.flags.get("time", 10)))
            elif verb == "rm":
                engine.call(engine.api.remove_container, cid, force=bool(a.flags.get("force")))
            _out(name + "\n")
        except CliError as exc:
            if verb == "rm" and a.flags.get("force") and "No such container" in exc.message:
                continue
            _err(exc.message + "\n")
            status = 1
    return status


def cmd_exec(engine: Engine, argv: list[str]) -> int:
    a = parse_args(argv, {"-i": "interactive:bool", "--interactive": "interactive:bool", "-t": "tty:bool",
                          "--tty": "tty:bool", "-e": "env:list", "--env": "env:list", "-u": "user:str",
                          "--user": "user:str", "-w": "workdir:str", "--workdir": "workdir:str",
                          "-d": "detach:bool", "--detach": "detach:bool", "--privileged": "privileged:bool"},
                   stop_at_positional=True)
    if len(a.positional) < 2:
        raise CliError('"docker exec" requires at least 2 arguments.\nSee \'docker exec --help\'.')
    return _exec(engine, a.positional[0], a.positional[1:])


def cmd_image(engine: Engine, argv: list[str]) -> int:
    if not argv or argv[0] != "inspect":
        raise CliError(f"docker image {argv[0] if argv else ''}: not simulated (only `image inspect`)")
    a = parse_args(argv[1:], {"-f": "format:str", "--format": "format:str"})
    found, status = [], 0
    for name in a.positional:
        try:
            found.append(engine.call(engine.api.inspect_image, name))
        except CliError:
            _err(f"Error response from daemon: No such image: {name}\n")
            status = 1
    if a.flags.get("format"):
        _out("".join(render_template(a.flags["format"], d) + "\n" for d in found))
    else:
        _out(json.dumps(found, indent=4) + "\n")
    return status


# --- dial-stdio -----------------------------------------------------------------------------


def dial_stdio(stdin_fd: int = 0, stdout_fd: int = 1) -> int:
    """Copy stdin → engine socket and engine socket → stdout until either side ends.

    As ``docker system dial-stdio`` does: stdin EOF half-closes the socket and waits for the
    engine to finish; engine EOF ends the pipe at once.
    """
    host = docker_host()
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(host[len("unix://"):])
        elif host.startswith("tcp://"):
            hostport = host[len("tcp://"):].rstrip("/")
            h, _, p = hostport.rpartition(":")
            sock = socket.create_connection((h, int(p)))
        else:
            raise CliError(f"unsupported DOCKER_HOST {host}")
    except OSError:
        raise _cannot_connect() from None
    stdin_open = True
    try:
        while True:
            watch = [sock] + ([stdin_fd] if stdin_open else [])
            readable, _, _ = select.select(watch, [], [])
            if stdin_open and stdin_fd in readable:
                data = os.read(stdin_fd, 64 * 1024)
                if data:
                    sock.sendall(data)
                else:
                    stdin_open = False
                    try:
                        sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
            if sock in readable:
                data = sock.recv(64 * 1024)
                if not data:
                    return 0
                view = memoryview(data)
                while view:
                    n = os.write(stdout_fd, view)
                    view = view[n:]
    except (BrokenPipeError, ConnectionResetError):
        return 0
    finally:
        sock.close()


# --- compose --------------------------------------------------------------------------------


def _progress(kind: str, name: str, state: str) -> None:
    _err(f" {kind} {name}  {state}\n")


class Compose:
    def __init__(self, project: Project, engine: Engine) -> None:
        self.p = project
        self.e = engine

    def containers(self, *, all: bool = True) -> list[dict[str, Any]]:
        return self.e.list(all=all, filters={"label": [f"{PROJECT_LABEL}={self.p.name}"]})

    def container_of(self, service: str) -> dict[str, Any] | None:
        for c in self.containers():
            if (c.get("Labels") or {}).get(SERVICE_LABEL) == service:
                return self.e.find(c["Id"])
        return None

    def up(self, argv: list[str]) -> int:
        a = parse_args(argv, {"-d": "detach:bool", "--detach": "detach:bool", "--build": "build:bool",
                              "--no-build": "no_build:bool", "--remove-orphans": "remove_orphans:bool",
                              "--force-recreate": "force_recreate:bool", "--no-recreate": "no_recreate:bool",
                              "--wait": "wait:bool", "--quiet-pull": "quiet_pull:bool", "--pull": "pull:str",
                              "--no-deps": "no_deps:bool", "-t": "timeout:str", "--timeout": "timeout:str"})
        if not a.flags.get("detach"):
            raise CliError("the simulated `docker compose up` only runs detached: use `up -d`")
        services = self.p.ordered(a.positional or None)
        plan: list[tuple[Service, str, dict[str, Any] | None]] = []
        for service in services:
            name = self.p.container_name(service)
            attrs = self.e.find(name)
            if attrs is None:
                _progress("Container", name, "Creating")
                env = self.p.environment(service)
                cmd = service.config.get("command")
                self.e.call(
                    self.e.client.containers.create,
                    self.p.image(service),
                    command=cmd if isinstance(cmd, list) else (cmd.split() if cmd else None),
                    name=name,
                    labels=self._labels(service),
                    environment=env,
                    ports=self.p.ports(service) or None,
                    privileged=str(service.config.get("privileged", "")).lower() == "true",
                )
                _progress("Container", name, "Created")
                plan.append((service, name, None))
            else:
                plan.append((service, name, attrs))
        for service, name, attrs in plan:
            if attrs is not None and (attrs.get("State") or {}).get("Running"):
                _progress("Container", name, "Running")
                continue
            _progress("Container", name, "Starting")
            self.e.call(self.e.api.start, name)
            _progress("Container", name, "Started")
        return 0

    def _labels(self, service: Service) -> dict[str, str]:
        return {
            PROJECT_LABEL: self.p.name,
            SERVICE_LABEL: service.name,
            NUMBER_LABEL: "1",
            ONEOFF_LABEL: "False",
            "com.docker.compose.project.config_files": ",".join(str(f) for f in self.p.files),
            "com.docker.compose.project.working_dir": str(self.p.directory),
            "com.docker.compose.version": COMPOSE_VERSION,
            "com.docker.compose.depends_on": ",".join(f"{d}:service_started:false" for d in service.depends_on),
        }

    def ps(self, argv: list[str]) -> int:
        a = parse_args(argv, {"-a": "all:bool", "--all": "all:bool", "-q": "quiet:bool", "--quiet": "quiet:bool",
                              "--format": "format:str", "--services": "services:bool", "--status": "status:list",
                              "--no-trunc": "no_trunc:bool", "--filter": "filter:list"})
        rows = []
        for summary in self.containers(all=bool(a.flags.get("all"))):
            labels = summary.get("Labels") or {}
            if a.positional and labels.get(SERVICE_LABEL) not in a.positional:
                continue
            if a.flags.get("status") and summary.get("State") not in a.flags["status"]:
                continue
            rows.append(summary)
        rows.sort(key=lambda r: (r.get("Names") or [""])[0])
        if a.flags.get("quiet"):
            _out("".join(r["Id"] + "\n" for r in rows))
            return 0
        if a.flags.get("services"):
            _out("".join((r.get("Labels") or {}).get(SERVICE_LABEL, "") + "\n" for r in rows))
            return 0
        data = []
        for r in rows:
            row = _ps_row(r, self.e.find(r["Id"]), no_trunc=True)
            row["Command"] = _short_command(r.get("Command") or "")
            data.append(row)
        fmt = a.flags.get("format") or "table {{.Name}}\t{{.Image}}\t{{.Command}}\t{{.Service}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}"
        if fmt == "json":
            _out("".join(json.dumps(d, separators=(",", ":")) + "\n" for d in data))
            return 0
        _out(render_table(fmt, data, {**_PS_HEADERS, "RunningFor": "CREATED"}))
        return 0

    def exec(self, argv: list[str]) -> int:
        a = parse_args(argv, {"-T": "no_tty:bool", "--no-TTY": "no_tty:bool", "-d": "detach:bool",
                              "--detach": "detach:bool", "-e": "env:list", "--env": "env:list",
                              "-u": "user:str", "--user": "user:str", "-w": "workdir:str", "--workdir": "workdir:str",
                              "--index": "index:str", "--privileged": "privileged:bool"},
                       stop_at_positional=True)
        if len(a.positional) < 2:
            raise CliError('"docker compose exec" requires at least 2 arguments.')
        service, cmd = a.positional[0], a.positional[1:]
        if service not in self.p.services:
            raise CliError(f"no such service: {service}")
        attrs = self.container_of(service)
        if attrs is None or not (attrs.get("State") or {}).get("Running"):
            raise CliError(f'service "{service}" is not running')
        return run_in_container(self.e, attrs, cmd)

    def logs(self, argv: list[str]) -> int:
        a = parse_args(argv, {**_LOGS_SPEC, "--no-log-prefix": "no_prefix:bool", "--no-color": "no_color:bool"})
        targets = []
        for summary in self.containers():
            labels = summary.get("Labels") or {}
            if a.positional and labels.get(SERVICE_LABEL) not in a.positional:
                continue
            targets.append(summary)
        targets.sort(key=lambda r: (r.get("Names") or [""])[0])
        width = max((len((t.get("Names") or [""])[0].lstrip("/")) for t in targets), default=0)
        params = _log_params(a.flags)
        if len(targets) > 1:
            params["follow"] = 0  # one stream at a time in the simulation
        for t in targets:
            name = (t.get("Names") or [""])[0].lstrip("/")
            prefix = b"" if a.flags.get("no_prefix") else f"{name.ljust(width)}  | ".encode()
            pending = b""
            for _stream, data in self.e.raw_logs(t["Id"], params):
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    _out_bytes(prefix + line + b"\n")
            if pending:
                _out_bytes(prefix + pending + b"\n")
        return 0

    def _selected(self, names: list[str]) -> list[dict[str, Any]]:
        out = []
        for summary in self.containers():
            if names and (summary.get("Labels") or {}).get(SERVICE_LABEL) not in names:
                continue
            out.append(summary)
        return out

    def stop(self, argv: list[str]) -> int:
        a = parse_args(argv, {"-t": "timeout:str", "--timeout": "timeout:str"})
        for summary in reversed(self._selected(a.positional)):
            name = summary["Names"][0].lstrip("/")
            if summary.get("State") != "running":
                continue
            _progress("Container", name, "Stopping")
            self.e.call(self.e.api.stop, summary["Id"], timeout=int(a.flags.get("timeout", 10)))
            _progress("Container", name, "Stopped")
        return 0

    def rm(self, argv: list[str]) -> int:
        a = parse_args(argv, {"-f": "force:bool", "--force": "force:bool", "-s": "stop:bool", "--stop": "stop:bool",
                              "-v": "volumes:bool", "--volumes": "volumes:bool"})
        targets = self._selected(a.positional)
        if a.flags.get("stop"):
            self.stop(a.positional)
            targets = self._selected(a.positional)
        stopped = [t for t in targets if t.get("State") != "running"]
        if not stopped:
            _err("No stopped containers\n")
            return 0
        for summary in stopped:
            name = summary["Names"][0].lstrip("/")
            _progress("Container", name, "Removing")
            self.e.call(self.e.api.remove_container, summary["Id"])
            _progress("Container", name, "Removed")
        return 0

    def down(self, argv: list[str]) -> int:
        a = parse_args(argv, {"-t": "timeout:str", "--timeout": "timeout:str", "-v": "volumes:bool",
                              "--volumes": "volumes:bool", "--remove-orphans": "remove_orphans:bool",
                              "--rmi": "rmi:str"})
        for summary in reversed(self._selected([])):
            name = summary["Names"][0].lstrip("/")
            if summary.get("State") == "running":
                _progress("Container", name, "Stopping")
                self.e.call(self.e.api.stop, summary["Id"], timeout=int(a.flags.get("timeout", 10)))
                _progress("Container", name, "Stopped")
            _progress("Container", name, "Removing")
            self.e.call(self.e.api.remove_container, summary["Id"])
            _progress("Container", name, "Removed")
        return 0


def cmd_compose(argv: list[str], scope: str | None) -> int:
    a = parse_args(argv, {"-f": "file:list", "--file": "file:list", "-p": "project:str",
                          "--project-name": "project:str", "--profile": "profile:list",
                          "--project-directory": "project_dir:str", "--env-file": "env_file:list",
                          "--ansi": "ansi:str", "--progress": "progress:str", "--compatibility": "compat:bool"},
                   stop_at_positional=True)
    if not a.positional:
        raise CliError("Usage:  docker compose [OPTIONS] COMMAND\n\nDefine and run multi-container applications with Docker")
    sub, rest = a.positional[0], a.positional[1:]
    if sub == "version":
        _out(f"Docker Compose version v{COMPOSE_VERSION}\n")
        return 0
    project = load_project(a.flags.get("file", []), a.flags.get("project"), a.flags.get("profile", []),
                           a.flags.get("project_dir"))
    if sub == "config":
        c = parse_args(rest, {"--services": "services:bool", "--profiles": "profiles:bool", "-q": "quiet:bool",
                              "--quiet": "quiet:bool"})
        if c.flags.get("services"):
            _out("".join(s.name + "\n" for s in project.ordered()))
        elif c.flags.get("profiles"):
            _out("".join(p + "\n" for p in sorted({p for s in project.services.values() for p in s.profiles})))
        elif not c.flags.get("quiet"):
            _out(json.dumps({"name": project.name, "services": {s.name: s.config for s in project.active()}},
                            indent=2) + "\n")
        return 0
    commands = {"up": Compose.up, "ps": Compose.ps, "exec": Compose.exec, "logs": Compose.logs,
                "stop": Compose.stop, "rm": Compose.rm, "down": Compose.down}
    if sub not in commands:
        raise CliError(f"unknown docker command: \"compose {sub}\"")
    return commands[sub](Compose(project, Engine(scope)), rest)


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None, *, scope: str | None = None) -> int:
    """``scope``: the sandbox container whose inner dockerd this CLI talks to (None: the VM's)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        g = parse_args(args, {"-H": "host:str", "--host": "host:str", "-D": "debug:bool", "--debug": "debug:bool",
                              "-l": "log_level:str", "--log-level": "log_level:str", "--context": "context:str",
                              "-c": "context:str", "-v": "version:bool", "--version": "version:bool"},
                       stop_at_positional=True)
        if g.flags.get("host"):
            os.environ["DOCKER_HOST"] = g.flags["host"]
        if g.flags.get("version"):
            _out(f"Docker version {CLIENT_VERSION}, build 4c9b3b0\n")
            return 0
        if not g.positional:
            _out("Usage:  docker [OPTIONS] COMMAND\n\nA self-sufficient runtime for containers\n")
            return 0
        cmd, rest = g.positional[0], g.positional[1:]
        if cmd == "compose":
            return cmd_compose(rest, scope)
        if cmd == "system" and rest[:1] == ["dial-stdio"]:
            return dial_stdio()
        if cmd == "system" and rest[:1] == ["info"]:
            cmd, rest = "info", rest[1:]
        if cmd == "container" and rest[:1] and rest[0] in ("ls", "list", "inspect", "logs", "exec", "start", "stop",
                                                            "restart", "rm"):
            cmd, rest = ("ps" if rest[0] in ("ls", "list") else rest[0]), rest[1:]
        if cmd == "info":
            return cmd_info(Engine(scope), rest)
        handlers: dict[str, Callable[[Engine, list[str]], int]] = {
            "ps": cmd_ps, "logs": cmd_logs, "inspect": cmd_inspect, "version": cmd_version, "exec": cmd_exec,
            "image": cmd_image,
        }
        if cmd in handlers:
            return handlers[cmd](Engine(scope), rest)
        if cmd in ("start", "stop", "restart", "rm"):
            return cmd_lifecycle(Engine(scope), cmd, rest)
        raise CliError(f"docker: '{cmd}' is not a docker command.\nSee 'docker --help'")
    except CliError as exc:
        _err(exc.message.rstrip("\n") + "\n")
        return exc.code
    except BrokenPipeError:
        return 141
    except KeyboardInterrupt:
        return 130
