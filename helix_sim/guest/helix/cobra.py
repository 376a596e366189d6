"""A cobra/pflag clone (cobra v1.10.2, pflag v1.0.10): flags, the command tree, usage and help texts, and
cobra's error path (stdout gets ``Error: <msg>``, the usage text, then ``<msg>`` again; exit 1).

:func:`execute` finds the subcommand, parses its flags, checks its arguments and runs it with a
:class:`Context`; a RunE fails by raising :class:`~helix_sim.gofmt.GoError`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Sequence

from ...gofmt import GoError, go_quote, go_quote_rune, parse_bool, parse_int
from .timing import CliTiming

DEFAULT_URL = "http://localhost:8080"
DEFAULT_TOKEN = "oh-hallo-insecure-token"


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
                values[flag.name] = parse_bool(raw)
            elif flag.kind == "int":
                values[flag.name] = parse_int(raw)
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

    @property
    def timing(self) -> CliTiming:
        return CliTiming.from_env(self.env)


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
