"""The container commands (``ps``, ``logs``, ``inspect``, ``info``, ``version``, ``start|stop|restart|rm``,
``exec``, ``image inspect``) and what ``exec`` runs inside the simulated containers."""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from typing import Any

from ...gofmt import bytes_size, human_duration
from .engine import Engine
from .flags import parse_args
from .formatting import parse_since, ports_text, render_table, render_template, short_command
from .identity import CLIENT_VERSION, COMPOSE_VERSION, PROJECT_LABEL, SERVICE_LABEL
from .output import CliError, print_bytes, print_err, print_out


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
            print_out(f"{where} - accepting connections\n")
        return 0
    if prog == "docker" and (service.startswith("sandbox") or "sandbox" in image):
        from .cli import main  # noqa: PLC0415 - the sandbox's own docker CLI (cli imports this module)

        return main(cmd[1:], scope=name)
    if prog == "true":
        return 0
    if prog == "false":
        return 1
    if prog == "echo":
        print_out(" ".join(cmd[1:]) + "\n")
        return 0
    print_err(
        "OCI runtime exec failed: exec failed: unable to start container process: exec: "
        f'"{cmd[0]}": executable file not found in $PATH: unknown\n'
    )
    return 126


def exec_in(engine: Engine, container: str, cmd: list[str]) -> int:
    attrs = engine.find(container)
    if attrs is None:
        raise CliError(f"Error response from daemon: No such container: {container}")
    if not (attrs.get("State") or {}).get("Running"):
        raise CliError(f"Error response from daemon: container {attrs.get('Id', container)} is not running")
    return run_in_container(engine, attrs, cmd)


# --- docker commands ------------------------------------------------------------------------

PS_HEADERS = {
    "ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "RunningFor": "CREATED", "CreatedAt": "CREATED AT",
    "Status": "STATUS", "Ports": "PORTS", "Names": "NAMES", "Name": "NAME", "State": "STATE", "Labels": "LABELS",
    "Service": "SERVICE", "Project": "PROJECT", "Size": "SIZE", "Mounts": "MOUNTS", "Networks": "NETWORKS",
}


def ps_row(summary: dict[str, Any], attrs: dict[str, Any] | None, no_trunc: bool = False) -> dict[str, Any]:
    labels = summary.get("Labels") or {}
    created = summary.get("Created") or time.time()
    name = (summary.get("Names") or ["/"])[0].lstrip("/")
    command = summary.get("Command") or ""
    return {
        "ID": summary.get("Id", "") if no_trunc else summary.get("Id", "")[:12],
        "Image": summary.get("Image", ""),
        "Command": short_command(command, no_trunc),
        "CreatedAt": _dt.datetime.fromtimestamp(created).astimezone().strftime("%Y-%m-%d %H:%M:%S %z %Z"),
        "RunningFor": f"{human_duration(time.time() - created)} ago",
        "Ports": ports_text(attrs or summary),
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
        print_out("".join(r["Id"][:12] + "\n" for r in rows))
        return 0
    data = [ps_row(r, engine.find(r["Id"]), bool(a.flags.get("no_trunc"))) for r in rows]
    fmt = a.flags.get("format") or "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
    if fmt == "json":
        print_out("".join(json.dumps(d, separators=(",", ":")) + "\n" for d in data))
        return 0
    print_out(render_table(fmt, data, PS_HEADERS))
    return 0


LOGS_SPEC = {"--since": "since:str", "--until": "until:str", "-t": "timestamps:bool", "--timestamps": "timestamps:bool",
              "-n": "tail:str", "--tail": "tail:str", "-f": "follow:bool", "--follow": "follow:bool",
              "--details": "details:bool"}


def log_params(flags: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {"stdout": 1, "stderr": 1, "follow": int(bool(flags.get("follow"))),
                              "timestamps": int(bool(flags.get("timestamps"))), "tail": flags.get("tail", "all")}
    if flags.get("since"):
        params["since"] = parse_since(flags["since"])
    if flags.get("until"):
        params["until"] = parse_since(flags["until"])
    return params


def cmd_logs(engine: Engine, argv: list[str]) -> int:
    a = parse_args(argv, LOGS_SPEC)
    if len(a.positional) != 1:
        raise CliError('"docker logs" requires exactly 1 argument.\nSee \'docker logs --help\'.\n\n'
                       "Usage:  docker logs [OPTIONS] CONTAINER\n\nFetch the logs of a container")
    attrs = engine.inspect(a.positional[0])
    for stream, data in engine.raw_logs(attrs["Id"], log_params(a.flags)):
        print_bytes(data, stream)
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
        print_out("".join(render_template(a.flags["format"], d) + "\n" for d in found))
    else:
        print_out(json.dumps(found, indent=4, ensure_ascii=False) + "\n")
    if missing:
        print_err("".join(f"Error: No such object: {name}\n" for name in missing))
        return 1
    return 0


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
        print_out(render_template(a.flags["format"], info) + "\n")
        return 0
    print_out(
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
        f" Total Memory: {bytes_size(float(info.get('MemTotal', 0)))}\n"
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
    print_out(
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
            print_out(name + "\n")
        except CliError as exc:
            if verb == "rm" and a.flags.get("force") and "No such container" in exc.message:
                continue
            print_err(exc.message + "\n")
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
    return exec_in(engine, a.positional[0], a.positional[1:])


def cmd_image(engine: Engine, argv: list[str]) -> int:
    if not argv or argv[0] != "inspect":
        raise CliError(f"docker image {argv[0] if argv else ''}: not simulated (only `image inspect`)")
    a = parse_args(argv[1:], {"-f": "format:str", "--format": "format:str"})
    found, status = [], 0
    for name in a.positional:
        try:
            found.append(engine.call(engine.api.inspect_image, name))
        except CliError:
            print_err(f"Error response from daemon: No such image: {name}\n")
            status = 1
    if a.flags.get("format"):
        print_out("".join(render_template(a.flags["format"], d) + "\n" for d in found))
    else:
        print_out(json.dumps(found, indent=4) + "\n")
    return status
