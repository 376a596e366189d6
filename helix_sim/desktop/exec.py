"""desktop-bridge's ``/exec`` (``api/pkg/desktop/exec.go``) and the container's process table.

The real allowlist, 403 ``command not allowed: X``, the ``{success, output, error, exit_code, pid}``
shape (``output``, ``error`` and ``pid`` omitted when empty, as Go's ``omitempty`` does), and a small
process table so ``vkcube`` started in the background is seen by ``pkill -0 -f vkcube`` and ended by
``pkill -f vkcube``.

A background command is ``cmd.Start()`` without ``Wait()`` (``exec.go`` ~L104-116): nothing reaps it, so
every background process that exits (killed, crashed, or done at once like ``echo``) stays in the table as
a zombie (``Z``). ``pkill`` still matches a zombie (its empty cmdline falls back to the name, as procps
does) and exits 0; signalling it changes nothing. Its state is readable through the allowlist with
``cat /proc/<pid>/status`` (``State:\tZ (zombie)``) or ``cat /proc/<pid>/stat`` (third field ``Z``).
Faults ``exec_forbidden`` and ``vkcube_dies`` (vkcube crashes at start and stays a zombie) live here.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

from .errors import DesktopError

log = logging.getLogger("helix_sim.desktop")

#: desktop-bridge's exec allowlist (api/pkg/desktop/exec.go).
ALLOWED_COMMANDS = frozenset({
    "vkcube", "glxgears", "pkill", "killall", "ls", "echo", "weston-simple-egl", "claude", "cat", "test",
    "npm", "helix-claude-auth-wrapper", "helix-codex-auth-wrapper", "git",
})
#: Programs that keep the screen changing while they run (the Scene draws its cube for them).
ANIMATORS = frozenset({"vkcube", "glxgears", "weston-simple-egl"})
GIT_NOT_ALLOWED = "git invocation not allowed (only 'git config --global user.name|user.email <value>')"

#: The desktop's own processes (pkill -0 finds them; the sim does not let exec kill them).
SYSTEM_PROCESSES = (
    ("gnome-shell", "gnome-shell --headless --unsafe-mode --virtual-monitor {w}x{h}@{fps}"),
    ("pipewire", "/usr/bin/pipewire"),
    ("wireplumber", "/usr/bin/wireplumber"),
    ("Xwayland", "/usr/bin/Xwayland :0 -rootless -noreset"),
    ("desktop-bridge", "/usr/local/bin/desktop-bridge"),
)

_FAKE_DIRS = {
    "/": "bin\nboot\ndev\netc\nhome\nlib\nmedia\nmnt\nopt\nproc\nroot\nrun\nsbin\nsrv\nsys\ntmp\nusr\nvar",
    "/run/user/1000": "bus\npipewire-0\npipewire-0.lock\nwayland-0\nwayland-0.lock",
    "/home/retro": "Desktop\nDocuments\nDownloads\nwork",
    "/tmp": ".X11-unix",
    "/tmp/.X11-unix": "X0",
}
_BINARIES = {"/usr/bin/vkcube", "/usr/bin/glxgears", "/usr/bin/weston-simple-egl", "/usr/bin/pkill", "/usr/bin/cat"}
_FAKE_FILES = {
    "/etc/os-release": (
        'PRETTY_NAME="Ubuntu 24.04.2 LTS"\nNAME="Ubuntu"\nVERSION_ID="24.04"\n'
        'VERSION="24.04.2 LTS (Noble Numbat)"\nID=ubuntu\nID_LIKE=debian'
    ),
    "/etc/hostname": "{hostname}",
}
_SOCKETS = {"/run/user/1000/wayland-0", "/run/user/1000/pipewire-0", "/tmp/.X11-unix/X0", "/run/user/1000/bus"}


@dataclass(frozen=True, slots=True)
class ExecResult:
    """What desktop-bridge's /exec answers: an HTTP status and a JSON object (200) or a text body."""

    status: int
    body: dict[str, Any] | str

    @property
    def json(self) -> dict[str, Any]:
        if not isinstance(self.body, dict):
            raise DesktopError(f"exec answered {self.status} with text, not JSON: {self.body!r}")
        return self.body


#: /proc/<pid>/status State: values.
STATES = {"R": "R (running)", "S": "S (sleeping)", "Z": "Z (zombie)"}
#: The desktop's user (the container runs its session as ``retro``, uid 1000).
_UID = 1000
_CLK_TCK = 100


@dataclass
class _Process:
    pid: int
    name: str
    argv: tuple[str, ...]
    system: bool = False
    ppid: int = 1
    state: str = "S"
    started: float = 0.0  # time.monotonic() at start (for /proc/<pid>/stat's starttime)
    exit_code: int = 0

    @property
    def comm(self) -> str:
        """The kernel's task name: the executable's basename, cut to 15 characters."""
        return self.name[:15]

    @property
    def zombie(self) -> bool:
        return self.state == "Z"

    @property
    def cmdline(self) -> str:
        """/proc/<pid>/cmdline with NULs as spaces (empty for a zombie)."""
        return "" if self.zombie else " ".join(self.argv)

    def die(self, code: int) -> None:
        """It exits: nobody waits for it, so it stays a zombie."""
        self.state = "Z"
        self.exit_code = code


class ProcessTable:
    """The desktop container's processes (its own, and what exec started) and the exec commands run on them.

    ``on_change`` runs (on the loop) when the set of processes changes; ``slog`` writes desktop-bridge's
    log lines.
    """

    def __init__(
        self,
        faults: frozenset[str],
        *,
        session_id: str,
        hostname: str,
        slog: Callable[..., None],
        on_change: Callable[[], None],
        pid_base: int = 400,
    ) -> None:
        self.faults = faults
        self.session_id = session_id
        self.hostname = hostname
        self._slog = slog
        self._content_changed = on_change
        self._pid = pid_base
        self._procs: dict[int, _Process] = {}

    def _next_pid(self) -> int:
        self._pid += 1 + (self._pid * 7919) % 13
        return self._pid

    def boot(self, width: int, height: int, fps: float) -> None:
        """The container (re)starts: only its own processes run."""
        self._procs = {}
        self._booted = time.monotonic()
        for name, cmd in SYSTEM_PROCESSES:
            pid = self._next_pid()
            argv = tuple(cmd.format(w=width, h=height, fps=int(round(fps))).split())
            self._procs[pid] = _Process(pid, name, argv, system=True, started=self._booted)

    def clear(self) -> None:
        """The container's processes are gone (OOM kill)."""
        self._procs.clear()

    @property
    def bridge_pid(self) -> int:
        """desktop-bridge: the parent of every exec'd process."""
        return next((p.pid for p in self._procs.values() if p.name == "desktop-bridge"), 1)

    @property
    def vkcube_running(self) -> bool:
        """A vkcube that is alive (a zombie is not)."""
        return any(p.name == "vkcube" and not p.zombie for p in self._procs.values())

    def state_of(self, pid: int) -> str | None:
        """R, S or Z; None when there is no such process."""
        proc = self._procs.get(pid)
        return proc.state if proc is not None else None

    @property
    def animating(self) -> bool:
        """A live GL demo (vkcube, glxgears, …) keeps the screen changing."""
        return any(p.name in ANIMATORS and not p.zombie for p in self._procs.values())

    async def exec(
        self,
        command: list[str],
        *,
        background: bool = False,
        env: dict[str, str] | None = None,
        timeout: int = 30,
    ) -> ExecResult:
        """desktop-bridge POST /exec."""
        if not command:
            return ExecResult(400, "command is required\n")
        if not all(isinstance(a, str) for a in command):
            return ExecResult(400, "invalid JSON: json: cannot unmarshal value into Go struct field ExecRequest.command of type string\n")
        name = command[0]
        if name not in ALLOWED_COMMANDS or (name == "vkcube" and "exec_forbidden" in self.faults):
            self._slog("WARN", "exec: blocked disallowed command", command=name)
            return ExecResult(403, f"command not allowed: {name}\n")
        if name == "git" and not _git_allowed(command):
            self._slog("WARN", "exec: blocked git invocation", args=command)
            return ExecResult(403, GIT_NOT_ALLOWED + "\n")
        self._slog("INFO", "exec: executing command", command=command, background=background)
        if background:
            pid = self._next_pid()
            self._slog("INFO", "exec: started background command", pid=pid, command=command)
            self._start_process(pid, command)
            return ExecResult(200, {"success": True, "exit_code": 0, "pid": pid})
        output, code, error = await self._run_foreground(command, timeout if timeout > 0 else 30)
        output = output.strip()  # strings.TrimSpace of the combined output
        body: dict[str, Any] = {"success": code == 0 and not error, "exit_code": code}
        if output:
            body["output"] = output
        if error:
            body["error"] = error
        return ExecResult(200, body)

    def _start_process(self, pid: int, command: list[str]) -> None:
        name = command[0].rsplit("/", 1)[-1]
        proc = _Process(pid, name, tuple(command), ppid=self.bridge_pid, started=time.monotonic())
        self._procs[pid] = proc
        if name not in ANIMATORS:
            proc.die(0)  # echo, ls, … exit at once; never waited for, each stays a zombie
            return
        if name == "vkcube" and "vkcube_dies" in self.faults:
            log.info("desktop %s: vkcube (pid %d) crashes and stays a zombie (fault vkcube_dies)", self.session_id, pid)
            self._slog("ERROR", "vkcube: VK_ERROR_INITIALIZATION_FAILED", pid=pid)
            proc.die(139)  # SIGSEGV
            return
        proc.state = "S"
        self._content_changed()

    async def _run_foreground(self, command: list[str], timeout: int) -> tuple[str, int, str]:
        name, args = command[0], command[1:]
        if name in ANIMATORS:  # runs until the request's timeout kills it (exec.CommandContext)
            pid = self._next_pid()
            if name == "vkcube" and "vkcube_dies" in self.faults:
                return "", 1, "exit status 1"  # CombinedOutput waits: a foreground run is reaped
            self._procs[pid] = _Process(pid, name, tuple(command), ppid=self.bridge_pid, started=time.monotonic())
            self._content_changed()
            try:
                await asyncio.sleep(timeout)
            finally:
                if self._procs.pop(pid, None) is not None:
                    self._content_changed()
            return "", -1, "signal: killed"
        if name in ("pkill", "killall"):
            out, code = self._kill(name, args)
        elif name == "echo":
            out, code = " ".join(a for a in args if a != "-n"), 0
        elif name == "ls":
            out, code = self._ls(args)
        elif name == "cat":
            out, code = self._cat(args)
        elif name == "test":
            out, code = "", self._test(args)
        elif name == "npm":
            out, code = ("10.9.2", 0) if args[:1] in (["--version"], ["-v"]) else ("up to date in 1s", 0)
        elif name == "git":
            out, code = "", 0
        elif name == "claude":
            out, code = ("2.0.14 (Claude Code)", 0) if args[:1] == ["--version"] else ("", 0)
        else:  # the auth wrappers
            out, code = "", 0
        return out, code, ("" if code == 0 else f"exit status {code}")

    def _kill(self, name: str, args: list[str]) -> tuple[str, int]:
        signal0 = False
        full = False
        exact = False
        patterns: list[str] = []
        it = iter(args)
        for arg in it:
            if arg in ("-f", "--full"):
                full = True
            elif arg in ("-x", "--exact", "-e"):
                exact = True
            elif arg in ("-0", "--signal=0") or arg in ("-s0",):
                signal0 = True
            elif arg in ("-s", "--signal"):
                signal0 = next(it, "") in ("0",)
            elif arg.startswith("-") and len(arg) > 1:
                continue  # other signals (-9, -TERM, …) and options
            else:
                patterns.append(arg)
        if not patterns:
            if name == "pkill":
                return "pkill: no matching criteria specified\nTry `pkill --help' for more information.", 2
            return "Usage: killall [OPTION]... [--] NAME...", 1
        matched: list[_Process] = []
        for proc in self._procs.values():
            for pat in patterns:
                if name == "killall":
                    hit = proc.name == pat
                else:
                    # procps matches the name when the cmdline is empty (a zombie), even with -f
                    subject = (proc.cmdline or proc.comm) if full else proc.comm
                    try:
                        hit = bool(re.fullmatch(pat, subject) if exact else re.search(pat, subject))
                    except re.error:
                        return f"pkill: invalid regular expression: {pat}", 2
                if hit:
                    matched.append(proc)
                    break
        if not matched:
            if name == "killall":
                return "\n".join(f"{p}: no process found" for p in patterns), 1
            return "", 1
        if not signal0:
            changed = False
            for proc in matched:
                if not proc.system and not proc.zombie:  # the sim keeps its own desktop alive
                    proc.die(-15)  # killed by SIGTERM, never reaped: a zombie
                    changed = True
            if changed:
                self._content_changed()
        return "", 0

    # -- /proc ----------------------------------------------------------------------------

    def _proc_entry(self, path: str) -> tuple[str, str | None] | None:
        """``(kind, text)`` for a /proc path: ("dir", None) for /proc and /proc/<pid>, ("file", text) for
        /proc/<pid>/{status,stat,cmdline,comm}; None when it does not exist."""
        parts = [p for p in path.split("/") if p]
        if not parts or parts[0] != "proc":
            return None
        if len(parts) == 1:
            return ("dir", None)
        if parts[1] == "self":
            parts[1] = str(self.bridge_pid)
        if not parts[1].isdigit() or int(parts[1]) not in self._procs:
            return None
        proc = self._procs[int(parts[1])]
        if len(parts) == 2:
            return ("dir", None)
        if len(parts) != 3:
            return None
        if parts[2] == "status":
            return ("file", self._status(proc))
        if parts[2] == "stat":
            return ("file", self._stat(proc))
        if parts[2] == "cmdline":
            return ("file", "" if proc.zombie else "\0".join(proc.argv) + "\0")
        if parts[2] == "comm":
            return ("file", proc.comm)
        return None

    def _proc_ls(self, path: str) -> str | None:
        parts = [p for p in path.split("/") if p]
        if parts == ["proc"]:
            return "\n".join([*(str(pid) for pid in sorted(self._procs)), "cpuinfo", "meminfo", "self", "stat",
                              "uptime", "version"])
        entry = self._proc_entry(path)
        if entry is not None and entry[0] == "dir":
            return "cmdline\ncomm\ncwd\nenviron\nexe\nfd\nstat\nstatus"
        return None

    def _status(self, proc: _Process) -> str:
        """/proc/<pid>/status (a zombie has no memory lines)."""
        lines = [f"Name:\t{proc.comm}", "Umask:\t0022", f"State:\t{STATES[proc.state]}", f"Tgid:\t{proc.pid}",
                 "Ngid:\t0", f"Pid:\t{proc.pid}", f"PPid:\t{proc.ppid}", "TracerPid:\t0",
                 f"Uid:\t{_UID}\t{_UID}\t{_UID}\t{_UID}", f"Gid:\t{_UID}\t{_UID}\t{_UID}\t{_UID}",
                 f"FDSize:\t{0 if proc.zombie else 64}", f"Groups:\t{_UID} ", f"NStgid:\t{proc.pid}",
                 f"NSpid:\t{proc.pid}", f"NSpgid:\t{proc.ppid}", f"NSsid:\t{proc.ppid}"]
        if not proc.zombie:
            lines += ["VmPeak:\t  412388 kB", "VmSize:\t  408252 kB", "VmRSS:\t   61532 kB"]
        lines += [f"Threads:\t{1 if proc.zombie else 4}", "SigQ:\t0/31454", "SigPnd:\t0000000000000000",
                  "ShdPnd:\t0000000000000000", "voluntary_ctxt_switches:\t152", "nonvoluntary_ctxt_switches:\t9"]
        return "\n".join(lines) + "\n"

    def _stat(self, proc: _Process) -> str:
        """/proc/<pid>/stat: 52 fields, ``pid (comm) state ppid pgrp session …``."""
        start = max(0, int((proc.started - getattr(self, "_booted", proc.started)) * _CLK_TCK)) + 4200
        vsize, rss = (0, 0) if proc.zombie else (418050048, 15383)
        fields = [str(proc.pid), f"({proc.comm})", proc.state, str(proc.ppid), str(proc.ppid), str(proc.ppid), "0",
                  "-1", "4194560", "1024", "0", "0", "0", "12", "3", "0", "0", "20", "0",
                  "1" if proc.zombie else "4", "0", str(start), str(vsize), str(rss), "18446744073709551615"]
        fields += ["0"] * (52 - len(fields) - 1) + [str(proc.exit_code & 0xFFFF if proc.zombie else 0)]
        return " ".join(fields) + "\n"

    def _ls(self, args: list[str]) -> tuple[str, int]:
        paths = [a for a in args if not a.startswith("-")] or ["/home/retro"]
        out: list[str] = []
        code = 0
        for p in paths:
            norm = p.rstrip("/") or "/"
            listing = self._proc_ls(norm)
            if listing is not None:
                out.append(listing)
            elif norm in _FAKE_DIRS:
                out.append(_FAKE_DIRS[norm])
            elif norm in _FAKE_FILES or norm in _SOCKETS or norm in _BINARIES:
                out.append(p)
            else:
                out.append(f"ls: cannot access '{p}': No such file or directory")
                code = 2
        return "\n".join(out), code

    def _cat(self, args: list[str]) -> tuple[str, int]:
        out: list[str] = []
        code = 0
        for p in (a for a in args if not a.startswith("-")):
            entry = self._proc_entry(p)
            if entry is not None:
                if entry[0] == "dir":
                    out.append(f"cat: {p}: Is a directory")
                    code = 1
                else:
                    out.append(entry[1] or "")
                continue
            if p.startswith("/proc/"):
                out.append(f"cat: {p}: No such file or directory")
                code = 1
            elif p in _FAKE_FILES:
                out.append(_FAKE_FILES[p].format(hostname=self.hostname))
            elif p in _FAKE_DIRS:
                out.append(f"cat: {p}: Is a directory")
                code = 1
            else:
                out.append(f"cat: {p}: No such file or directory")
                code = 1
        return "\n".join(out), code

    def _test(self, args: list[str]) -> int:
        if len(args) == 2 and args[0] in ("-e", "-f", "-d", "-S", "-r", "-x"):
            p = args[1].rstrip("/") or "/"
            entry = self._proc_entry(p)
            if entry is not None or p.startswith("/proc/"):
                kind = entry[0] if entry is not None else None
                ok = {"-e": kind is not None, "-f": kind == "file", "-d": kind == "dir", "-S": False,
                      "-r": kind is not None, "-x": kind == "dir"}[args[0]]
                return 0 if ok else 1
            files = p in _FAKE_FILES or p in _BINARIES
            kind = {"-e": files or p in _FAKE_DIRS or p in _SOCKETS, "-f": files, "-d": p in _FAKE_DIRS,
                    "-S": p in _SOCKETS, "-r": files or p in _FAKE_DIRS, "-x": p in _BINARIES or p in _FAKE_DIRS}
            return 0 if kind[args[0]] else 1
        if len(args) == 2 and args[0] in ("-n", "-z"):
            return 0 if (bool(args[1]) == (args[0] == "-n")) else 1
        if len(args) == 1:
            return 0 if args[0] else 1
        if len(args) == 3 and args[1] in ("=", "!="):
            return 0 if ((args[0] == args[2]) == (args[1] == "=")) else 1
        return 2


def _git_allowed(cmd: list[str]) -> bool:
    """exec.go gitInvocationAllowed: only `git config --global user.name|user.email <value>`."""
    return (
        len(cmd) == 5 and cmd[:3] == ["git", "config", "--global"]
        and cmd[3] in ("user.name", "user.email") and not cmd[4].startswith("-")
    )
