"""The sim's ``utmctl``: UTM's CLI (``utmctl/UTMCtl.swift``), talking to the sim's "UTM.app".

Run as ``python -m helix_sim.host.utmctl`` through the launcher the simulator writes at
``<root>/host/bin/utmctl`` (:func:`write_launcher`), which sets ``HELIX_SIM_CONTROL`` to the
control file of the :class:`helix_sim.host.utm_app.UtmHost` control server. Real utmctl sends Apple
Events to UTM.app; this one posts JSON to that server, which also decides the faults.

Output and exit codes follow the real tool:

- ``list``: header + ``<UUID> <status padded to 8> <name>`` rows; ``status``: one word; ``version``.
- ``start``/``stop`` return at once (the guest boots or stops later: poll ``status``).
- Errors raised inside utmctl go through Swift ArgumentParser: ``Error: Virtual machine not found.``,
  exit 1; usage errors print ``Error: …`` + usage and exit 64.
- Errors raised inside UTM.app come back as a failed Apple Event: utmctl's event handler writes
  ``Error from event: The operation couldn’t be completed. (OSStatus error N.)`` (and the error
  string, e.g. ``Operation not available.``) to stderr and the process **exits 0**.
- No GUI session: ``NOTE: utmctl does not work from SSH sessions or before logging in.``, exit 1.

Keep this module light: it starts for every call (stdlib + :mod:`harness.protocols.utmctl` only).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from harness.protocols import utmctl as fmt

from .._paths import write_python_launcher

CONTROL_ENV = "HELIX_SIM_CONTROL"
EXIT_FAILURE = 1
EXIT_VALIDATION = 64  # ArgumentParser's ExitCode.validationFailure (EX_USAGE)
IDENT_HELP = "Either the UUID or the complete name of the virtual machine."
ATTACH_WARNING = "WARNING: attach command is not implemented yet!"


@dataclass(frozen=True)
class Command:
    name: str
    abstract: str
    ident: bool = True
    flags: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    #: extra positional arguments after the identifier, by their usage names
    positionals: tuple[str, ...] = ()
    #: sub-subcommands (`file pull|push`, `usb list|connect|disconnect`)
    children: tuple[str, ...] = ()
    aliases: dict[str, str] = field(default_factory=dict)


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("list", "Enumerate all registered virtual machines.", ident=False),
        Command("status", "Query the status of a virtual machine."),
        Command(
            "start",
            "Start a virtual machine or resume a suspended virtual machine.",
            flags=("--attach", "--disposable", "--recovery"),
            aliases={"-a": "--attach"},
        ),
        Command("suspend", "Suspend running a virtual machine to memory.", flags=("--save-state",), aliases={"-s": "--save-state"}),
        Command("stop", "Shuts down a running virtual machine.", flags=("--force", "--kill", "--request")),
        Command("attach", "Redirect the serial input/output to this terminal.", options=("--index",)),
        Command("file", "Guest agent file operations.", children=("pull", "push"), positionals=("<path>",)),
        Command("exec", "Execute an application on the guest.", flags=("--input",), options=("--env", "--cmd")),
        Command("ip-address", "List all IP addresses associated with network interfaces on the guest."),
        Command("clone", "Clone an existing virtual machine.", options=("--name",)),
        Command("delete", "Delete a virtual machine."),
        Command("usb", "USB device handling.", ident=False, children=("list", "connect", "disconnect")),
        Command("version", "Print UTM version.", ident=False),
    )
}


class UsageError(Exception):
    """An ArgumentParser validation error: ``Error: …`` + usage, exit 64."""

    def __init__(self, message: str, command: Command | None, *, help_line: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.command = command
        self.help_line = help_line


def _usage(command: Command | None) -> str:
    if command is None:
        return "utmctl <subcommand>"
    parts = ["utmctl", command.name]
    if command.children:
        parts.append("<subcommand>")
        return " ".join(parts)
    parts += ["[--debug]", "[--hide]"]
    if command.ident:
        parts.append("<identifier>")
    parts += [f"[{f}]" for f in command.flags]
    parts += [f"[{o} <{o[2:]}>]" for o in command.options if o != "--cmd"]
    parts += list(command.positionals)
    if "--cmd" in command.options:
        parts.append("--cmd <cmd> ...")
    return " ".join(parts)


def _root_help() -> str:
    lines = [
        "OVERVIEW: CLI tool for controlling UTM virtual machines.",
        "",
        "USAGE: utmctl <subcommand>",
        "",
        "OPTIONS:",
        "  -h, --help              Show help information.",
        "",
        "SUBCOMMANDS:",
    ]
    lines += [f"  {c.name:<24}{c.abstract}" for c in COMMANDS.values()]
    lines += ["", "  See 'utmctl help <subcommand>' for detailed help."]
    return "\n".join(lines) + "\n"


def _command_help(command: Command) -> str:
    lines = [f"OVERVIEW: {command.abstract}", "", f"USAGE: {_usage(command)}", ""]
    if command.ident:
        lines += ["ARGUMENTS:", f"  <identifier>            {IDENT_HELP}", ""]
    lines += ["OPTIONS:", "  -d, --debug             Show debug logging.", "  --hide                  Hide the main UTM window."]
    lines += [f"  {f:<24}" for f in command.flags]
    lines += ["  -h, --help              Show help information."]
    return "\n".join(lines) + "\n"


@dataclass
class Parsed:
    command: Command
    identifier: str | None = None
    flags: set[str] = field(default_factory=set)
    options: dict[str, list[str]] = field(default_factory=dict)
    positionals: list[str] = field(default_factory=list)
    child: str | None = None
    help: bool = False


def parse(argv: list[str]) -> Parsed | None:
    """Parse like ArgumentParser. ``None`` means root help. Raises :class:`UsageError`."""
    if not argv or argv[0] in ("-h", "--help"):
        return None
    name, rest = argv[0], argv[1:]
    if name == "help":
        if not rest:
            return None
        name, rest = rest[0], ["--help"]
    command = COMMANDS.get(name)
    if command is None:
        if name.startswith("-"):
            raise UsageError(f"Unknown option '{name}'", None)
        raise UsageError(f"Unexpected argument '{name}'", None)
    parsed = Parsed(command)
    if command.children:
        if not rest or rest[0] in ("-h", "--help"):
            parsed.help = True
            return parsed
        if rest[0] not in command.children:
            raise UsageError(f"Unexpected argument '{rest[0]}'", command)
        parsed.child, rest = rest[0], rest[1:]
    positionals: list[str] = []
    i = 0
    while i < len(rest):
        arg = rest[i]
        arg = command.aliases.get(arg, arg)
        if arg in ("-h", "--help"):
            parsed.help = True
        elif arg in ("-d", "--debug", "--hide"):
            pass
        elif arg in command.flags:
            parsed.flags.add(arg)
        elif arg == "--cmd" and "--cmd" in command.options:
            parsed.options["--cmd"] = rest[i + 1 :]
            break
        elif arg.split("=", 1)[0] in command.options:
            key, sep, value = arg.partition("=")
            if not sep:
                if i + 1 >= len(rest):
                    raise UsageError(f"Missing value for '{key} <{key[2:]}>'", command)
                i += 1
                value = rest[i]
            parsed.options.setdefault(key, []).append(value)
        elif arg.startswith("-") and arg != "-":
            raise UsageError(f"Unknown option '{arg}'", command)
        else:
            positionals.append(arg)
        i += 1
    if parsed.help:
        return parsed
    wanted = (["<identifier>"] if command.ident and parsed.child != "list" else []) + (
        list(command.positionals) if command.name == "file" else []
    )
    if command.name == "usb" and parsed.child in ("connect", "disconnect"):
        wanted = ["<identifier>", "<device>"]
    if len(positionals) < len(wanted):
        missing = wanted[len(positionals)]
        help_line = f"Help:  {missing}  {IDENT_HELP}" if missing == "<identifier>" else None
        raise UsageError(f"Missing expected argument '{missing}'", command, help_line=help_line)
    if len(positionals) > len(wanted):
        raise UsageError(f"Unexpected argument '{positionals[len(wanted)]}'", command)
    if wanted and wanted[0] == "<identifier>":
        parsed.identifier = positionals[0]
    parsed.positionals = positionals[1:]
    if command.name == "stop" and len(parsed.flags) > 1:
        raise UsageError("You can only specify one of: --force, --kill, or --request", command)
    if command.name == "exec" and "--cmd" not in parsed.options:
        raise UsageError("Missing expected argument '--cmd <cmd> ...'", command)
    return parsed


def _request_of(parsed: Parsed) -> dict[str, Any]:
    command = parsed.command.name
    body: dict[str, Any] = {"command": command, "identifier": parsed.identifier}
    if command == "start":
        body["disposable"] = "--disposable" in parsed.flags
    if command == "stop":
        mode = next((f[2:] for f in ("--force", "--kill", "--request") if f in parsed.flags), "force")
        body["mode"] = mode
    if parsed.child:
        body["child"] = parsed.child
    return body


def _load_control(env: dict[str, str]) -> str | None:
    path = env.get(CONTROL_ENV)
    if not path:
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    url = data.get("url") if isinstance(data, dict) else None
    return url if isinstance(url, str) else None


def _ask(url: str, body: dict[str, Any], timeout: float = 15.0) -> dict[str, Any] | None:
    req = urllib.request.Request(
        url + "/utmctl", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
    try:
        with opener.open(req, timeout=timeout) as resp:
            data = json.loads(resp.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run(argv: list[str], *, stdout: TextIO, stderr: TextIO, env: dict[str, str] | None = None) -> int:
    """The whole CLI, testable: returns the exit code."""
    env = dict(os.environ) if env is None else env
    try:
        parsed = parse(argv)
    except UsageError as exc:
        stderr.write(f"Error: {exc.message}\n")
        if exc.help_line:
            stderr.write(exc.help_line + "\n")
        stderr.write(f"Usage: {_usage(exc.command)}\n")
        see = f"utmctl {exc.command.name} --help" if exc.command else "utmctl --help"
        stderr.write(f"  See '{see}' for more information.\n")
        return EXIT_VALIDATION
    if parsed is None:
        stdout.write(_root_help())
        return 0
    if parsed.help:
        stdout.write(_command_help(parsed.command))
        return 0
    url = _load_control(env)
    result = _ask(url, _request_of(parsed)) if url else None
    if result is None:
        # UTM.app cannot be reached (the simulator is not running).
        stderr.write("Error: Application not found.\n")
        return EXIT_FAILURE
    kind = result.get("result")
    if kind == "no_gui":
        stderr.write(fmt.NO_GUI_MESSAGE + "\n")
        return EXIT_FAILURE
    if kind == "not_found":
        stderr.write("Error: Virtual machine not found.\n")
        return EXIT_FAILURE
    if kind == "event_error":
        stderr.write(fmt.format_event_error(int(result.get("osstatus", -10000))))
        if result.get("message"):
            stderr.write(str(result["message"]) + "\n")
        return 0  # the event handler returns nil and utmctl carries on: exit 0
    if kind != "ok":
        stderr.write(f"Error: {result.get('message') or 'unexpected answer from UTM'}\n")
        return EXIT_FAILURE
    command = parsed.command.name
    if command == "list":
        entries = [fmt.VmEntry(vm["uuid"], vm["status"], vm["name"]) for vm in result.get("vms", [])]
        stdout.write(fmt.format_list(entries))
    elif command == "status":
        stdout.write(fmt.format_status(result["status"]))
    elif command == "version":
        stdout.write(f"{result['version']}\n")
    elif command == "start" and "--attach" in parsed.flags:
        stdout.write(ATTACH_WARNING + "\n")
    elif command == "attach":
        stdout.write(ATTACH_WARNING + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    code = run(args, stdout=sys.stdout, stderr=sys.stderr)
    sys.stdout.flush()
    return code


def write_launcher(path: str | os.PathLike[str], *, control_file: str | os.PathLike[str], python: str | None = None) -> Path:
    """Write the ``utmctl`` launcher script: execs this module with the right interpreter and path."""
    return write_python_launcher(path, module="helix_sim.host.utmctl", python=python,
                                 env={CONTROL_ENV: str(Path(control_file).resolve())}, comment=[
                                     "utmctl of the helix-e2e simulator: talks to the sim's UTM.app (see "
                                     "helix_sim/host/utmctl.py)."])


if __name__ == "__main__":
    raise SystemExit(main())
