"""The simulated VM guest: a real OpenSSH ``sshd`` on loopback serving a sandboxed guest home.

The real VM is reached only over SSH (UTM forwards ``127.0.0.1:2222`` to the guest's port 22).
:class:`GuestVM` stands in for it with a real ``sshd -D -e`` bound to ``127.0.0.1:<port>``, key
authentication only, and a ``ForceCommand`` wrapper (``<root>/guest-shell``) that moves every
session into the guest's world: ``HOME`` is the guest home, ``PATH`` has the guest's ``bin``
first (the ``go`` and ``docker`` shims), and the guest env points ``docker`` at the simulator's
Docker Engine. Command lines run with bash; the sftp subsystem and ``direct-tcpip`` forwarding
work as on the real VM, so the harness's SSH driver runs unchanged against it.

Root layout (``vm/`` in the simulator's root)::

    ssh/        sshd_config, host keys, authorized_keys      sshd.log, sshd.pid
    client/     id_ed25519(.pub), known_hosts                guest-shell, guest-tmpns, guest-env.sh
    home/       the guest home: helix/ (stack, compose file, .env.usercreds, api/, a git repo)
    bin/        go, docker (shims)                           dev/dri/ (the VM's render nodes)
    tmp/        the guest's /tmp (the built helix CLI, the CLI's .h264 recordings, …)

sshd runs under a watchdog (:mod:`.watchdog`) that stops it, and every guest process, when the simulator
ends however it ends. Each SSH session gets a private mount namespace where ``tmp/`` is bound over
``/tmp`` (``unshare --mount``, or with a user namespace when not root; where neither works, ``TMPDIR`` only).

Faults (``SimConfig.faults``, place ``vm``): ``ssh_refused`` (nothing listens),
``ssh_blackhole`` (a listener that accepts and never sends a byte) and ``host_key_changed``
(sshd presents a host key other than the one in ``known_hosts``).
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from .._paths import IMPORT_ROOT
from .._wait import poll_until
from ..errors import SimCommandError, SimConfigError, SimError
from ..config import SimConfig
from ..guest.helix.timing import CliTiming
from .processes import STOP_GRACE, descendants, reap_adopted, stop_guest_processes, stop_tree
from .render import GUEST_FILES, TEMPLATES_DIR, render, write_file

log = logging.getLogger("helix_sim.vm")

_SFTP_SERVERS = (
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/libexec/sftp-server",
    "/usr/lib/ssh/sftp-server",
)
_GIT_NAME = "Helix Sim"
_GIT_EMAIL = "sim@helix-e2e.invalid"

#: How long boot() waits for sshd to answer with its banner.
SSHD_START_TIMEOUT = 10.0


class GuestError(SimError):
    """The simulated guest could not be prepared, booted or stopped."""

    default_phase = "ssh"


def cli_timing(config: SimConfig) -> CliTiming:
    """The helix CLI's waits under ``config`` (passed to the guest in its environment)."""
    return CliTiming(wait_poll_s=config.cli_wait_poll_s, wait_timeout_s=config.cli_wait_timeout_s,
                     stats_interval_s=config.cli_stats_interval_s, delay_scale=config.delay_scale)


def _pub(key: Path) -> Path:
    """ssh-keygen's public half: the private key's path + ``.pub``."""
    return key.with_name(key.name + ".pub")


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _find_sftp_server() -> str:
    for path in _SFTP_SERVERS:
        if os.access(path, os.X_OK):
            return path
    raise SimConfigError(
        "no OpenSSH sftp-server found", hint=f"install openssh-sftp-server (looked at {', '.join(_SFTP_SERVERS)})"
    )


def _find_sshd() -> str:
    path = shutil.which("sshd", path="/usr/sbin:/usr/local/sbin:/sbin:/usr/bin:/usr/local/bin")
    if not path:
        raise SimConfigError("OpenSSH sshd not found", hint="install openssh-server (the sim runs a real sshd)")
    return os.path.abspath(path)  # sshd re-execs itself and insists on an absolute path


_TMP_NS_MODE: str | None = None


def tmp_namespace_mode(probe_dir: Path) -> str:
    """How an SSH session gets a private /tmp: ``root`` (``unshare --mount``), ``user`` (in a user namespace
    too) or ``""`` (neither works here: the guest gets ``TMPDIR`` only). Probed once per process."""
    global _TMP_NS_MODE
    if _TMP_NS_MODE is not None:
        return _TMP_NS_MODE
    mode = ""
    unshare = shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin")
    if unshare and sys.platform.startswith("linux"):
        a, b = probe_dir / "ns-probe-a", probe_dir / "ns-probe-b"
        a.mkdir(parents=True, exist_ok=True)
        b.mkdir(parents=True, exist_ok=True)
        tries = ([("root", [])] if os.geteuid() == 0 else []) + [("user", ["--user", "--map-current-user"])]
        for name, extra in tries:
            try:
                res = subprocess.run([unshare, *extra, "--mount", "--propagation", "private", "/bin/sh", "-c",
                                      'mount --bind "$0" "$1"', str(a), str(b)],
                                     capture_output=True, timeout=10, check=False)
            except (OSError, subprocess.TimeoutExpired):
                continue
            if res.returncode == 0:
                mode = name
                break
        for d in (a, b):
            d.rmdir()
    if not mode:
        log.info("no mount namespace for the guest's /tmp here: guest commands writing to /tmp reach the host's")
    _TMP_NS_MODE = mode
    return mode


def tmp_binds(paths: list[Path]) -> list[str]:
    """The first-level directories under /tmp that hold ``paths`` (bound into the guest's /tmp)."""
    out: list[str] = []
    for path in paths:
        for candidate in {Path(os.path.abspath(path)), Path(os.path.realpath(path))}:
            try:
                rel = candidate.relative_to("/tmp")
            except ValueError:
                continue
            if rel.parts:
                top = f"/tmp/{rel.parts[0]}"
                if top not in out:
                    out.append(top)
    return out


def _ensure_privsep_dir() -> None:
    """sshd run as root needs its privilege-separation dir (systemd's RuntimeDirectory on hosts)."""
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)


def _run(cmd: list[str], *, what: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    try:
        res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SimCommandError(f"{what} failed: {exc}", command=cmd, phase="ssh") from exc
    if res.returncode != 0:
        raise SimCommandError(
            f"{what} failed (exit {res.returncode}): {(res.stderr or res.stdout).strip()[-500:]}",
            command=cmd,
            exit_status=res.returncode,
            stdout=res.stdout,
            stderr=res.stderr,
            phase="ssh",
        )
    return res.stdout


class _Blackhole:
    """The ``ssh_blackhole`` fault: a listener that accepts TCP connections and never sends a byte."""

    def __init__(self, host: str, port: int) -> None:
        self._listener = socket.create_server((host, port), backlog=64)
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, name=f"sim-ssh-blackhole:{port}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    if key.fileobj is self._wake_r:
                        return
                    try:
                        conn, _addr = self._listener.accept()
                    except BlockingIOError:
                        continue
                    self._conns.append(conn)  # held open, never read from or written to

    def close(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._thread.join(timeout=5)
        for s in (*self._conns, self._listener, self._wake_r, self._wake_w):
            try:
                s.close()
            except OSError:
                pass
        self._conns.clear()


class GuestVM:
    """The VM guest behind UTM's SSH port forward. ``prepare()``, ``boot()``, ``shutdown()``."""

    def __init__(
        self,
        root: Path,
        config: SimConfig,
        *,
        api_url: str,
        docker_host: str,
        python: str = sys.executable,
    ) -> None:
        self.root = Path(root).absolute()
        self.config = config
        self.api_url = api_url
        self.docker_host = docker_host
        self.python = python
        self.ssh_host = "127.0.0.1"
        self.ssh_port = config.ssh_port or free_loopback_port()
        self.ssh_user = getpass.getuser()
        self.home = self.root / "home"
        self.tmp_dir = self.root / "tmp"  # the guest's /tmp
        self.helix_dir = self.home / "helix"
        self.bin_dir = self.root / "bin"
        self.ssh_dir = self.root / "ssh"
        self.client_dir = self.root / "client"
        self.ssh_key = self.client_dir / "id_ed25519"
        self.known_hosts = self.client_dir / "known_hosts"
        self.sshd_config = self.ssh_dir / "sshd_config"
        self.sshd_log = self.root / "sshd.log"
        self.host_key = self.ssh_dir / "ssh_host_ed25519_key"
        #: The key sshd presents under ``host_key_changed`` (a re-created VM's new key).
        self.other_host_key = self.ssh_dir / "ssh_host_ed25519_key.recreated"
        self._sshd: subprocess.Popen[bytes] | None = None  # the watchdog that runs sshd
        self._watch_w: int | None = None
        self._sshd_log_fh: IO[bytes] | None = None
        self._blackhole: _Blackhole | None = None

    def __repr__(self) -> str:
        return f"GuestVM({self.ssh_user}@{self.ssh_host}:{self.ssh_port}, root={self.root})"

    # --- prepare ------------------------------------------------------------------------

    @property
    def presented_host_key(self) -> Path:
        return self.other_host_key if "host_key_changed" in self.config.faults else self.host_key

    @property
    def cli_path(self) -> str:
        """Where the target file tells the harness to build the CLI: the guest's own /tmp, inside the root."""
        return str(self.tmp_dir / "helix")

    def _values(self, sftp_server: str) -> dict[str, str]:
        api_port = urlsplit(self.api_url).port or 8080
        ns = tmp_namespace_mode(self.root)
        needed = [self.root, IMPORT_ROOT, Path(sys.prefix), Path(sys.base_prefix), Path(self.python).parent]
        return {
            "TMP_NS": ns,
            "GUEST_TMP": str(self.tmp_dir),
            "GUEST_TMPDIR": "/tmp" if ns else str(self.tmp_dir),
            "TMP_BINDS": " ".join(shlex.quote(d) for d in tmp_binds(needed)),
            "ROOT": str(self.root),
            "HOME": str(self.home),
            "BIN": str(self.bin_dir),
            "USER": self.ssh_user,
            "PORT": str(self.ssh_port),
            "HOST_KEY": str(self.presented_host_key),
            "SFTP_SERVER": sftp_server,
            "DOCKER_HOST": self.docker_host,
            "PYTHON": self.python,
            "PYTHONPATH": str(IMPORT_ROOT),
            "DRI_DIR": str(self.root / "dev" / "dri"),
            "API_URL": self.api_url,
            "API_PORT": str(api_port),
            "API_KEY": self.config.api_key,
            # no_agent: the user has no agent to name (and the project has no DefaultHelixAppID)
            "AGENT_ID": "" if "no_agent" in self.config.faults else self.config.agent_id,
            "CLI_GENERATION": self.config.cli,
            "PROJECT_ID": self.config.project_id,
            # HELIX_SIM_DELAY_SCALE, HELIX_SIM_CLI_*: rendered as DELAY_SCALE, CLI_* into guest-env.sh
            **{name.removeprefix("HELIX_SIM_"): value for name, value in self.cli_env().items()},
        }

    def cli_env(self) -> dict[str, str]:
        """What the guest's environment tells the helix CLI about its waits (from the config)."""
        return cli_timing(self.config).to_env()

    def prepare(self) -> None:
        """Create (or refresh) keys, sshd config and guest files under ``root``. Idempotent."""
        if re.search(r"[\s\"'\\]", str(self.root)):
            raise SimConfigError(f"the sim VM root must not contain spaces or quotes: {self.root}")
        for d in (self.root, self.ssh_dir, self.client_dir, self.home, self.helix_dir, self.bin_dir,
                  self.root / "dev" / "dri", self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.chmod(0o1777)
        for name in ("card0", "renderD128"):  # virtio-gpu render nodes, for the stack's GPU detection
            (self.root / "dev" / "dri" / name).touch()
        self._keygen(self.host_key, "root@helix-vm")
        self._keygen(self.other_host_key, "root@helix-vm")
        self._keygen(self.ssh_key, "helix-e2e-sim")
        (self.ssh_dir / "authorized_keys").write_text(_pub(self.ssh_key).read_text())
        host_pub = _pub(self.host_key).read_text().split()
        self.known_hosts.write_text(f"[{self.ssh_host}]:{self.ssh_port} {host_pub[0]} {host_pub[1]}\n")

        values = self._values(_find_sftp_server())
        self.sshd_config.write_text(render((TEMPLATES_DIR / "sshd_config").read_text(), values))
        for template, dest, mode in GUEST_FILES:
            write_file(self.root / dest, render((TEMPLATES_DIR / template).read_text(), values), mode)
        self._init_git()
        _ensure_privsep_dir()
        _run([_find_sshd(), "-t", "-f", str(self.sshd_config)], what="sshd config check")
        log.debug("guest prepared under %s (ssh %s@%s:%d)", self.root, self.ssh_user, self.ssh_host, self.ssh_port)

    def _keygen(self, path: Path, comment: str) -> None:
        if path.exists() and _pub(path).exists():
            return
        path.unlink(missing_ok=True)
        _pub(path).unlink(missing_ok=True)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], what="ssh-keygen")

    def _init_git(self) -> None:
        """Make ~/helix a git checkout with one commit, so `git rev-parse HEAD` names the build."""
        if (self.helix_dir / ".git").exists():
            return
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": _GIT_NAME,
            "GIT_AUTHOR_EMAIL": _GIT_EMAIL,
            "GIT_COMMITTER_NAME": _GIT_NAME,
            "GIT_COMMITTER_EMAIL": _GIT_EMAIL,
        }
        git = ["git", "-C", str(self.helix_dir)]
        _run([*git, "init", "-q"], what="git init", env=env)
        _run([*git, "config", "user.name", _GIT_NAME], what="git config", env=env)
        _run([*git, "config", "user.email", _GIT_EMAIL], what="git config", env=env)
        _run([*git, "add", "-A"], what="git add", env=env)
        _run([*git, "commit", "-q", "-m", "Helix dev checkout (helix-e2e simulated guest)"], what="git commit", env=env)

    # --- boot / shutdown ----------------------------------------------------------------

    @property
    def running(self) -> bool:
        return (self._sshd is not None and self._sshd.poll() is None) or self._blackhole is not None

    @property
    def sshd_pid(self) -> int | None:
        return self._sshd.pid if self._sshd is not None else None

    def boot(self) -> None:
        """Bring the guest's SSH up (or the configured SSH fault), waiting until the port answers."""
        if self.running:
            return
        self.prepare()
        faults = self.config.faults
        if "ssh_refused" in faults:
            log.info("fault ssh_refused: nothing listens on %s:%d", self.ssh_host, self.ssh_port)
            return
        if "ssh_blackhole" in faults:
            self._blackhole = _Blackhole(self.ssh_host, self.ssh_port)
            log.info("fault ssh_blackhole: %s:%d accepts and never answers", self.ssh_host, self.ssh_port)
            return
        if "host_key_changed" in faults:
            log.info("fault host_key_changed: sshd presents a host key not in known_hosts")
        self._start_sshd()

    def _start_sshd(self) -> None:
        """sshd under its watchdog (:mod:`.watchdog`), in a session of its own: stdin is a pipe whose write end
        only this process holds, so sshd and the guest's processes die with the simulator however it ends."""
        _ensure_privsep_dir()
        self._sshd_log_fh = open(self.sshd_log, "ab")  # noqa: SIM115 - closed in shutdown()
        cmd = [self.python, "-s", "-P", "-m", "helix_sim.vm.watchdog", "--marker", str(self.root), "--",
               _find_sshd(), "-D", "-e", "-f", str(self.sshd_config)]
        watch_r, self._watch_w = os.pipe()  # both non-inheritable: only the watchdog's stdin gets the read end
        env = {**os.environ, "PYTHONPATH": str(IMPORT_ROOT)}
        try:
            self._sshd = subprocess.Popen(
                cmd, stdin=watch_r, stdout=self._sshd_log_fh, stderr=self._sshd_log_fh, env=env,
                start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            self._close_watch()
            self._close_log()
            raise GuestError(f"cannot start sshd: {exc}") from exc
        finally:
            os.close(watch_r)
        log.debug("sshd watchdog pid %d on %s:%d", self._sshd.pid, self.ssh_host, self.ssh_port)
        try:
            state = poll_until(self._probe_sshd, timeout=SSHD_START_TIMEOUT, what=f"sshd on port {self.ssh_port}",
                               phase="ssh", interval=0.02, max_interval=0.2, hint=f"see {self.sshd_log}")
            if state == "exited":
                raise GuestError(
                    f"sshd exited with status {self._sshd.returncode} during boot: {self._log_tail()}",
                    hint=f"see {self.sshd_log}",
                )
        except BaseException:
            self.shutdown()
            raise

    def _probe_sshd(self) -> str | None:
        """``"up"`` once sshd sends its banner, ``"exited"`` if it died, None while it starts."""
        assert self._sshd is not None
        if self._sshd.poll() is not None:
            return "exited"
        try:
            with socket.create_connection((self.ssh_host, self.ssh_port), timeout=1) as s:
                s.settimeout(1)
                return "up" if s.recv(64).startswith(b"SSH-2.0-") else None
        except OSError:
            return None

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.sshd_log.read_text(errors="replace").strip().splitlines()[-3:])
        except OSError:
            return "(no sshd.log)"

    def shutdown(self) -> None:
        """Stop sshd and every session it spawned, and the blackhole. Idempotent."""
        proc, self._sshd = self._sshd, None
        if proc is not None:
            self._stop_sshd(proc)
        self._close_watch()
        blackhole, self._blackhole = self._blackhole, None
        if blackhole is not None:
            blackhole.close()
        self._stop_strays()
        self._close_log()

    def _stop_strays(self) -> None:
        """Stop guest commands that outlived their SSH session (found by ``GUEST_ENV``), and reap them."""
        stop_guest_processes(str(self.root))
        reap_adopted()

    def _stop_sshd(self, proc: subprocess.Popen[bytes]) -> None:
        # The watchdog's tree: sshd, its per-connection processes and their sessions, bottom-up (each parent
        # still there to reap its children); then the watchdog itself (its own process group), which we reap.
        tree_size = len(descendants(proc.pid))
        stop_tree(proc.pid)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(timeout=STOP_GRACE)
                break
            except subprocess.TimeoutExpired:
                continue
        proc.wait()
        self._close_watch()
        log.debug("sshd watchdog pid %d stopped (%d processes under it)", proc.pid, tree_size)

    def _close_watch(self) -> None:
        """Closing the pipe's write end: EOF for the watchdog (it stops what is left and exits)."""
        fd, self._watch_w = self._watch_w, None
        if fd is not None:
            os.close(fd)

    def _close_log(self) -> None:
        fh, self._sshd_log_fh = self._sshd_log_fh, None
        if fh is not None:
            fh.close()

    def __enter__(self) -> "GuestVM":
        self.boot()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
