"""`helix-e2e`: the harness's command line. Subcommands are thin wrappers over library functions;
typed errors become one-line messages with a hint and an exit code, in one place."""

from __future__ import annotations

import argparse
import json
import math
import sys
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from .. import __version__
from ..errors import HarnessError
from ..redact import redact

EXIT_ERROR = 2  # usage or harness error (not a verdict)
EXIT_NO_VIDEO = 1  # analyze: the input holds no H.264
#: Longest `scan-logs` run before it stops and says so (seconds, all files together).
SCAN_DEADLINE_S = 120.0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``helix-e2e <cmd>: error: argument --x: what is accepted``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(what: str, lo: float, hi: float, *, lo_open: bool = True) -> Callable[[str], float]:
    """An argparse type: a finite float in (lo, hi] (or [lo, hi] when not ``lo_open``)."""
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or not (lo < value if lo_open else lo <= value) or value > hi:
            raise argparse.ArgumentTypeError(f"{text!r} is not accepted: {what} must be a finite number in {interval}")
        return value

    return parse


def _port(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        value = -1
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not accepted: a TCP port is an integer in 1..65535")
    return value


def _host(text: str) -> str:
    from ..drivers.frame_export import ProbeInputError, check_probe_args

    try:
        check_probe_args(text, 1, 1.0)
    except ProbeInputError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    return text


@contextmanager
def _handle_errors() -> Iterator[None]:
    try:
        yield
    except HarnessError as exc:
        where = f"[{exc.phase}] " if exc.phase else ""
        print(redact(f"helix-e2e: error: {where}{exc.message}"), file=sys.stderr)
        if exc.hint:
            print(redact(f"  hint: {exc.hint}"), file=sys.stderr)
        raise SystemExit(EXIT_ERROR) from None
    except KeyboardInterrupt:
        print("helix-e2e: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def _print_json(data) -> None:
    print(redact(json.dumps(data, indent=2, default=str)))


# -- subcommands ---------------------------------------------------------------------
def cmd_probe(args) -> int:
    from ..drivers.frame_export import probe_resource_id_zero

    result = probe_resource_id_zero(args.host, args.port, timeout=args.timeout)
    if args.json:
        _print_json(result.as_dict())
    else:
        print(f"verdict: {result.verdict} ({result.elapsed_ms:.0f} ms) — {result.explanation}")
        if result.error_code is not None:
            print(f"error_code: {result.error_code}")
        if result.message:
            print(f"message: {result.message}")
        for item in result.exchange:
            print(f"{item['dir']:>8}: {item['hex'][:160]}{'…' if len(item['hex']) > 160 else ''}"
                  f" ({item.get('bytes', len(item['hex']) // 2)} bytes)")
        if result.omitted_bytes:
            print(f"(kept the first {result.received_bytes - result.omitted_bytes} received bytes as evidence; "
                  f"{result.omitted_bytes} more not kept)")
    return 0 if result.verdict == "rejected" else 1


def cmd_scan_logs(args) -> int:
    from ..analysis.logscan import ScanResult, scan_file
    from ..deadline import Deadline
    from ..protocols.ips import parse_ips

    result = ScanResult()
    crashes = []
    deadline = Deadline(SCAN_DEADLINE_S)
    for path in args.files:
        if deadline.expired:
            result.timed_out = True
            break
        try:
            if path.endswith(".ips"):
                crashes.append(parse_ips(path).as_dict())
            scan_file(path, result, deadline=deadline)
        except OSError as exc:
            raise HarnessError(f"cannot read {path}: {exc.strerror or exc}", phase="scan-logs") from None
    out = result.as_dict()
    out["crashes"] = crashes
    if result.timed_out:
        print(f"helix-e2e: warning: scan-logs stopped after {SCAN_DEADLINE_S:g}s; the rest was not scanned",
              file=sys.stderr)
    if args.json:
        _print_json(out)
    else:
        ids = out["resource_ids"]
        print(f"lines: {out['lines']} (undecodable: {out['undecodable_lines']})")
        print(f"resource ids: source={ids['source'] or '-'} nonzero={ids['nonzero']} zero={ids['zero']}")
        for reason in ids["zero_reasons"]:
            print(f"  zero because: {reason}")
        for key in ("rejections", "fallbacks", "versions"):
            for line in out[key][:10]:
                print(f"{key[:-1]}: {line}")
        for item in out["hangs"] + out["errors"]:
            print(f"{item['severity']}: {item['pattern']}: {item['line']}")
        for crash in crashes:
            print(f"crash: {crash['path']}: {crash['process']} {crash['indicator']} {', '.join(crash['frames'][:3])}"
                  + (f" (unparsed: {crash['parse_error']})" if crash["parse_error"] else ""))
        for key, count in out["omitted"].items():
            print(f"omitted: {count} more {key} (lists are capped)")
        if out["cut_lines"]:
            print(f"cut: {out['cut_lines']} over-long line piece(s)")
        if out["timed_out"]:
            print("timed out: the scan stopped early")
    return 0


def cmd_analyze(args) -> int:
    from ..analysis.recording import analyze_h264, analyze_recording

    try:
        with open(args.recording, "rb") as fh:
            magic = fh.read(8)
    except OSError as exc:
        raise HarnessError(f"cannot read {args.recording}: {exc.strerror or exc}", phase="analysis") from None
    is_recording = magic == b"HXWSREC1"
    if is_recording:
        result = analyze_recording(args.recording, warmup_s=args.warmup, decode=not args.no_decode)
    else:
        result = analyze_h264(args.recording, decode=not args.no_decode)
    if args.json:
        _print_json(result)
    else:
        print(redact(_analysis_summary(args.recording, result)))
    for warning in result.get("warnings") or []:
        print(redact(f"helix-e2e: warning: {args.recording}: {warning}"), file=sys.stderr)
    if not result.get("h264_found", True):
        what = "no video frames in the recording" if is_recording else (
            "no H.264 found (no Annex-B access unit with a slice "
            + ("and a parseable SPS)" if args.no_decode else "that decodes)"))
        print(redact(f"helix-e2e: error: [analysis] {args.recording}: {what}"), file=sys.stderr)
        return EXIT_NO_VIDEO
    return 0


def _num(value, fmt: str = ".2f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _spans(items) -> str:
    if items is None:
        return "n/a"
    if not items:
        return "none"
    shown = ", ".join(f"at {i['start_s']:.2f}s for {i['duration_s']:.2f}s" for i in items[:5])
    return f"{len(items)} ({shown}{', …' if len(items) > 5 else ''})"


def _analysis_summary(path: str, r: dict) -> str:
    """A few lines for a human; ``--json`` has every key."""
    size = f"{r['width']}x{r['height']}" if r.get("width") else "size unknown"
    length = f", {r['duration_s']:.2f}s" if r.get("duration_s") is not None else ""
    lines = [f"{path}: {r.get('frames')} live frames ({r.get('replay_frames')} replay, "
             f"{r.get('keyframes')} keyframes), {size}{length}"]
    if r.get("h264_found") is False:
        lines.append("no H.264 found")
    if r.get("fps") is None and r.get("warmup_s") is None:
        assumed = r.get("assumed_fps")
        lines.append("fps: n/a (a plain .h264 has no arrival times" +
                     (f"; freeze times assume {assumed:g} fps)" if assumed else ")"))
    else:
        j = r.get("jitter_ms") or {}
        lines.append(f"fps: {_num(r.get('fps'))} (pts {_num(r.get('fps_pts'))}, min 1-s window "
                     f"{_num(r.get('fps_min_window'), 'd')}, after {r.get('warmup_s')}s warm-up); interval ms "
                     f"p50/p95/p99/max {_num(j.get('p50'), '.1f')}/{_num(j.get('p95'), '.1f')}/"
                     f"{_num(j.get('p99'), '.1f')}/{_num(j.get('max'), '.1f')}; bursts {r.get('bursts')}")
        lines.append(f"stalls: {_spans(r.get('stalls'))}")
    motion = r.get("motion")
    lines.append(f"freezes: {_spans(r.get('freezes'))}; black frames: {_num(r.get('black_frames'), 'd')}; "
                 f"motion: {_num(motion)}; decode errors: {_num(r.get('decode_errors'), 'd')}")
    first = r.get("first_frame_is_idr_with_sps_pps")
    errors = r.get("stream_errors") or []
    lines.append(f"first frame IDR+SPS+PPS: {'n/a' if first is None else 'yes' if first else 'NO'}; "
                 f"stream errors: {len(errors)}" + (f" ({errors[0]!r}{', …' if len(errors) > 1 else ''})" if errors else ""))
    viewers = r.get("viewer_events")
    if viewers is not None:
        unknown = r.get("unknown_message_types") or {}
        ttff = r.get("time_to_first_frame_s")
        lines.append(f"protocol errors: {r.get('protocol_error_count')}; viewers: {viewers['joins']} joined, "
                     f"{viewers['leaves']} left; status messages before the first frame: "
                     f"{len(r.get('status_before_first_frame') or [])}; time to first frame: "
                     f"{'n/a' if ttff is None else f'{ttff:.3f}s'}; unknown message types: "
                     + (", ".join(f"{t} x{n}" for t, n in unknown.items()) or "none"))
    return "\n".join(lines)


def cmd_doctor(args) -> int:
    from ..doctor import run_doctor, target_for_doctor

    target = target_for_doctor(args.target)
    report = run_doctor(
        target,
        qemu_binary=args.qemu_binary,
        qemu_source=args.qemu_source,
        expect_version=args.expect_version,
        usercreds=args.usercreds,
        reports_dir=args.report_dir,
    )
    if args.json:
        _print_json(report.as_dict())
    else:
        print(redact(report.render_text()))
    return 1 if report.failed else 0


def cmd_history(args) -> int:
    from ..report.history import summary_line, write_history

    out, runs, flagged = write_history(args.dir, args.html or f"{args.dir}/history.html")
    print(redact(summary_line(out, runs, flagged)))
    return 0


def cmd_sim_up(args, rest: Sequence[str]) -> int:
    from helix_sim.__main__ import main as sim_main

    return sim_main(["up", *rest])


def main_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="helix-e2e", description="End-to-end harness for Helix's macOS video streaming")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    probe = sub.add_parser("probe-frame-export", help="send FRAME_REQUEST resource_id=0 to QEMU and classify the reply")
    probe.add_argument("--host", type=_host, default="127.0.0.1")
    probe.add_argument("--port", type=_port, default=15937, help="1..65535 (default 15937)")
    probe.add_argument("--timeout", type=_number("--timeout (seconds)", 0, 3600), default=10.0,
                       help="seconds in (0, 3600] (default 10)")
    probe.add_argument("--json", action="store_true")
    probe.set_defaults(func=cmd_probe)

    scan = sub.add_parser("scan-logs", help="classify collected logs (container logs, helix-debug.log, .ips)")
    scan.add_argument("files", nargs="+")
    scan.add_argument("--json", action="store_true")
    scan.set_defaults(func=cmd_scan_logs)

    an = sub.add_parser("analyze", help="analyze a HXWSREC1 recording or an Annex-B .h264")
    an.add_argument("recording")
    an.add_argument("--json", action="store_true")
    an.add_argument("--warmup", type=_number("--warmup (seconds)", 0, 3600, lo_open=False), default=2.0,
                    help="seconds in [0, 3600] skipped at the start (default 2)")
    an.add_argument("--no-decode", action="store_true", help="timing only")
    an.set_defaults(func=cmd_analyze)

    doc = sub.add_parser("doctor", help="preflight checks of the Mac and the QEMU build (no VM needed)")
    doc.add_argument("--target", metavar="FILE", default=None, help="target config (default: $HELIX_E2E_TARGET)")
    doc.add_argument("--qemu-binary", metavar="PATH", default=None,
                     help="QEMU binary to check (default: the framework binary in the target's UTM.app)")
    doc.add_argument("--qemu-source", metavar="DIR", default=None, help="qemu-utm checkout to compare with")
    doc.add_argument("--expect-version", metavar="STR", default=None, help="expected `[HELIX] VERSION:` string")
    doc.add_argument("--usercreds", metavar="FILE", default=None, help="a local copy of .env.usercreds to check")
    doc.add_argument("--report-dir", metavar="DIR", default="reports", help="where runs write artifacts (disk check)")
    doc.add_argument("--json", action="store_true")
    doc.set_defaults(func=cmd_doctor)

    hist = sub.add_parser("history", help="one HTML page of every run under a reports directory: trends, "
                          "failures with their cause, regressions")
    hist.add_argument("dir", nargs="?", default="reports", metavar="DIR", help="reports directory (default: reports)")
    hist.add_argument("--html", metavar="OUT", default=None, help="the page to write (default: DIR/history.html)")
    hist.set_defaults(func=cmd_history)

    sim = sub.add_parser("sim", help="the embedded simulator")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True)
    up = sim_sub.add_parser("up", help="start a simulator and keep it running until SIGTERM/SIGINT", add_help=False)
    up.set_defaults(func=None)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["sim", "up"]:
        with _handle_errors():
            return cmd_sim_up(None, argv[2:])
    args = main_parser().parse_args(argv)
    with _handle_errors():
        return int(args.func(args))


def entrypoint() -> None:
    raise SystemExit(main())
