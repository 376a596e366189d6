"""In-process fake drivers that record their calls (labgrid's ``driver/fake.py`` in spirit).

They implement the methods the strategy calls, append ``"<driver>.<method>"`` to one shared list,
and raise whatever ``fail`` maps that name to. A real :class:`~harness.drivers.wiring.Drivers` set
wires them, so the strategy under test is the real one, layer activation included.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

from harness.config import TargetConfig, VmConfig
from harness.drivers.base import VmProvider
from harness.drivers.capture import CaptureResult
from harness.drivers.docker import ContainerState
from harness.drivers.frame_export import ProbeResult
from harness.drivers.helix_cli import BackgroundStream, StartedSession
from harness.drivers.host import HostSnapshot
from harness.drivers.wiring import Drivers

CREDS = ("HELIX_API_KEY=hl-fake-key\nHELIX_URL=http://localhost:8080\nHELIX_PROJECT=prj_fake\n"
         "HELIX_UBUNTU_AGENT=app_fake\n")


class Calls:
    def __init__(self, fail: dict[str, BaseException] | None = None) -> None:
        self.log: list[str] = []
        self.fail = dict(fail or {})

    def __call__(self, name: str) -> None:
        self.log.append(name)
        exc = self.fail.get(name)
        if exc is not None:
            raise exc

    def clear(self) -> None:
        self.log.clear()


class _Fake:
    prefix = "fake"

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def _rec(self, method: str) -> None:
        self.calls(f"{self.prefix}.{method}")


class FakeVm(_Fake, VmProvider):
    prefix = "vm"
    name = "fake"

    def __init__(self, calls: Calls) -> None:
        super().__init__(calls)
        self.state = "stopped"

    def status(self) -> str:
        self._rec("status")
        return self.state

    def version(self) -> str:
        self._rec("version")
        return "fake 1.0"

    def power_on(self, *, timeout, on_wait=None) -> None:
        self._rec("power_on")
        self.state = "started"

    def power_off(self, *, timeout, phase, on_wait=None) -> None:
        self._rec("power_off")
        self.state = "stopped"

    def is_running(self, status: str) -> bool:
        return status == "started"


class FakeHost(_Fake):
    prefix = "host"

    def snapshot(self) -> HostSnapshot:
        self._rec("snapshot")
        return HostSnapshot(crash_reports={}, log_size=0)

    def new_crash_reports(self, since):
        self._rec("new_crash_reports")
        return []

    def new_log_bytes(self, since, limit: int = 0) -> bytes:
        self._rec("new_log_bytes")
        return b""

    def describe(self) -> dict[str, str]:
        self._rec("describe")
        return {"host": "fake-os", "host_model": "fake-model"}


class FakeSsh(_Fake):
    prefix = "ssh"

    def __init__(self, calls: Calls) -> None:
        super().__init__(calls)
        self.connected = False
        self.forwards: list = []
        self.client = object()

    def connect(self, timeout, on_wait=None) -> None:
        self._rec("connect")
        self.connected = True

    def ping(self, timeout: float = 5.0) -> bool:
        self._rec("ping")
        return self.connected

    def close(self) -> None:
        self._rec("close")
        self.connected = False

    def forward(self, remote_port: int):
        self._rec("forward")
        fwd = SimpleNamespace(url="http://127.0.0.1:1", close=lambda: None)
        self.forwards.append(fwd)
        return fwd

    def get(self, remote, local, *, phase) -> None:
        self._rec("get")
        Path(local).write_bytes(b"\x00\x00\x00\x01\x67")


class FakeStack(_Fake):
    prefix = "stack"
    guest = None
    label = "./stack start, the API and an online sandbox"

    def start(self, *, timeout, on_stage=None) -> str:
        self._rec("start")
        return "stack started\n"

    def read_usercreds(self, *, timeout: float = 20) -> str:
        self._rec("read_usercreds")
        return CREDS

    def git_sha(self, *, timeout: float = 20) -> str:
        self._rec("git_sha")
        return "a" * 40


class FakeCli(_Fake):
    prefix = "cli"
    available = True
    unavailable_reason = ""
    build_label = "building the helix CLI"
    start_label = "helix spectask start --wait"

    def ensure_built(self, git_sha, *, timeout) -> bool:
        self._rec("ensure_built")
        return True

    def start_session(self, project, name, *, timeout, agent="") -> StartedSession:
        self._rec("start_session")
        return StartedSession("ses_fake", 1000.0, 0.5)

    @contextmanager
    def background_stream(self, session_id, *, duration, timeout, local, deadline, transfer=None):
        self._rec("background_stream")
        yield BackgroundStream(remote="/tmp/x.h264", error="fake: no CLI stream")


def _state(name: str) -> ContainerState:
    return ContainerState(name=name, status="running", running=True, restarting=False, oom_killed=False, exit_code=0,
                          restart_count=0, started_at="2026-12-02T00:00:00Z")


class FakeApi(_Fake):
    prefix = "api"
    auth_headers = {"Authorization": "Bearer hl-fake-key"}

    def wait_up(self, *, timeout, on_wait=None) -> int:
        self._rec("wait_up")
        return 200

    def wait_sandbox(self, *, timeout, on_wait=None) -> dict:
        self._rec("wait_sandbox")
        return {"id": "sb", "status": "online", "desktop_versions": {"ubuntu": "1"}}

    def wait_container(self, session_id, *, timeout) -> tuple[str, str]:
        self._rec("wait_container")
        return "cid", "ubuntu-external-fake"

    def start_vkcube(self, session_id):
        self._rec("start_vkcube")
        return SimpleNamespace(pid=4242)

    def wait_vkcube(self, session_id, *, timeout, pid=0) -> bool:
        self._rec("wait_vkcube")
        return True

    def vkcube_state(self, session_id, pid=0) -> str:
        self._rec("vkcube_state")
        return "running"

    def task_failure(self, task_id):
        self._rec("task_failure")
        return None

    def stop_vkcube(self, session_id) -> None:
        self._rec("stop_vkcube")

    def stop_session(self, session_id) -> None:
        self._rec("stop_session")

    def stream_url(self, session_id) -> str:
        return f"ws://127.0.0.1:1/api/v1/external-agents/{session_id}/ws/stream"

    def close(self) -> None:
        self._rec("close")


class FakeDocker(_Fake):
    prefix = "docker"

    def find_service_container(self, service: str) -> str:
        self._rec("find_service_container")
        return "helix-sandbox-macos-1"

    def state(self, name: str) -> ContainerState:
        self._rec("state")
        return _state(name)

    def desktop_state(self, name: str) -> ContainerState:
        self._rec("desktop_state")
        return _state(name)

    def desktop_logs(self, name: str, since=None) -> str:
        self._rec("desktop_logs")
        return ""

    def close(self) -> None:
        self._rec("close")


class FakeCapture(_Fake):
    prefix = "capture"

    def capture(self, url, headers, init, *, duration, out_dir, name="stream", on_progress=None,
                analysis="live") -> CaptureResult:
        self._rec("capture")
        return CaptureResult(url=url, recording="", h264="", end="duration", analysis=analysis)


class FakeFrameExport(_Fake):
    prefix = "frame_export"

    def probe_resource_id_zero(self) -> ProbeResult:
        self._rec("probe_resource_id_zero")
        return ProbeResult(verdict="rejected", host="127.0.0.1", port=1, error_code=-2, message="resource not found")


def fake_drivers(calls: Calls) -> Drivers:
    api, docker = FakeApi(calls), FakeDocker(calls)
    return Drivers(host=FakeHost(calls), vm=FakeVm(calls), ssh=FakeSsh(calls), stack=FakeStack(calls),
                   cli=FakeCli(calls), frame_export=FakeFrameExport(calls), capture=FakeCapture(calls),
                   make_api=lambda url, token: api, make_docker=lambda ssh: docker)


def fake_target() -> TargetConfig:
    return TargetConfig(vm=VmConfig(id="VM"))
