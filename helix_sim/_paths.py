"""Where the simulator's code lives, for the launchers it writes (utmctl, the guest's shims, the built helix CLI)."""

from __future__ import annotations

import os
import shlex
import stat
import sys
from pathlib import Path

#: The ``helix_sim`` package directory.
PACKAGE_DIR = Path(__file__).resolve().parent
#: The directory that holds ``helix_sim`` (and ``harness``): what a launcher puts on ``PYTHONPATH``.
IMPORT_ROOT = PACKAGE_DIR.parent


def write_python_launcher(path: str | os.PathLike[str], *, module: str, comment: list[str], env: dict[str, str],
                          python: str | None = None, python_flags: str = "") -> Path:
    """A ``/bin/sh`` script at ``path`` that exports ``env`` and :data:`IMPORT_ROOT` on ``PYTHONPATH``, then
    execs ``python -m module "$@"`` (how the sim's utmctl and its "bundled QEMU" run). Written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    python = python or sys.executable
    lines = ["#!/bin/sh", *(f"# {c}" for c in comment)]
    for name, value in env.items():
        lines += [f"{name}={shlex.quote(value)}", f"export {name}"]
    lines += [
        f'PYTHONPATH={shlex.quote(str(IMPORT_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}',
        "export PYTHONPATH",
        f'exec {shlex.quote(python)} {python_flags + " " if python_flags else ""}-m {module} "$@"',
        "",
    ]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines))
    tmp.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    os.replace(tmp, path)
    return path
