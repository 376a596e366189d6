"""Child pytest runs for the tests that drive the suite from outside (a test helper).

- :func:`pytest_argv` and :func:`child_env` are the one place a child pytest's command line and
  environment are built: every test that starts one uses them (directly, through
  :func:`run_pytest`, or through :class:`ChildPytest`), so a new plugin option or a variable to
  keep out of children is added here once.
- :func:`run_pytest` runs one to its end and returns a :class:`Finished`, whose ``junit()`` and
  ``metrics()`` read what the child wrote under ``--report-dir``: tests assert a verdict or outcome
  on those files, not on terminal text (terminal text is checked only where the terminal output is
  itself the feature: progress lines, no secret in the output).
- :class:`ChildPytest` runs the streaming suite and watches everything it starts (used by
  tests/test_teardown.py and tests/test_secrets.py). The child gets its own ``TMPDIR`` (so every
  temp dir it or its simulator makes is under the case directory) and a marker variable in its
  environment; a watcher thread records every descendant process (pid, start time, command line),
  the ports they listen on, the simulator's root and its API key while the run goes on.
  Afterwards :meth:`ChildPytest.leaks` lists whatever of that survived, over all processes of the
  machine.

No fixed sleeps: every wait polls a condition against a deadline. Every process and thread this
helper starts is owned, waited for and joined in :meth:`ChildPytest.close`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import psutil

REPO = Path(__file__).resolve().parents[1]
MARKER_ENV = "HELIX_E2E_CHILD_RUN"
#: The progress line of the last teardown phase (utmctl stop), after SSH and tunnels are closed.
VM_STOP_LINE = "⏳ boot_down:"
#: The bound for one child run (start to exit).
CASE_TIMEOUT = 40.0
SIM_TEMP_PREFIXES = ("helix-e2e-sim-", "helix-sim-", "hxdk-")
#: The suites a child can run: ``-m <suite> tests/<suite>``.
SUITES = {"streaming": "tests/streaming", "soak": "tests/soak"}
#: Kept from this process's environment although they match a scrubbed prefix: host tuning that
#: holds for every run on this machine (``[timeouts] scale`` on a slow host).
KEPT_ENV = frozenset({"HELIX_E2E_TIMEOUT_SCALE"})
#: Never inherited: the parent's target, faults and overrides (``HELIX_E2E_*``, bar KEPT_ENV) and
#: pytest's own (``PYTEST_ADDOPTS``, ``PYTEST_CURRENT_TEST``, xdist's worker variables).
SCRUBBED_ENV_PREFIXES = ("HELIX_E2E_", "PYTEST_")


# -- command lines and environments of child pytests ----------------------------------------------


def pytest_argv(*args: str, suite: str | None = "streaming", report_dir: str | os.PathLike[str] | None = None,
                stream_duration: float | None = None) -> list[str]:
    """A child pytest's command line (run it with ``cwd=REPO``).

    ``python -m pytest -p no:cacheprovider -p no:randomly``; for a ``suite`` (``streaming``,
    ``soak``) ``-m <suite> <REPO>/tests/<suite>``; ``--stream-duration`` and ``--report-dir`` when
    given; then ``args``. ``suite=None`` runs whatever ``args`` name.
    """
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly"]
    if suite is not None:
        argv += ["-m", suite, str(REPO / SUITES[suite])]
    if stream_duration is not None:
        argv += ["--stream-duration", f"{stream_duration:g}"]
    if report_dir is not None:
        argv += ["--report-dir", str(report_dir)]
    return [*argv, *args]


def child_env(extra: Mapping[str, str] | None = None, *, tmp: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """A child pytest's environment: this one's without :data:`SCRUBBED_ENV_PREFIXES` (bar
    :data:`KEPT_ENV`), unbuffered output, ``TMPDIR=tmp`` when given, then ``extra``."""
    env = {k: v for k, v in os.environ.items() if k in KEPT_ENV or not k.startswith(SCRUBBED_ENV_PREFIXES)}
    env["PYTHONUNBUFFERED"] = "1"
    if tmp is not None:
        env["TMPDIR"] = str(tmp)
    env.update(extra or {})
    return env


# -- what a child wrote: junit.xml and metrics.json -------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One ``<testcase>`` of a junit.xml."""

    classname: str
    name: str
    outcome: str  # passed | failed | error | skipped (an error in setup or teardown counts as error)
    message: str = ""  # the failure/error/skipped element's message and text
    properties: tuple[tuple[str, str], ...] = ()

    @property
    def nodeid(self) -> str:
        """``tests/streaming/test_streaming.py::test_x`` (from pytest's dotted classname)."""
        return self.classname.replace(".", "/") + ".py::" + self.name


def read_junit(path: str | os.PathLike[str]) -> list[Case]:
    """Every testcase of a junit.xml, in file order."""
    cases = []
    for tc in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = tc.find(tag)
            if el is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = "\n".join(p for p in (el.get("message", ""), el.text or "") if p)
                break
        props = tuple((p.get("name", ""), p.get("value", "")) for p in tc.iter("property"))
        cases.append(Case(tc.get("classname", ""), tc.get("name", ""), outcome, message, props))
    return cases


def outcomes(cases: list[Case]) -> dict[str, str]:
    """Test name → outcome."""
    return {c.name: c.outcome for c in cases}


@dataclass
class Finished:
    """A child pytest that ran to its end."""

    argv: list[str]
    returncode: int
    output: str  # stdout + stderr: for failure messages, and for the features that are terminal output
    reports: Path | None  # its --report-dir

    @property
    def latest(self) -> Path:
        assert self.reports is not None, "this child had no --report-dir"
        return self.reports / "latest"

    def junit(self) -> list[Case]:
        return read_junit(self.latest / "junit.xml")

    def metrics(self) -> dict:
        return json.loads((self.latest / "metrics.json").read_text())

    def tail(self, chars: int = 3000) -> str:
        return self.output[-chars:]


def run_pytest(*args: str, suite: str | None = "streaming", report_dir: str | os.PathLike[str] | None = None,
               stream_duration: float | None = None, env: Mapping[str, str] | None = None,
               cwd: str | os.PathLike[str] = REPO, timeout: float = 300) -> Finished:
    """Run a child pytest (:func:`pytest_argv`, :func:`child_env` with ``env``) to its end."""
    argv = pytest_argv(*args, suite=suite, report_dir=report_dir, stream_duration=stream_duration)
    proc = subprocess.run(argv, cwd=cwd, env=child_env(env), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    return Finished(argv, proc.returncode, proc.stdout + proc.stderr, Path(report_dir) if report_dir else None)


@dataclass
class Seen:
    pid: int
    create_time: float
    #: Every command line the process had, joined by " ⟶ ": a process first seen between fork and exec
    #: (``sshd: root@notty``, a launcher script) shows its real command only later.
    cmdline: str


@dataclass
class SimRoot:
    root: Path
    ports: dict[str, int] = field(default_factory=dict)
    api_key: str = ""


def _net_connections(proc: psutil.Process):
    fn = getattr(proc, "net_connections", None) or proc.connections  # psutil >= 6 / older
    return fn(kind="inet")


class ChildPytest:
    """``python -m pytest -m streaming tests/streaming --stream-duration D --report-dir <case>/reports``."""

    def __init__(self, case_dir: Path, extra_args: list[str] = (), *, duration: float = 3,
                 env: dict[str, str] | None = None) -> None:
        self.case_dir = Path(case_dir)
        self.tmp = self.case_dir / "tmp"
        self.reports = self.case_dir / "reports"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.marker = uuid.uuid4().hex
        self.argv = pytest_argv(*extra_args, report_dir=self.reports, stream_duration=duration)
        self.env = child_env({**(env or {}), MARKER_ENV: self.marker}, tmp=self.tmp)
        self.proc: subprocess.Popen[bytes] | None = None
        self.output = bytearray()
        self.returncode: int | None = None
        self.seen: dict[tuple[int, float], Seen] = {}
        self.ports: set[int] = set()
        self.sims: dict[Path, SimRoot] = {}
        self.leftovers: list[str] = []  # leaks() right after the child exited
        #: The child's tunnels and connections to the sim once teardown reached the VM's power-off
        #: (SSH, tunnels and API clients are closed by then); None if it never got there.
        self.open_at_vm_stop: list[str] | None = None
        self._own_baseline: set[str] | None = None  # e.g. a pytest plugin's own server socket
        self.started_at = 0.0
        self.duration_s = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- running ---------------------------------------------------------------------
    def start(self, preexec_fn=None) -> "ChildPytest":
        """``preexec_fn``: run in the child before pytest starts (e.g. ignore SIGINT, as a background job)."""
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(self.argv, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=preexec_fn)
        for target, name in ((self._read, "child-output"), (self._watch, "child-watch")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __enter__(self) -> "ChildPytest":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                self.output += chunk

    @property
    def text(self) -> str:
        with self._lock:
            return self.output.decode("utf-8", "replace")

    def _watch(self) -> None:
        assert self.proc is not None
        try:
            me = psutil.Process(self.proc.pid)
        except psutil.Error:
            return
        rounds = 0
        while not self._stop.is_set():
            self._snapshot(me, ports=rounds % 10 == 0)  # listeners live long: look every 0.5 s
            self._find_sims()
            if self._own_baseline is None and "⏳" in self.text:  # plugins are configured; no tunnel yet
                self._own_baseline = set(self._own_connections(me))
            if self.open_at_vm_stop is None and VM_STOP_LINE in self.text:
                self.open_at_vm_stop = [c for c in self._own_connections(me) if c not in (self._own_baseline or ())]
            if self.proc.poll() is not None:
                return
            rounds += 1
            self._stop.wait(0.05)

    def _snapshot(self, me: psutil.Process, *, ports: bool) -> None:
        try:
            procs = me.children(recursive=True)
        except psutil.Error:
            return
        for p in procs:
            try:
                key = (p.pid, p.create_time())
                cmdline = " ".join(p.cmdline())
                with self._lock:
                    seen = self.seen.get(key)
                    if seen is None:
                        self.seen[key] = Seen(p.pid, key[1], cmdline)
                    elif cmdline and not seen.cmdline.endswith(cmdline):  # exec'd since: keep both
                        seen.cmdline = f"{seen.cmdline} ⟶ {cmdline}" if seen.cmdline else cmdline
                if ports:
                    for conn in _net_connections(p):
                        if conn.status == psutil.CONN_LISTEN and conn.laddr:
                            self.ports.add(conn.laddr.port)
            except psutil.Error:
                continue

    def _own_connections(self, me: psutil.Process) -> list[str]:
        """The child's own listening sockets (tunnels) and connections to the simulator's ports."""
        sim_ports = {port for sim in self.sims.values() for port in sim.ports.values()}
        out = []
        try:
            for conn in _net_connections(me):
                if conn.status == psutil.CONN_LISTEN:
                    out.append(f"listening on {conn.laddr.ip}:{conn.laddr.port}")
                elif conn.raddr and conn.raddr.port in sim_ports:
                    out.append(f"{conn.status} connection to port {conn.raddr.port}")
        except psutil.Error:
            pass
        return out

    def saw(self, needle: str) -> Seen | None:
        """The first process seen so far whose command line contains ``needle``."""
        with self._lock:
            seen = list(self.seen.values())
        return next((s for s in seen if needle in s.cmdline), None)

    def _find_sims(self) -> None:
        for target in self.tmp.glob("helix-e2e-sim-*/sim/target.toml"):
            root = target.parent
            sim = self.sims.get(root)
            if sim is None:
                sim = self.sims[root] = SimRoot(root)
            if not sim.ports:
                try:
                    data = tomllib.loads(target.read_text())
                    sim.ports = {"ssh": int(data["ssh"]["port"]), "api": int(data["guest"]["api_port"]),
                                 "frame_export": int(data["frame_export"]["port"])}
                except (OSError, ValueError, KeyError):
                    pass
            if not sim.api_key:
                try:
                    text = (root / "vm" / "home" / "helix" / ".env.usercreds").read_text()
                except OSError:
                    continue
                m = re.search(r"^HELIX_API_KEY=(\S+)$", text, re.M)
                if m:
                    sim.api_key = m.group(1)

    def wait_until(self, check: Callable[[], object], *, timeout: float, what: str) -> object:
        """Poll ``check`` until it is truthy; fail (with the child's output) at the deadline, or when
        the child exits first (unless it had already exited when the wait began)."""
        end = time.monotonic() + timeout
        pause = 0.02
        running = self.proc is not None and self.proc.poll() is None
        while True:
            value = check()
            if value:
                return value
            if running and self.proc.poll() is not None:
                value = check()
                if value:
                    return value
                raise AssertionError(f"the child exited ({self.proc.returncode}) before {what}:\n{self.tail()}")
            if time.monotonic() >= end:
                raise AssertionError(f"no {what} within {timeout:.0f}s:\n{self.tail()}")
            time.sleep(pause)  # polling interval, not synchronisation
            pause = min(pause * 1.5, 0.2)

    def wait_for_output(self, needle: str, *, timeout: float) -> None:
        self.wait_until(lambda: needle in self.text, timeout=timeout, what=f"{needle!r} in the child's output")

    def wait_mid_stream(self) -> None:
        """Until the stream phase runs and the capture has recorded frames (mid-stream)."""
        self.wait_for_output("⏳ stream:", timeout=CASE_TIMEOUT)
        rec = self.latest / "stream.hxwsrec"
        self.wait_until(lambda: rec.exists() and rec.stat().st_size > 20_000, timeout=20,
                        what="recorded frames in stream.hxwsrec")

    def send_sigint(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)

    def wait(self, timeout: float) -> int:
        """Wait for the child; at the deadline kill its whole tree and fail."""
        assert self.proc is not None
        try:
            self.returncode = self.proc.wait(timeout=max(0.1, timeout - (time.monotonic() - self.started_at)))
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError(f"the child pytest did not finish within {timeout:.0f}s (killed):\n{self.tail()}")
        self.duration_s = time.monotonic() - self.started_at
        self._join()
        return self.returncode

    def _join(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        self._threads = [t for t in self._threads if t.is_alive()]

    def close(self) -> None:
        """Kill whatever is still running (the child and every process it started) and reap it."""
        self._stop.set()
        if self.proc is not None and self.proc.poll() is None:
            try:
                victims = psutil.Process(self.proc.pid).children(recursive=True)
            except psutil.Error:
                victims = []
            self.proc.kill()
            self.proc.wait()
            for p in victims:
                try:
                    p.kill()
                except psutil.Error:
                    pass
            psutil.wait_procs(victims, timeout=5)
        for p in self._survivors():  # never leave a leaked process behind the test either
            try:
                p.kill()
            except psutil.Error:
                pass
        if self.proc is not None and self.proc.stdout is not None:
            self._join()
            self.proc.stdout.close()
        self._join()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.text.splitlines()[-lines:])

    # -- what is left ----------------------------------------------------------------
    def _survivors(self) -> list[psutil.Process]:
        me = os.getpid()
        tmp = str(self.tmp)
        out = []
        for p in psutil.process_iter(["pid", "cmdline", "create_time"]):
            if p.pid in (me, getattr(self.proc, "pid", None)):
                continue
            try:
                key = (p.pid, p.info["create_time"])
                cmd = " ".join(p.info["cmdline"] or [])
                hit = key in self.seen or tmp in cmd or any(str(s.root) in cmd for s in self.sims.values())
                if not hit:
                    try:
                        hit = p.environ().get(MARKER_ENV) == self.marker
                    except psutil.Error:
                        hit = False
                if hit:
                    out.append(p)
            except psutil.Error:
                continue
        return out

    def leaks(self) -> list[str]:
        """Everything the run left behind: processes, listening ports, temp dirs."""
        problems = []
        for p in self._survivors():
            try:
                status = p.status()
                cmd = " ".join(p.cmdline()) or self._seen_cmd(p.pid)
                problems.append(f"process {p.pid} ({status}, parent {p.ppid()}) survived: {cmd[:300]}")
            except psutil.Error:
                continue
        ports = set(self.ports)
        for sim in self.sims.values():
            ports.update(sim.ports.values())
        if ports:
            for conn in psutil.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port in ports:
                    problems.append(f"port {conn.laddr.port} still listening (pid {conn.pid})")
        for sim in self.sims.values():
            if sim.root.exists():
                problems.append(f"the simulator's root {sim.root} still exists")
        if self.tmp.exists():
            for entry in sorted(self.tmp.iterdir()):
                if entry.name.startswith("pytest-of-"):  # pytest's own basetemp (kept by design)
                    continue
                problems.append(f"temp entry left behind: {entry}")
        return problems

    def _seen_cmd(self, pid: int) -> str:
        for s in self.seen.values():
            if s.pid == pid:
                return s.cmdline
        return "?"

    # -- results ---------------------------------------------------------------------
    @property
    def api_keys(self) -> list[str]:
        return [s.api_key for s in self.sims.values() if s.api_key]

    @property
    def latest(self) -> Path:
        return self.reports / "latest"

    def junit(self) -> list[Case]:
        return read_junit(self.latest / "junit.xml")

    def metrics(self) -> dict:
        return json.loads((self.latest / "metrics.json").read_text())

    def dated_dirs(self) -> list[Path]:
        return sorted(p for p in self.reports.glob("2*") if p.is_dir())


def finished_run(case_dir: Path, extra_args: list[str]) -> ChildPytest:
    """Run the streaming suite to its end; record what survived it right at exit."""
    run = ChildPytest(case_dir, extra_args)
    try:
        run.start()
        run.wait(CASE_TIMEOUT)
        run.leftovers = run.leaks()
    finally:
        run.close()
    return run
