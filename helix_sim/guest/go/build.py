"""``go build``: find the module and the main package, and write the "binary": an executable launcher that
runs the simulated helix CLI (``python -m helix_sim.guest.helix``) with this simulator's interpreter and
import path, as a real build writes a self-contained binary.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

from ..._paths import IMPORT_ROOT
from ...gofmt import GoError

#: `go build` flags that take a value, and boolean ones (`-flag` or `-flag=bool`).
_VALUE_FLAGS = {
    "o", "p", "C", "asmflags", "buildmode", "compiler", "gccgoflags", "gcflags", "installsuffix",
    "ldflags", "mod", "modfile", "overlay", "pgo", "pkgdir", "tags", "toolexec", "covermode", "coverpkg",
}
_BOOL_FLAGS = {"a", "n", "v", "x", "race", "msan", "asan", "cover", "work", "trimpath", "linkshared",
               "modcacherw", "buildvcs", "json"}

_BUILD_USAGE = "usage: go build [-o output] [build flags] [packages]\nRun 'go help build' for details.\n"

LAUNCHER = """#!/bin/sh
# helix: the simulated helix CLI, "built" by helix-e2e's go shim from {source}.
# It runs helix_sim.guest.helix with the interpreter and checkout of the simulator that built it.
HELIX_CLI_ARGV0="$0"
HELIX_CLI_GENERATION={generation}
export HELIX_CLI_ARGV0 HELIX_CLI_GENERATION
PYTHONPATH={pythonpath}${{PYTHONPATH:+:$PYTHONPATH}}
export PYTHONPATH
exec {python} -m helix_sim.guest.helix "$@"
"""


def _sh_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


#: The CLI a checkout without the generation marker builds (the newest).
DEFAULT_GENERATION = "2026-11"
_GENERATION_RE = re.compile(r'^const CLIGeneration = "([0-9]{4}-[0-9]{2})"', re.M)


def cli_generation(mod_dir: Path) -> str:
    """Which spectask CLI the checkout's sources build (``pkg/cli/spectask/cli_generation.go``)."""
    try:
        text = (mod_dir / "pkg" / "cli" / "spectask" / "cli_generation.go").read_text(errors="replace")
    except OSError:
        return DEFAULT_GENERATION
    match = _GENERATION_RE.search(text)
    return match.group(1) if match else DEFAULT_GENERATION


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
    write_launcher(target, source=str(pkg_dir), generation=cli_generation(mod_dir))
    return 0


def write_launcher(target: Path, *, source: str, generation: str = DEFAULT_GENERATION) -> None:
    """Write the launcher atomically (a running old binary keeps working, as after a real build)."""
    text = LAUNCHER.format(
        source=source.replace("\n", " "),
        generation=_sh_quote(generation),
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
