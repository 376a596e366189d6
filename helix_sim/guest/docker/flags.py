"""docker's pflag-style argument parsing: every spelling of a flag maps to ``name:kind``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .output import CliError


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
