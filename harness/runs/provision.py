"""Provision a simulator as the target: `python -m helix_sim up --json` as an owned child.

This is only *provisioning* (like booting a lab device): the suite then drives the simulator
through the same target config and drivers as a real Mac. Nothing else is sim-specific.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import ConfigError, HarnessError
from ..redact import register

INFO_KEYS = (
    "api_url", "api_key", "ssh_host", "ssh_port", "ssh_user", "ssh_key", "utmctl", "vm_id",
    "frame_export_port", "helix_debug_log", "crash_dir", "target_file",
)

_OPTION_OF = {"fps": "--fps", "resolution": "--resolution", "video_mode": "--video-mode", "qemu": "--qemu",
              "gop": "--gop", "boot_delay": "--boot-delay", "delay_scale": "--delay-scale", "cli": "--cli",
              "cli_wait_timeout": "--cli-wait-timeout", "stale_client_timeout": "--stale-client-timeout",
              "stale_sweep_interval": "--stale-sweep-interval", "provider": "--provider"}
#: What a helix-app simulator's target file says that the harness takes over (besides the UTM keys).
_HELIX_APP_KEYS = {"vm": ("app", "qemu", "data_dir", "ssh_port", "api_port", "qmp_port", "frame_export_port",
                          "helix_cli", "powerdown_wait"),
                   "guest": ("drm_env_file",)}


def real_qemu_missing() -> str | None:
    """Why a helix-app simulator cannot run here (it runs a real ``qemu-system-aarch64``), or None."""
    from helix_sim.host.real_qemu import find_qemu

    if find_qemu() is None:
        return ("the Helix.app simulator runs a real qemu-system-aarch64 and this host has none: install Debian's "
                "qemu-system-arm (`make debs` does, as root)")
    return None


class SimLaunchError(HarnessError):
    default_phase = "sim"
    default_cause = "sim_failed"


def validate_faults(spec) -> frozenset[str]:
    """Fault names (``"a,b"`` or a list) checked against the simulator's fault table; a ConfigError names the
    unknown ones and lists the known ones."""
    from helix_sim.config import parse_faults
    from helix_sim.errors import SimError

    try:
        return parse_faults(spec)
    except SimError as exc:
        raise ConfigError(exc.message, hint=exc.hint) from None


@dataclass
class SimProcess:
    proc: subprocess.Popen
    info: dict[str, Any]
    root: Path
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)
    stderr_path: Path | None = None

    def overrides(self) -> dict[str, Any]:
        """Dotted target-config overrides that point a target at this simulator (a helix-app simulator: its
        Helix.app's bundle, data dir, ports and host CLI too, from its target file)."""
        i = self.info
        if i.get("provider") == "helix-app":
            out = {"vm.provider": "helix-app", "ssh.host": i["ssh_host"], "ssh.user": i["ssh_user"],
                   "ssh.key": i["ssh_key"], "ssh.known_hosts": _known_hosts_of(i),
                   "frame_export.host": "127.0.0.1", "host.helix_debug_log": i["helix_debug_log"],
                   "host.crash_dir": i["crash_dir"]}
            data = _target_data(i)
            for section, keys in _HELIX_APP_KEYS.items():
                out.update({f"{section}.{k}": data[section][k] for k in keys if k in data.get(section, {})})
            out["guest.api_port"] = data["guest"]["api_port"]
            return out
        return {
            "vm.id": i["vm_id"],
            "vm.utmctl": i["utmctl"],
            "ssh.host": i["ssh_host"],
            "ssh.port": i["ssh_port"],
            "ssh.user": i["ssh_user"],
            "ssh.key": i["ssh_key"],
            "ssh.known_hosts": _known_hosts_of(i),
            "frame_export.host": "127.0.0.1",
            "frame_export.port": i["frame_export_port"],
            "host.helix_debug_log": i["helix_debug_log"],
            "host.crash_dir": i["crash_dir"],
            "guest.api_port": int(i["api_url"].rsplit(":", 1)[1].split("/")[0]),
            # the CLI and its stamp stay inside the simulator's root (never the host's shared /tmp/helix)
            **({"guest.cli_path": cli_path} if (cli_path := _cli_path_of(i)) else {}),
        }

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _cli_path_of(info: Mapping[str, Any]) -> str | None:
    """The simulator's ``[guest] cli_path`` (inside its root), if its target file names one."""
    try:
        value = _target_data(info)["guest"]["cli_path"]
    except (SimLaunchError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) and value else None


def _target_data(info: Mapping[str, Any]) -> dict[str, Any]:
    import tomllib

    try:
        return tomllib.loads(Path(info["target_file"]).read_text())
    except (OSError, KeyError, ValueError) as exc:
        raise SimLaunchError(f"the simulator's target file is unusable: {exc}") from None


def _known_hosts_of(info: Mapping[str, Any]) -> str:
    try:
        return str(_target_data(info)["ssh"]["known_hosts"])
    except KeyError as exc:
        raise SimLaunchError(f"the simulator's target file is unusable: {exc}") from None


def _drain(stream) -> None:
    """Keep reading the simulator's stdout so it can never block on a full pipe."""
    try:
        while os.read(stream.fileno(), 65536):
            pass
    except (OSError, ValueError):
        pass


def sim_argv(settings: Mapping[str, Any], faults: list[str]) -> list[str]:
    argv = [sys.executable, "-m", "helix_sim", "up", "--json", "--stop-on-stdin-eof"]
    for key, value in settings.items():
        if key in ("faults", "external"):
            continue
        opt = _OPTION_OF.get(key)
        if opt is None:
            raise ConfigError(f"[sim] has unknown key {key!r}", hint=f"known: {', '.join(_OPTION_OF)}, faults")
        argv += [opt, str(value)]
    for fault in faults:
        argv += ["--fault", fault]
    return argv


def launch_sim(settings: Mapping[str, Any], faults: Iterable[str] = (), *, timeout: float = 60.0,
               root: Path | None = None) -> SimProcess:
    """Start ``python -m helix_sim up`` with a target's ``[sim]`` settings (their ``faults`` key joins
    ``faults``) as an owned child, and return once it printed its info line. A Helix.app simulator on a
    host with no real QEMU is refused at once, saying why (a caller's tests then error, never skip)."""
    faults = sorted(set(validate_faults(list(faults))) | validate_faults(settings.get("faults") or []))
    if settings.get("provider") == "helix-app":
        missing = real_qemu_missing()
        if missing:
            raise SimLaunchError(missing, hint="or run the UTM simulator (--sim-provider utm)")
    tmp = None
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="helix-e2e-sim-")
        root = Path(tmp.name)
    argv = sim_argv(settings, faults) + ["--root", str(root / "sim")]
    stderr_path = root / "sim.stderr.log"
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    try:
        with open(stderr_path, "wb") as stderr_fh:
            # stdin: a pipe we never write to; if this process dies, the simulator sees EOF and stops.
            # Its own session: a signal meant for the harness's process group (a Ctrl-C the harness ignores
            # as a background job) never stops the simulator behind the harness's back.
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr_fh, stdin=subprocess.PIPE, env=env,
                                    start_new_session=True)
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise
    try:
        info = _read_info(proc, stderr_path, timeout)
    except BaseException:  # a failed start, or Ctrl-C while it starts: never leave the simulator behind
        _kill(proc)
        if tmp is not None:
            tmp.cleanup()
        raise
    register(info.get("api_key"))
    threading.Thread(target=_drain, args=(proc.stdout,), name="sim-stdout", daemon=True).start()
    return SimProcess(proc=proc, info=info, root=root, _tmp=tmp, stderr_path=stderr_path)


def _kill(proc: subprocess.Popen) -> None:
    """SIGTERM (the simulator stops what it started), then SIGKILL; always reaped."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()


def read_first_line(proc: subprocess.Popen, timeout: float) -> bytes:
    """What a child printed on stdout up to its first newline, within ``timeout`` (without the newline when
    the child exited or the time ran out first). Never blocks past the deadline on a silent child."""
    line = b""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    end = time.monotonic() + timeout
    try:
        while not line.endswith(b"\n"):
            remaining = end - time.monotonic()
            if remaining <= 0 or proc.poll() is not None:
                break
            if sel.select(timeout=min(0.5, remaining)):
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                line += chunk
    finally:
        sel.close()
    return line


def _read_info(proc: subprocess.Popen, stderr_path: Path, timeout: float) -> dict[str, Any]:
    """The simulator's one JSON line (``sim up --json``), or SimLaunchError."""
    line = read_first_line(proc, timeout)
    if not line.endswith(b"\n"):
        exited = proc.poll() is not None
        _kill(proc)
        err = stderr_path.read_text(errors="replace")[-1500:] if stderr_path.exists() else ""
        what = (f"the simulator exited at start (exit {proc.returncode})" if exited
                else f"the simulator did not start within {timeout:.0f}s")
        raise SimLaunchError(
            f"{what}: {err.strip()}",
            hint="run `python -m helix_sim up --json` by hand to see why; is OpenSSH's sshd installed?",
        )
    try:
        info = json.loads(line.decode("utf-8"))
        missing = [k for k in INFO_KEYS if k not in info]
        if missing:
            raise ValueError(f"missing keys {missing}")
    except ValueError as exc:
        raise SimLaunchError(f"the simulator printed an unusable JSON line: {exc}") from None
    return info
