"""`go` in the simulated guest: just enough of the Go tool to build the helix CLI.

``cd ~/helix/api && CGO_ENABLED=0 go build -o /tmp/helix .`` writes, at the ``-o`` path, an
executable launcher that runs the simulated CLI (``python -m helix_sim.guest.helix``) with the
interpreter and import path of this simulator, as a real build writes a self-contained binary.
``go version`` and ``go env`` answer like Go 1.25; other commands fail the way ``go`` does.
This module holds the command line; :mod:`.build` the build.

Run as ``python -m helix_sim.guest.go ARGS`` by the guest's ``bin/go``: it imports nothing
from ``harness``, so a build does not pay for the simulator's imports.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from ...gofmt import GoError
from .build import build, find_module

GO_VERSION = "go1.25.4"

_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}

_GO_USAGE = """Go is a tool for managing Go source code.

Usage:

\tgo <command> [arguments]

The commands are:

\tbuild       compile packages and dependencies
\tenv         print Go environment information
\tversion     print Go version

Use "go help <command>" for more information about a command.
"""


def goarch() -> str:
    return os.environ.get("GOARCH") or _GOARCH.get(platform.machine().lower(), platform.machine().lower())


def goos() -> str:
    return os.environ.get("GOOS") or ("darwin" if sys.platform == "darwin" else "linux")


def go_env(names: list[str]) -> int:
    values = {
        "GOARCH": goarch(),
        "GOOS": goos(),
        "GOVERSION": GO_VERSION,
        "CGO_ENABLED": os.environ.get("CGO_ENABLED", "0"),
        "GOROOT": "/usr/local/go",
        "GOPATH": os.environ.get("GOPATH") or os.path.join(os.environ.get("HOME", "/root"), "go"),
        "GOMOD": "",
        "GOFLAGS": os.environ.get("GOFLAGS", ""),
    }
    try:
        values["GOMOD"] = str(find_module(Path.cwd())[0] / "go.mod")
    except GoError:
        values["GOMOD"] = os.devnull
    if names:
        for name in names:
            print(values.get(name, ""))
    else:
        for key, value in values.items():
            print(f"{key}='{value}'")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if not args:
            sys.stderr.write(_GO_USAGE)
            return 2
        cmd, rest = args[0], args[1:]
        if cmd == "version":
            print(f"go version {GO_VERSION} {goos()}/{goarch()}")
            return 0
        if cmd == "env":
            return go_env(rest)
        if cmd == "build":
            return build(rest, Path.cwd())
        if cmd in ("help", "-h", "--help"):
            sys.stderr.write(_GO_USAGE)
            return 0 if cmd == "help" else 2
        sys.stderr.write(f"go {cmd}: unknown command\nRun 'go help' for usage.\n")
        return 2
    except GoError as exc:
        sys.stderr.write(exc.message + "\n")
        return exc.code
