"""A compose project: the files, ``.env`` and ``COMPOSE_PROFILES``, variable interpolation, services in
dependency order, and what each service's container gets (name, image, environment, ports)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .identity import COMPOSE_FILES
from .output import CliError
from .yaml_lite import YamlError, parse_yaml

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
