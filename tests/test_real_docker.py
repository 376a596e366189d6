"""The harness's docker-py code against a REAL Docker engine (not the simulator's Engine API subset).

A private ``dockerd`` (its own socket, data-root and exec-root under a temp dir; no bridge, no
iptables: it needs no network) runs containers from a ``FROM scratch`` image holding Debian's
static busybox (built here from a local context: no registry is reachable). The containers print
real vsockenc log lines (macos-frame-export.md §2), exit with a code, restart under a restart
policy, or are OOM-killed; the driver's functions (``harness.drivers.docker``: the same calls
``DockerDriver`` makes over SSH) read their state and their logs with ``since=``.

Skipped, with the reason, when no engine can be started: not root, no ``dockerd`` (``make test``
installs docker.io on Debian as root), no static busybox, or dockerd fails to come up. dockerd is
owned, stopped and waited for at the end, and its directories are removed.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest

from harness.config import GuestConfig
from harness.drivers.docker import (
    ContainerState, DockerDriver, DockerDriverError, container_logs, container_state, engine_ping,
    find_service_container,
)
from harness.analysis.logscan import scan_text

docker = pytest.importorskip("docker")

pytestmark = pytest.mark.timeout(120)

IMAGE = "helix-e2e-busybox:test"
BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")
START_TIMEOUT = 30.0


def vsockenc_line(frame: int, resource_id: int = 17, t: float = 34.030216978) -> str:
    """A vsockenc GStreamer DEBUG line, byte for byte as in macos-frame-export.md §2."""
    h, rest = divmod(t, 3600)
    m, s = divmod(rest, 60)
    return (f"{int(h)}:{int(m):02d}:{s:012.9f}   333 0xe7a330000c00 DEBUG            vsockenc "
            f"gstvsockenc.c:570:gst_vsockenc_handle_frame:<vsockenc0> Sent frame {frame}, "
            f"resource_id={resource_id}, size=1920x1080, keyframe={1 if frame == 1 else 0}")


def poll(check, *, timeout: float, what: str, interval: float = 0.05):
    """Poll ``check`` until truthy (no fixed sleeps as synchronisation)."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"no {what} within {timeout:.0f}s")
        time.sleep(interval)  # polling interval


def _static_elf(path: str) -> bool:
    """An ELF executable without a PT_INTERP program header (no dynamic loader needed)."""
    import struct

    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only
                return False
            endian = "<" if head[5] == 1 else ">"
            phoff, = struct.unpack_from(endian + "Q", head, 32)
            phentsize, phnum = struct.unpack_from(endian + "HH", head, 54)
            fh.seek(phoff)
            table = fh.read(phentsize * phnum)
    except OSError:
        return False
    return all(struct.unpack_from(endian + "I", table, i * phentsize)[0] != 3 for i in range(phnum))


def _static_busybox() -> str | None:
    return next((p for p in BUSYBOX_PATHS if os.path.exists(p) and _static_elf(p)), None)


class Engine:
    """A private dockerd: started, owned and waited for; its directories removed."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hxd-"))  # short: containerd's socket path is limited
        self.sock = self.dir / "docker.sock"
        self.log_path = self.dir / "dockerd.log"
        self.proc: subprocess.Popen | None = None
        self.client = None
        self.children: list[psutil.Process] = []

    def start(self) -> None:
        (self.dir / "daemon.json").write_text("{}")  # never /etc/docker/daemon.json
        argv = [
            shutil.which("dockerd"), "--host", f"unix://{self.sock}", "--data-root", str(self.dir / "data"),
            "--exec-root", str(self.dir / "x"), "--pidfile", str(self.dir / "dockerd.pid"),
            "--config-file", str(self.dir / "daemon.json"), "--bridge=none", "--iptables=false",
            "--ip6tables=false", "--ip-masq=false", "--userland-proxy=false", "--log-level=warn",
        ]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.client = docker.DockerClient(base_url=f"unix://{self.sock}", version="1.41", timeout=30)

        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited {self.proc.returncode}: {self.log_tail()}")
            try:
                return bool(self.sock.exists() and engine_ping(self.client))
            except DockerDriverError:
                return False

        poll(up, timeout=START_TIMEOUT, what="dockerd answering /_ping", interval=0.1)
        self.children = psutil.Process(self.proc.pid).children(recursive=True)  # its containerd

    def log_tail(self) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-4:])
        except OSError:
            return "(no log)"

    def build_busybox_image(self, busybox: str) -> None:
        """FROM scratch + the static busybox, its applets installed by a RUN step (no registry)."""
        dockerfile = (b"FROM scratch\nCOPY busybox /bin/busybox\n"
                      b'RUN ["/bin/busybox", "--install", "-s", "/bin"]\nENV PATH=/bin\n')
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(busybox, arcname="busybox")
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(dockerfile)
            tar.addfile(info, io.BytesIO(dockerfile))
        buf.seek(0)
        self.client.images.build(fileobj=buf, custom_context=True, tag=IMAGE, rm=True, forcerm=True,
                                 network_mode="none")

    def stop(self) -> None:
        if self.client is not None:
            try:
                for c in self.client.containers.list(all=True):
                    c.remove(force=True)
            except Exception:  # noqa: BLE001 - stopping dockerd stops them anyway
                pass
            self.client.close()
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
            _, alive = psutil.wait_procs(self.children, timeout=10)
            for p in alive:
                p.kill()
            psutil.wait_procs(alive, timeout=5)
        for line in Path("/proc/self/mounts").read_text().splitlines():  # a dockerd killed hard leaves mounts
            mountpoint = line.split()[1]
            if mountpoint.startswith(str(self.dir)):
                subprocess.run(["umount", "-l", mountpoint], check=False, capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def engine():
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("a private dockerd needs root")
    if not shutil.which("dockerd"):
        pytest.skip("no dockerd: `make setup` installs docker.io on Debian as root (apt)")
    busybox = _static_busybox()
    if busybox is None:
        pytest.skip("no static busybox for a FROM scratch image: install busybox-static")
    eng = Engine()
    try:
        try:
            eng.start()
        except (RuntimeError, AssertionError, OSError) as exc:
            pytest.skip(f"dockerd could not be started here: {exc} ({eng.log_tail()})")
        try:
            eng.build_busybox_image(busybox)
        except docker.errors.DockerException as exc:
            pytest.skip(f"this dockerd cannot build or run containers here: {exc}")
        yield eng
    finally:
        eng.stop()
        survivors = [p for p in psutil.process_iter(["cmdline"]) if str(eng.dir) in " ".join(p.info["cmdline"] or [])]
        assert not survivors, f"dockerd left processes behind: {survivors}"
        assert not eng.dir.exists(), f"{eng.dir} was not removed"


def run(engine: Engine, script: str, **kw):
    name = f"hxe2e-{uuid.uuid4().hex[:10]}"
    return engine.client.containers.run(IMAGE, ["sh", "-c", script], name=name, detach=True, network_mode="none",
                                        **kw)


def state_of(engine: Engine, container) -> ContainerState:
    return container_state(engine.client, container.name)


def test_exit_code_of_a_container_that_exits_3(engine: Engine) -> None:
    c = run(engine, f"echo '{vsockenc_line(1)}'; exit 3")
    assert c.wait(timeout=20)["StatusCode"] == 3
    st = state_of(engine, c)
    assert (st.name, st.status, st.running, st.exit_code, st.oom_killed, st.restart_count) == (
        c.name, "exited", False, 3, False, 0)
    assert st.started_at.startswith("20")
    assert st.problems() == [f"{c.name} is not running (status exited, exit code 3)"]


def test_restart_count_under_a_restart_policy(engine: Engine) -> None:
    baseline = None
    c = run(engine, f"echo '{vsockenc_line(1)}'; exit 1", restart_policy={"Name": "on-failure", "MaximumRetryCount": 2})

    def settled() -> ContainerState | None:
        nonlocal baseline
        st = state_of(engine, c)
        baseline = baseline or st
        return st if st.restart_count == 2 and not st.running and not st.restarting else None

    st = poll(settled, timeout=30, what="two restarts by the on-failure policy")
    assert st.exit_code == 1 and st.status == "exited"
    assert baseline.restart_count < 2
    assert f"{c.name} restarted {2 - baseline.restart_count} time(s) during the test" in st.problems(baseline)
    # every run printed its line: the logs hold one per start
    assert container_logs(engine.client, c.name).count("Sent frame 1,") == 3


def test_oom_killed_container(engine: Engine) -> None:
    # A 16 MiB memory limit, and a shell variable four times as large.
    c = run(engine, "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived ${#x}",
            mem_limit="16m", memswap_limit="16m")
    c.wait(timeout=30)
    st = state_of(engine, c)
    if not st.oom_killed:
        pytest.skip(f"this kernel did not OOM-kill under a 16 MiB limit (exit {st.exit_code})")
    assert not st.running and st.exit_code == 137
    assert f"{c.name} was OOM-killed" in st.problems()


def test_logs_since_keep_only_newer_lines(engine: Engine) -> None:
    # Three frames, then (once /go exists) three more; `since` is just after the third line.
    first = "\n".join(vsockenc_line(i, t=34.0 + i / 60) for i in (1, 2, 3))
    second = "\n".join(vsockenc_line(i, t=34.0 + i / 60) for i in (4, 5, 6))
    c = run(engine, f"printf '%s\\n' '{first}'; while [ ! -e /go ]; do usleep 20000; done; "
                    f"printf '%s\\n' '{second}'; exec sleep 600")
    stamped = poll(lambda: [ln for ln in c.logs(timestamps=True).decode().splitlines() if "Sent frame 3," in ln],
                   timeout=20, what="the first three frames")
    third_at = _rfc3339_to_unix(stamped[0].split(" ", 1)[0])
    since = third_at + 1e-6  # the same second as the third line: a whole-second `since` would keep it
    assert c.exec_run(["touch", "/go"]).exit_code == 0
    poll(lambda: "Sent frame 6," in container_logs(engine.client, c.name), timeout=20, what="frame 6")

    newer = container_logs(engine.client, c.name, since=since)
    assert [ln.split("> ", 1)[1] for ln in newer.splitlines()] == [
        f"Sent frame {i}, resource_id=17, size=1920x1080, keyframe=0" for i in (4, 5, 6)]
    scan = scan_text(newer)
    assert (scan.resource_ids.source, scan.resource_ids.nonzero, scan.resource_ids.zero) == ("vsockenc", 3, 0)
    everything = container_logs(engine.client, c.name)
    assert scan_text(everything).resource_ids.nonzero == 6
    st = state_of(engine, c)
    assert st.running and st.status == "running" and st.problems() == []
    c.remove(force=True)


def test_service_container_by_compose_label(engine: Engine) -> None:
    c = run(engine, "exec sleep 600", labels={"com.docker.compose.service": "sandbox-macos"})
    assert find_service_container(engine.client, "sandbox-macos") == c.name
    with pytest.raises(DockerDriverError, match="no container for compose service 'api'"):
        find_service_container(engine.client, "api")
    with pytest.raises(DockerDriverError, match="does not exist"):
        container_state(engine.client, "no-such-container")
    c.remove(force=True)


def _rfc3339_to_unix(stamp: str) -> float:
    """docker's RFC 3339 nanosecond timestamp → Unix seconds (float)."""
    from datetime import datetime, timezone

    date, frac = stamp.rstrip("Z").split(".")
    whole = datetime.strptime(date, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return whole + float("0." + frac)


def test_closing_the_driver_keeps_the_ssh_connection() -> None:
    """docker-py's SSH adapter closes the client it was handed; the driver's close() must only close
    its own channels: the SSH connection belongs to SshDriver (teardown closes it one phase later)."""

    class Ssh:
        closed = False

        def close(self) -> None:
            self.closed = True

        def get_transport(self):
            return None

    ssh = Ssh()
    driver = DockerDriver(ssh, runner=None, guest=GuestConfig())
    driver.close()
    assert not ssh.closed
