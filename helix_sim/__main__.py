"""``python -m helix_sim up [--json] …``: run a simulator in the foreground until SIGTERM/SIGINT.

With ``--json`` it prints exactly one JSON line (``Simulator.info()``) once everything listens;
without, a short human summary (never the API key). Exit codes: 0 after a clean stop, 1 when the
simulator fails to start, 2 for bad arguments (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, NoReturn, Sequence

from .errors import SimError
from .config import CLI_GENERATIONS, FAULTS, PROVIDERS, QEMU_BEHAVIOURS, VIDEO_MODES, SimConfig, parse_faults

PROG = "python -m helix_sim"


class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting: the CLI prints one line."""

    def error(self, message: str) -> NoReturn:
        raise _ArgumentError(message)


def _resolution(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid resolution {text!r} (use WxH, e.g. 1920x1080)") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}") from None
    if not (0.001 <= value <= 86400):  # also rejects nan and inf
        raise argparse.ArgumentTypeError(f"seconds must be within 0.001..86400, got {text!r}")
    return value


def main_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="The helix-e2e simulator: a Mac host, UTM VM, QEMU and Helix stack.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    up = sub.add_parser("up", help="start a simulator and run until SIGTERM/SIGINT")
    up.add_argument("--json", action="store_true", dest="json", help="print one JSON line with the connection info")
    up.add_argument("--root", type=Path, dest="root", help="root directory (default: a temp dir removed at exit)")
    up.add_argument("--fps", type=float, dest="fps", default=40.0, help="desktop frame rate (default 40)")
    up.add_argument("--resolution", type=_resolution, dest="resolution", default=(1280, 720), help="WxH (default 1280x720)")
    up.add_argument("--video-mode", choices=VIDEO_MODES, dest="video_mode", default="scanout")
    up.add_argument("--qemu", choices=QEMU_BEHAVIOURS, dest="qemu", default="feb5-reject", help="QEMU build behaviour")
    up.add_argument("--provider", choices=PROVIDERS, dest="provider", default="utm",
                    help="who runs the VM: utm (UTM.app, utmctl) or helix-app (Helix.app's QEMU: a real "
                    "qemu-system-aarch64); default utm")
    up.add_argument("--fault", action="append", dest="faults", default=[], metavar="NAME",
                    help=f"inject a fault (repeatable; one of: {', '.join(FAULTS)})")
    up.add_argument("--gop", type=int, dest="gop", default=120, help="keyframe interval in frames (default 120)")
    up.add_argument("--boot-delay", type=float, dest="boot_delay", default=None, help="VM boot time in seconds")
    up.add_argument("--delay-scale", type=float, dest="delay_scale", default=None,
                    help="multiply every modelled delay (boot, sandbox, session, fault timings); < 1 is faster")
    up.add_argument("--cli", choices=CLI_GENERATIONS, dest="cli", default=None,
                    help="the helix CLI generation the guest builds (default 2026-11: --runtime, no --agent)")
    up.add_argument("--cli-wait-timeout", type=_seconds, dest="cli_wait_timeout", default=None, metavar="SECONDS",
                    help="how long the guest CLI's `spectask start --wait` waits for the sandbox (upstream: 180)")
    up.add_argument("--stale-client-timeout", type=_seconds, dest="stale_client_timeout", default=None,
                    metavar="SECONDS", help="a stream viewer without data messages this long is dropped (upstream: 30)")
    up.add_argument("--stale-sweep-interval", type=_seconds, dest="stale_sweep_interval", default=None,
                    metavar="SECONDS", help="how often stale viewers are swept (upstream: 10)")
    up.add_argument("--stop-on-stdin-eof", action="store_true", dest="stop_on_eof",
                    help="stop when stdin reaches EOF (the launching process died: never outlive it)")
    up.add_argument("-v", "--verbose", action="store_true", dest="verbose", help="log to stderr at DEBUG level")
    return parser


def _config(args: argparse.Namespace, root: Path) -> SimConfig:
    extra: dict[str, Any] = {}
    if args.boot_delay is not None:
        extra["boot_delay_s"] = args.boot_delay
    if args.delay_scale is not None:
        extra["delay_scale"] = args.delay_scale
    for arg, name in (("cli", "cli"), ("cli_wait_timeout", "cli_wait_timeout_s"),
                      ("stale_client_timeout", "stale_client_timeout_s"), ("stale_sweep_interval", "stale_sweep_interval_s")):
        if getattr(args, arg) is not None:
            extra[name] = getattr(args, arg)
    return SimConfig(
        root=root,
        fps=args.fps,
        width=args.resolution[0],
        height=args.resolution[1],
        video_mode=args.video_mode,
        qemu_behaviour=args.qemu,
        faults=parse_faults(args.faults),
        gop=args.gop,
        provider=args.provider,
        **extra,
    )


def _summary(info: dict[str, Any]) -> str:
    if info.get("provider") == "helix-app":
        vm = (f"  QEMU          started by the harness (provider helix-app, QMP on 127.0.0.1:{info['qmp_port']}); "
              "the VM boots then")
    else:
        vm = f"  utmctl        {info['utmctl']}  (VM {info['vm_id']}, stopped: `utmctl start {info['vm_id']}`)"
    return "\n".join(
        [
            "helix-e2e simulator up (Ctrl-C to stop)",
            f"  target file   {info['target_file']}",
            vm,
            f"  ssh           ssh -i {info['ssh_key']} -p {info['ssh_port']} {info['ssh_user']}@{info['ssh_host']}",
            f"  api           {info['api_url']} (after ./stack start in the guest)",
            f"  frame export  127.0.0.1:{info['frame_export_port']} (after the VM boots)",
            f"  host log      {info['helix_debug_log']}",
            f"  crash reports {info['crash_dir']}",
        ]
    )


def _stop_on_stdin_eof() -> None:
    """The launcher holds our stdin pipe open; EOF means it is gone: stop as on SIGTERM."""
    try:
        while os.read(sys.stdin.fileno(), 4096):
            pass
    except (OSError, ValueError):
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def _clean_leftovers() -> None:
    """Remove what killed simulators left in the temp dir (only roots provably ours and dead)."""
    from .leftovers import clean_leftovers

    try:
        clean_leftovers()
    except Exception as exc:  # noqa: BLE001 - a cleanup problem never stops a start
        logging.getLogger("helix_sim").warning("cleaning up after earlier simulators failed: %s", exc)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = main_parser().parse_args(argv)
    except _ArgumentError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    _clean_leftovers()
    temp_root: Path | None = None
    root = args.root
    try:
        if root is None:
            temp_root = root = Path(tempfile.mkdtemp(prefix="helix-sim-"))
        else:
            root.mkdir(parents=True, exist_ok=True)
            probe = root / ".helix-sim-write-test"
            probe.write_bytes(b"")
            probe.unlink()
    except OSError as exc:
        print(f"{PROG}: error: --root {root}: not a writable folder ({exc.strerror or exc}); "
              "pass a folder you can write, or omit --root for a temp dir", file=sys.stderr)
        return 2
    try:
        try:
            config = _config(args, root)
        except SimError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 2
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.WARNING,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        from .simulator import Simulator  # heavy imports only once the arguments are good
        from .vm.processes import become_subreaper

        become_subreaper()  # this process runs nothing but the simulator: adopt and reap guest orphans
        if args.stop_on_eof:
            threading.Thread(target=_stop_on_stdin_eof, name="sim-stdin-watch", daemon=True).start()

        def ready(info: dict[str, Any]) -> None:
            if args.json:
                sys.stdout.write(json.dumps(info) + "\n")
            else:
                sys.stdout.write(_summary(info) + "\n")
            sys.stdout.flush()

        try:
            Simulator(config).run_forever(on_ready=ready)
        except SimError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 1
        return 0
    finally:
        if temp_root is not None:
            shutil.rmtree(temp_root, ignore_errors=True)


def entrypoint() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    entrypoint()
