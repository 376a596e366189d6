"""Containers in the guest, through docker-py.

docker-py reaches the guest's engine over *our* SSH connection, the way its own ``ssh://``
transport does: a channel running ``docker system dial-stdio``. The desktop container lives
inside the sandbox's Docker, so it is read through the sandbox (`docker compose exec -T
<sandbox> docker logs|inspect …`), as Helix's docs do it.
"""

from __future__ import annotations

import json
import logging
import shlex
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import docker
from docker.transport.sshconn import SSHHTTPAdapter

from ..config import GuestConfig
from ..errors import HarnessError
from .base import CommandRunner

log = logging.getLogger(__name__)

API_VERSION = "1.41"


class DockerDriverError(HarnessError):
    default_phase = "desktop"


@dataclass(frozen=True)
class ContainerState:
    name: str
    status: str
    running: bool
    restarting: bool
    oom_killed: bool
    exit_code: int
    restart_count: int
    started_at: str

    @classmethod
    def from_inspect(cls, data: dict) -> "ContainerState":
        state = data.get("State") or {}
        return cls(
            name=str(data.get("Name", "")).lstrip("/"),
            status=str(state.get("Status", "")),
            running=bool(state.get("Running")),
            restarting=bool(state.get("Restarting")),
            oom_killed=bool(state.get("OOMKilled")),
            exit_code=int(state.get("ExitCode") or 0),
            restart_count=int(data.get("RestartCount") or 0),
            started_at=str(state.get("StartedAt", "")),
        )

    def problems(self, baseline: "ContainerState | None" = None) -> list[str]:
        """What is wrong with this container now (relative to a baseline taken earlier)."""
        return [text for _, text in self.problem_kinds(baseline)]

    def problem_kinds(self, baseline: "ContainerState | None" = None) -> list[tuple[str, str]]:
        """:meth:`problems` as ``(kind, text)``: kind ``not_running``, ``oom``, ``restarting`` or ``restarted``."""
        out: list[tuple[str, str]] = []
        if not self.running:
            out.append(("not_running", f"{self.name} is not running (status {self.status}, exit code {self.exit_code})"))
        if self.oom_killed:
            out.append(("oom", f"{self.name} was OOM-killed"))
        if self.restarting:
            out.append(("restarting", f"{self.name} is restarting"))
        if baseline is not None and self.restart_count > baseline.restart_count:
            out.append(("restarted", f"{self.name} restarted {self.restart_count - baseline.restart_count} time(s) "
                                     "during the test"))
        elif baseline is not None and baseline.started_at and self.started_at and self.started_at != baseline.started_at:
            out.append(("restarted", f"{self.name} was restarted (started at {self.started_at}, was "
                                     f"{baseline.started_at})"))
        return out


class _TrackedSsh:
    """What docker-py sees as its SSH client: our connection, with every channel docker-py opens on it
    remembered. paramiko waits for the reply to ``exec docker system dial-stdio`` with no timeout, so a guest
    that stops answering would hang a docker call for good; closing these channels ends every such wait.
    docker-py closes "its" client when it is done: ours belongs to SshDriver and stays open."""

    def __init__(self, client, open_timeout: float) -> None:
        self._client = client
        self.open_timeout = open_timeout
        self.channels: "weakref.WeakSet[Any]" = weakref.WeakSet()

    def get_transport(self):
        transport = self._client.get_transport() if self._client is not None else None
        return None if transport is None else _TrackedTransport(transport, self)

    def connect(self, **_: Any) -> None:  # docker-py reconnects a client whose transport is gone
        raise DockerDriverError("the SSH connection to the guest is closed", phase="stack")

    def close(self) -> None:
        pass

    def close_channels(self) -> None:
        for channel in list(self.channels):
            try:
                channel.close()
            except Exception:  # noqa: BLE001 - already closed
                pass


class _TrackedTransport:
    def __init__(self, transport, owner: _TrackedSsh) -> None:
        self._transport = transport
        self._owner = owner

    def open_session(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("timeout", self._owner.open_timeout)  # paramiko's own default is an hour
        channel = self._transport.open_session(*args, **kwargs)
        self._owner.channels.add(channel)
        return channel

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _docker_client_over(ssh_client) -> docker.DockerClient:
    """A DockerClient whose connections are `docker system dial-stdio` channels on ``ssh_client``."""
    api = docker.APIClient(base_url="ssh://guest", version=API_VERSION, use_ssh_client=True, timeout=30)
    adapter = api.adapters.get("http+docker://ssh")
    if not isinstance(adapter, SSHHTTPAdapter):
        raise DockerDriverError("docker-py has no SSH adapter mounted; unsupported docker-py version?")
    adapter.ssh_client = ssh_client  # docker-py's paramiko path, fed with our connection
    client = docker.DockerClient.__new__(docker.DockerClient)
    client.api = api
    return client


# -- docker-py calls on any DockerClient (over SSH here; tests/test_real_docker.py runs them against a
#    real engine on a unix socket) -------------------------------------------------------------------


def engine_ping(client: docker.DockerClient) -> bool:
    try:
        return bool(client.ping())
    except docker.errors.DockerException as exc:
        raise DockerDriverError(f"the guest's Docker engine does not answer over SSH: {exc}", phase="stack") from None


def find_service_container(client: docker.DockerClient, service: str) -> str:
    """The name of the (first) container of a compose service, by its compose label."""
    try:
        found = client.containers.list(all=True, filters={"label": f"com.docker.compose.service={service}"})
    except docker.errors.DockerException as exc:
        raise DockerDriverError(f"listing containers failed: {exc}", phase="stack") from None
    if not found:
        raise DockerDriverError(f"no container for compose service {service!r}", phase="stack", cause="no_sandbox",
                                hint="is COMPOSE_PROFILES=code-macos set for ./stack start?")
    return found[0].name


def container_state(client: docker.DockerClient, name: str) -> ContainerState:
    try:
        data = client.api.inspect_container(name)
    except docker.errors.NotFound:
        raise DockerDriverError(f"container {name} does not exist") from None
    except docker.errors.DockerException as exc:
        raise DockerDriverError(f"inspecting {name} failed: {exc}") from None
    return ContainerState.from_inspect(data)


def container_logs(client: docker.DockerClient, name: str, since: float | None = None) -> str:
    """stdout+stderr of a container; ``since`` (Unix seconds) keeps its sub-second part: docker-py
    sends a float as is, while a datetime would be cut to whole seconds (up to 1 s of older lines)."""
    try:
        data = client.api.logs(name, stdout=True, stderr=True, since=float(since) if since else None,
                               timestamps=False)
    except docker.errors.DockerException as exc:
        raise DockerDriverError(f"reading logs of {name} failed: {exc}") from None
    return data.decode("utf-8", "replace")


class DockerDriver:
    #: Seconds a call to the guest's engine may take before its channels are closed (the guest stopped answering).
    CALL_TIMEOUT = 60.0

    def __init__(self, ssh_client, runner: CommandRunner, guest: GuestConfig, *, call_timeout: float = CALL_TIMEOUT
                 ) -> None:
        self.guest = guest
        self.runner = runner
        self.call_timeout = call_timeout
        # A channel that cannot even open ends just after the call's own deadline (the timer cannot reach it).
        self._ssh = _TrackedSsh(ssh_client, open_timeout=call_timeout + 1.0)
        self.client = _docker_client_over(self._ssh)

    def close(self) -> None:
        """Close docker-py's channels (each a `docker system dial-stdio` in the guest), not our SSH
        connection (the client docker-py was handed never closes the real one)."""
        try:
            self.client.api.close()
        except Exception:  # noqa: BLE001 - closing twice is fine
            pass
        self._ssh.close_channels()

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, phase: str = "desktop") -> Any:
        """``fn(client, *args)``, ended at :attr:`call_timeout` by closing docker-py's channels."""
        fired = threading.Event()

        def give_up() -> None:
            fired.set()
            self._ssh.close_channels()

        timer = threading.Timer(self.call_timeout, give_up)
        timer.daemon = True
        timer.start()
        try:
            return fn(self.client, *args)
        except Exception as exc:
            if fired.is_set():
                raise DockerDriverError(f"{what}: the guest's Docker engine did not answer within "
                                        f"{self.call_timeout:.0f}s over SSH", phase=phase,
                                        hint="is the VM frozen or out of memory? read QEMU's log") from None
            if isinstance(exc, HarnessError):
                raise
            raise DockerDriverError(f"{what}: {type(exc).__name__}: {exc}", phase=phase) from None
        finally:
            timer.cancel()

    # -- the guest's own engine (sandbox container) ----------------------------------
    def ping(self) -> bool:
        return self._call("docker ping", engine_ping, phase="stack")

    def find_service_container(self, service: str) -> str:
        return self._call(f"finding the {service} container", find_service_container, service, phase="stack")

    def state(self, name: str) -> ContainerState:
        return self._call(f"inspecting {name}", container_state, name)

    def logs(self, name: str, since: float | None = None) -> str:
        return self._call(f"reading the logs of {name}", container_logs, name, since)

    # -- the desktop container, inside the sandbox -----------------------------------
    def _in_sandbox(self, docker_args: str, *, timeout: float, check: bool = True):
        cmd = (
            f"{self.guest.cd_helix} && docker compose -f {shlex.quote(self.guest.compose_file)} exec -T "
            f"{shlex.quote(self.guest.sandbox_service)} docker {docker_args}"
        )
        return self.runner.run(cmd, timeout=timeout, phase="desktop", check=check)

    def desktop_state(self, container: str, *, timeout: float = 30) -> ContainerState:
        res = self._in_sandbox(f"inspect {shlex.quote(container)}", timeout=timeout, check=False)
        if not res.ok:
            raise DockerDriverError(
                f"desktop container {container} not found in the sandbox: {res.stderr.strip()[:300]}",
                hint="the session's container may have exited; see the sandbox logs",
            )
        try:
            data = json.loads(res.stdout)
            return ContainerState.from_inspect(data[0] if isinstance(data, list) else data)
        except (ValueError, IndexError, KeyError, TypeError) as exc:
            raise DockerDriverError(f"cannot read `docker inspect {container}` output: {exc}") from None

    def desktop_logs(self, container: str, since: float | None = None, *, timeout: float = 60) -> str:
        since_arg = f"--since {int(since)} " if since else ""
        res = self._in_sandbox(f"logs {since_arg}{shlex.quote(container)}", timeout=timeout, check=False)
        if not res.ok:
            raise DockerDriverError(f"reading logs of {container} failed: {res.stderr.strip()[:300]}")
        return res.stdout + res.stderr
