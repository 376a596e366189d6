"""``docker compose``: ``up -d``, ``ps``, ``exec``, ``logs``, ``stop``, ``rm``, ``down``, ``config``, ``version``,
with compose's progress lines and labels."""

from __future__ import annotations

import json
from typing import Any

from .compose_project import Project, Service, load_project
from .containers import LOGS_SPEC, PS_HEADERS, log_params, ps_row, run_in_container
from .engine import Engine
from .flags import parse_args
from .formatting import render_table, short_command
from .identity import COMPOSE_VERSION, NUMBER_LABEL, ONEOFF_LABEL, PROJECT_LABEL, SERVICE_LABEL
from .output import CliError, print_bytes, print_err, print_out


def _progress(kind: str, name: str, state: str) -> None:
    print_err(f" {kind} {name}  {state}\n")


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
            print_out("".join(r["Id"] + "\n" for r in rows))
            return 0
        if a.flags.get("services"):
            print_out("".join((r.get("Labels") or {}).get(SERVICE_LABEL, "") + "\n" for r in rows))
            return 0
        data = []
        for r in rows:
            row = ps_row(r, self.e.find(r["Id"]), no_trunc=True)
            row["Command"] = short_command(r.get("Command") or "")
            data.append(row)
        fmt = a.flags.get("format") or "table {{.Name}}\t{{.Image}}\t{{.Command}}\t{{.Service}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}"
        if fmt == "json":
            print_out("".join(json.dumps(d, separators=(",", ":")) + "\n" for d in data))
            return 0
        print_out(render_table(fmt, data, {**PS_HEADERS, "RunningFor": "CREATED"}))
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
        a = parse_args(argv, {**LOGS_SPEC, "--no-log-prefix": "no_prefix:bool", "--no-color": "no_color:bool"})
        targets = []
        for summary in self.containers():
            labels = summary.get("Labels") or {}
            if a.positional and labels.get(SERVICE_LABEL) not in a.positional:
                continue
            targets.append(summary)
        targets.sort(key=lambda r: (r.get("Names") or [""])[0])
        width = max((len((t.get("Names") or [""])[0].lstrip("/")) for t in targets), default=0)
        params = log_params(a.flags)
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
                    print_bytes(prefix + line + b"\n")
            if pending:
                print_bytes(prefix + pending + b"\n")
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
            print_err("No stopped containers\n")
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
        print_out(f"Docker Compose version v{COMPOSE_VERSION}\n")
        return 0
    project = load_project(a.flags.get("file", []), a.flags.get("project"), a.flags.get("profile", []),
                           a.flags.get("project_dir"))
    if sub == "config":
        c = parse_args(rest, {"--services": "services:bool", "--profiles": "profiles:bool", "-q": "quiet:bool",
                              "--quiet": "quiet:bool"})
        if c.flags.get("services"):
            print_out("".join(s.name + "\n" for s in project.ordered()))
        elif c.flags.get("profiles"):
            print_out("".join(p + "\n" for p in sorted({p for s in project.services.values() for p in s.profiles})))
        elif not c.flags.get("quiet"):
            print_out(json.dumps({"name": project.name, "services": {s.name: s.config for s in project.active()}},
                            indent=2) + "\n")
        return 0
    commands = {"up": Compose.up, "ps": Compose.ps, "exec": Compose.exec, "logs": Compose.logs,
                "stop": Compose.stop, "rm": Compose.rm, "down": Compose.down}
    if sub not in commands:
        raise CliError(f"unknown docker command: \"compose {sub}\"")
    return commands[sub](Compose(project, Engine(scope)), rest)
