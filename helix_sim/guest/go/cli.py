"""`go` in the simulated guest: just enough of the Go tool to build the helix CLI.

``cd ~/helix/api && CGO_ENABLED=0 go build -o /tmp/helix .`` writes, at the ``-o`` path, an
executable launcher that runs the simulated CLI (``python -m helix_sim.guest.helix``) with the
interpreter and import path of this simulator, as a real build writes a self-contained binary.
``go version`` and ``go env`` answer like Go 1.25; other commands fail the way ``go`` does.

Run as ``python -m helix_sim.guest.go ARGS`` by the guest's ``bin/go``: it imports nothing
from ``harness``, so a build does not pay for the simulator's imports.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import tempfile
from pathlib import Path

from ..._paths import IMPORT_ROOT

GO_VERSION = "go1.25.4"

_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
#: `go build` flags that take a value, and boolean ones (`-flag` or `-flag=bool`).
_VALUE_FLAGS = {
    "o", "p", "C", "asmflags", "buildmode", "compiler", "gccgoflags", "gcflags", "installsuffix",
    "ldflags", "mod", "modfile", "overlay", "pgo", "pkgdir", "tags", "toolexec", "covermode", "coverpkg",
}
_BOOL_FLAGS = {"a", "n", "v", "x", "race", "msan", "asan", "cover", "work", "trimpath", "linkshared",
               "modcacherw", "buildvcs", "json"}

_BUILD_USAGE = "usage: go build [-o output] [build flags] [packages]\nRun 'go help build' for details.\n"
_GO_USAGE = """Go is a tool for managing Go source code.

Usage:

\tgo <command> [arguments]

The commands are:

\tbuild       compile packages and dependencies
\tenv         print Go environment information
\tversion     print Go version

Use "go help <command>" for more information about a command.
"""

LAUNCHER = """#!/bin/sh
# helix: the simulated helix CLI, "built" by helix-e2e's go shim from {source}.
# It runs helix_sim.guest.helix with the interpreter and checkout of the simulator that built it.
HELIX_CLI_ARGV0="$0"
export HELIX_CLI_ARGV0
PYTHONPATH={pythonpath}${{PYTHONPATH:+:$PYTHONPATH}}
export PYTHONPATH
exec {python} -m helix_sim.guest.helix "$@"
"""


def _sh_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def goarch() -> str:
    return os.environ.get("GOARCH") or _GOARCH.get(platform.machine().lower(), platform.machine().lower())


def goos() -> str:
    return os.environ.get("GOOS") or ("darwin" if sys.platform == "darwin" else "linux")


class GoError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def find_module(start: Path) -> tuple[Path, str]:
    """The directory holding go.mod at or above ``start``, and its module path."""
    for d in (start, *start.parents):
        gomod = d / "go.mod"
        if gomod.is_file():
            match = re.search(r"^module\s+(\S+)", gomod.read_text(errors="replace"), re.M)
            if not match:
                raise GoError(f"go: error reading {gomod}: no module declaration in go.mod")
            return d, match.group(1).strip('"')
    raise GoError("go: go.mod file not found in current directory or any parent directory; see 'go help modules'")


def _package_name(pkg_dir: Path) -> str:
    sources = sorted(p for p in pkg_dir.glob("*.go") if not p.name.endswith("_test.go"))
    if not sources:
        raise GoError(f"no Go files in {pkg_dir}")
    for src in sources:
        match = re.search(r"^package\s+(\w+)", src.read_text(errors="replace"), re.M)
        if match:
            return match.group(1)
    raise GoError(f"{sources[0]}:1:1: expected 'package', found 'EOF'")


def parse_build_args(args: list[str]) -> tuple[dict[str, str], list[str]]:
    flags: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        name, eq, value = arg.lstrip("-").partition("=")
        if name in _VALUE_FLAGS:
            if not eq:
                i += 1
                if i >= len(args):
                    raise GoError(f"flag needs an argument: -{name}\n{_BUILD_USAGE}".rstrip("\n"), code=2)
                value = args[i]
            flags[name] = value
        elif name in _BOOL_FLAGS:
            if eq and value not in ("true", "false", "1", "0", "t", "f", "TRUE", "FALSE", "True", "False"):
                raise GoError(f'invalid boolean value "{value}" for -{name}: parse error\n{_BUILD_USAGE}'.rstrip("\n"), code=2)
            flags[name] = value if eq else "true"
        else:
            raise GoError(f"flag provided but not defined: -{name}\n{_BUILD_USAGE}".rstrip("\n"), code=2)
        i += 1
    return flags, args[i:]


def build(args: list[str], cwd: Path) -> int:
    flags, packages = parse_build_args(args)
    if "C" in flags:
        cwd = (cwd / flags["C"]).resolve()
    packages = packages or ["."]
    if len(packages) != 1:
        raise GoError("go: the simulated toolchain builds one main package at a time")
    mod_dir, module = find_module(cwd)
    pkg = packages[0]
    if not (pkg == "." or pkg.startswith(("./", "../"))):
        if pkg == module or pkg.startswith(module + "/"):
            pkg = "./" + pkg[len(module):].lstrip("/") if pkg != module else "."
            pkg_dir = (mod_dir / pkg).resolve()
        else:
            raise GoError(f"package {pkg} is not in std (/usr/local/go/src/{pkg})")
    else:
        pkg_dir = (cwd / pkg).resolve()
    if not pkg_dir.is_dir():
        raise GoError(f"stat {pkg_dir}: directory not found")
    rel = pkg_dir.relative_to(mod_dir).as_posix() if pkg_dir != mod_dir else ""
    import_path = f"{module}/{rel}" if rel else module
    if _package_name(pkg_dir) != "main":
        return 0  # a non-main package builds to nothing, as with `go build` without -o
    name = import_path.rsplit("/", 1)[-1]
    out = flags.get("o")
    if out is None:
        target = cwd / name
    else:
        target = Path(out) if os.path.isabs(out) else cwd / out
        if out.endswith("/") or target.is_dir():
            target = target / name
    if "v" in flags and flags["v"] in ("true", "1", "t", "TRUE", "True"):
        print(import_path, file=sys.stderr)
    write_launcher(target, source=str(pkg_dir))
    return 0


def write_launcher(target: Path, *, source: str) -> None:
    """Write the launcher atomically (a running old binary keeps working, as after a real build)."""
    text = LAUNCHER.format(
        source=source.replace("\n", " "),
        pythonpath=_sh_quote(str(IMPORT_ROOT)),
        python=_sh_quote(sys.executable),
    )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        raise GoError(f"go: creating {target}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise GoError(f"go build {target.name}: copying {tmp}: open {target}: {exc.strerror or exc}") from None


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
