"""Cold start of each console command, and what it imports (issue 15).

Each ``helix-e2e`` subcommand runs as a whole command in a fresh process (best of N wall times), beside
the interpreter's own start (``python -c pass``) and the import of PyAV and numpy (``python -c "import av,
numpy"``, what a command that needs no decoder must not pay), both measured in the same run. The modules
a command loaded are read from one extra run of the same command under a probe that lists them.

Goals: ``helix-e2e doctor --json`` within :data:`DOCTOR_GOAL_S`; ``analyze --no-decode``, ``doctor``,
``probe-frame-export`` and ``scan-logs`` import neither PyAV nor numpy.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from harness.config import ENV_OVERRIDES, TARGET_ENV
from helix_sim.recordings import synthesize_recording

from .table import Row

DOCTOR_GOAL_S = 0.3
HEAVY = ("av", "numpy")
PROBE = (
    "import json, sys\n"
    "from harness.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit:\n"
    "    pass\n"
    "print('HEAVY=' + json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.stderr)\n"
)


def _free_port() -> int:
    """A loopback port nobody listens on (the probe is refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wall(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120)
    return time.perf_counter() - t0


def _imports(args: list[str], env: dict[str, str], cwd: Path) -> list[str] | None:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], env=env, cwd=cwd,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    for line in proc.stderr.splitlines():
        if line.startswith("HEAVY="):
            return json.loads(line[len("HEAVY="):])
    return None


def startup_rows(work: Path, quick: bool) -> list[Row]:
    cli = shutil.which("helix-e2e", path=str(Path(sys.executable).parent)) or shutil.which("helix-e2e")
    if cli is None:
        return [Row("cold start of the console commands", "-", "helix-e2e not on PATH", "-", None)]
    repeats = 2 if quick else 7
    rec = synthesize_recording(work / "startup.hxwsrec", fps=30, duration_s=1.0, width=640, height=368).path
    log = work / "startup.log"
    log.write_text("[HELIX] VERSION: bench\n")
    env = {k: v for k, v in os.environ.items() if k not in ENV_OVERRIDES and k != TARGET_ENV}
    env["HOME"] = str(work)  # the doctor finds no keys or known_hosts of the user running the bench
    port = str(_free_port())
    commands = [  # (label, arguments, must stay free of PyAV/numpy)
        ("doctor --json", ["doctor", "--json", "--report-dir", str(work / "reports")], True),
        ("analyze --no-decode --json", ["analyze", str(rec), "--no-decode", "--json"], True),
        ("probe-frame-export --json", ["probe-frame-export", "--port", port, "--timeout", "2", "--json"], True),
        ("scan-logs --json", ["scan-logs", str(log), "--json"], True),
        ("analyze --json (decodes)", ["analyze", str(rec), "--json"], False),
        ("--version", ["--version"], True),
    ]
    best: dict[str, float] = {}
    refs = {"python -c pass": [sys.executable, "-c", "pass"],
            "import av, numpy": [sys.executable, "-c", "import av, numpy"]}
    for _ in range(repeats):  # best of N, interleaved
        for label, argv in refs.items():
            best[label] = min(best.get(label, float("inf")), _wall(argv, env, work))
        for label, args, _ in commands:
            best[label] = min(best.get(label, float("inf")), _wall([cli, *args], env, work))
    reference = (f"python -c pass {best['python -c pass']:.3f} s; "
                 f"import av, numpy +{best['import av, numpy'] - best['python -c pass']:.3f} s")
    rows = []
    for label, args, light in commands:
        loaded = _imports(args, env, work)
        seconds = best[label]
        goal, ok = ("reported", loaded is not None)
        if light:
            goal, ok = ("no av/numpy", loaded == [])
        if label.startswith("doctor"):
            goal = f"{seconds:.3f} <= {DOCTOR_GOAL_S} s, no av/numpy"
            ok = ok and seconds <= DOCTOR_GOAL_S
        shown = "?" if loaded is None else ", ".join(loaded) or "no av/numpy"
        rows.append(Row(f"cold start: helix-e2e {label}", f"{seconds:.3f} s ({shown})", reference, goal, ok))
    return rows
