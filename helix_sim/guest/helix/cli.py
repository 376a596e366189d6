"""The helix CLI's entry point: :func:`main` builds the command tree and runs it; as a process it reads
./.env first (godotenv), as the Go binary does."""

from __future__ import annotations

import os
import sys
from typing import IO

from .cobra import Out, execute
from .commands import NEWEST, build_tree


def load_dotenv(env: dict[str, str], path: str = ".env") -> None:
    """godotenv.Load(): KEY=value lines of ./.env, never overriding the environment."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, eq, value = line.partition("=")
        if not eq:
            continue
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        env.setdefault(key, value)


def main(argv: list[str] | None = None, *, stdout: IO[bytes] | None = None, env: dict[str, str] | None = None) -> int:
    """Run the CLI. As a process (``argv`` None) it reads ./.env as the Go binary does."""
    args = list(sys.argv[1:] if argv is None else argv)
    environ = dict(os.environ if env is None else env)
    argv0 = environ.pop("HELIX_CLI_ARGV0", "") or "helix"
    generation = environ.pop("HELIX_CLI_GENERATION", "")  # baked into the launcher by the go shim
    if argv is None:
        load_dotenv(environ)
    env = environ
    out = Out(stdout if stdout is not None else sys.stdout.buffer)
    return execute(build_tree(argv0, generation or NEWEST), args, env, out)
