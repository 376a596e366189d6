"""The docker CLI's command line: global flags, then one of the commands of :mod:`.containers`,
:mod:`.compose` or :mod:`.dial_stdio`; a :class:`~.output.CliError` ends it with its message and exit code."""

from __future__ import annotations

import os
import sys
from typing import Callable

from .compose import cmd_compose
from .containers import cmd_exec, cmd_image, cmd_info, cmd_inspect, cmd_lifecycle, cmd_logs, cmd_ps, cmd_version
from .dial_stdio import dial_stdio
from .engine import Engine
from .flags import parse_args
from .identity import CLIENT_VERSION
from .output import CliError, print_err, print_out


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
            print_out(f"Docker version {CLIENT_VERSION}, build 4c9b3b0\n")
            return 0
        if not g.positional:
            print_out("Usage:  docker [OPTIONS] COMMAND\n\nA self-sufficient runtime for containers\n")
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
        print_err(exc.message.rstrip("\n") + "\n")
        return exc.code
    except BrokenPipeError:
        return 141
    except KeyboardInterrupt:
        return 130
