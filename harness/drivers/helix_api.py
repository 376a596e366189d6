"""The Helix REST API, with the real paths and field names (helix-stream.md §2, §6; macos-frame-export.md §8)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from ..deadline import Deadline, poll_until
from ..errors import HarnessError, PhaseTimeout
from ..protocols.procfs import proc_state
from ..redact import redact, register

log = logging.getLogger(__name__)

#: The error upstream records on a task that no agent can run (spec_driven_task_service.go).
NO_AGENT_ERROR = "no agent configured"
#: vkcube as Helix's own `spectask benchmark` launches it (benchmark_cmd.go startVkcube).
VKCUBE_COMMAND = ["vkcube", "--wsi", "wayland", "--present_mode", "1"]
VKCUBE_ENV = {"WAYLAND_DISPLAY": "wayland-0", "XDG_RUNTIME_DIR": "/run/user/1000"}


class HelixApiError(HarnessError):
    default_phase = "api"

    def __init__(self, message: str, *, status: int | None = None, body: str = "", **kw) -> None:
        super().__init__(message, **kw)
        self.status = status
        self.body = body


@dataclass(frozen=True)
class ExecResult:
    success: bool
    output: str
    error: str
    exit_code: int
    pid: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ExecResult":
        return cls(
            success=bool(data.get("success")),
            output=str(data.get("output") or ""),
            error=str(data.get("error") or ""),
            exit_code=int(data.get("exit_code") or 0),
            pid=int(data.get("pid") or 0),
        )


class HelixApi:
    def __init__(self, base_url: str, token: str, *, timeout: float = 15.0) -> None:
        register(token)
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"
        self._token = token

    def close(self) -> None:
        self._session.close()

    @property
    def ws_base(self) -> str:
        return self.base_url.replace("https://", "wss://").replace("http://", "ws://")

    def stream_url(self, session_id: str) -> str:
        return f"{self.ws_base}/api/v1/external-agents/{quote(session_id, safe='')}/ws/stream"

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    def _request(self, method: str, path: str, *, phase: str, timeout: float | None = None, **kw) -> requests.Response:
        url = self.base_url + path
        try:
            return self._session.request(method, url, timeout=timeout or self.timeout, **kw)
        except requests.RequestException as exc:
            raise HelixApiError(f"{method} {path} failed: {redact(str(exc))}", phase=phase) from None

    def _json(self, method: str, path: str, *, phase: str, ok=(200,), **kw) -> Any:
        resp = self._request(method, path, phase=phase, **kw)
        if resp.status_code not in ok:
            body = redact(resp.text[:500])
            raise HelixApiError(
                f"{method} {path} answered {resp.status_code}: {body.strip()}", status=resp.status_code, body=body, phase=phase
            )
        try:
            return resp.json()
        except ValueError:
            raise HelixApiError(
                f"{method} {path} answered {resp.status_code} with non-JSON: {redact(resp.text[:200])!r}", phase=phase
            ) from None

    # -- readiness -------------------------------------------------------------------
    def status_code(self, *, timeout: float = 5.0) -> int:
        """GET /api/v1/status; any status below 500 means the API process is up (401 included)."""
        return self._request("GET", "/api/v1/status", phase="stack", timeout=timeout).status_code

    def sandboxes(self, *, timeout: float = 5.0) -> list[dict[str, Any]]:
        data = self._json("GET", "/api/v1/sandboxes", phase="stack", timeout=timeout)
        if not isinstance(data, list):
            raise HelixApiError(f"/api/v1/sandboxes returned {type(data).__name__}, not a list", phase="stack")
        return data

    @staticmethod
    def ready_sandbox(sandboxes: list[dict[str, Any]]) -> dict[str, Any] | None:
        for sb in sandboxes:
            if isinstance(sb, dict) and sb.get("status") == "online" and sb.get("desktop_versions"):
                return sb
        return None

    def wait_up(self, *, timeout: float, on_wait=None) -> int:
        """Poll GET /api/v1/status until it answers below 500. A timeout after 5xx answers is ``api_5xx``
        (the API runs but fails), after no answer at all ``api_unreachable``."""
        deadline = Deadline(timeout)
        seen: list[int] = []

        def api_up() -> int | None:  # each request ends by the deadline (a frozen API must not outlast it)
            code = self.status_code(timeout=min(5.0, max(0.5, deadline.remaining)))
            if not seen or seen[-1] != code:
                seen.append(code)
            return code if code < 500 else None

        try:
            return poll_until(api_up, timeout=timeout, what="the Helix API (GET /api/v1/status < 500)", phase="api",
                              on_wait=(lambda e: on_wait(f"API not up yet ({e:.0f}s)")) if on_wait else None,
                              cause="api_unreachable")
        except PhaseTimeout as exc:
            if not seen:
                raise
            answers = " → ".join(str(c) for c in seen)
            raise PhaseTimeout(
                f"GET /api/v1/status kept answering {seen[-1]} for {deadline.elapsed:.0f}s (answers: {answers})",
                phase="api", cause="api_5xx" if seen[-1] >= 500 else "api_unreachable",
                hint="the API container runs but answers 5xx: read `docker compose logs api` in the guest",
            ) from exc

    def wait_sandbox(self, *, timeout: float, on_wait=None) -> dict[str, Any]:
        """Poll GET /api/v1/sandboxes until one is online with desktop_versions (``no_sandbox`` otherwise)."""
        deadline = Deadline(timeout)
        return poll_until(lambda: self.ready_sandbox(self.sandboxes(timeout=min(5.0, max(0.5, deadline.remaining)))),
                          timeout=timeout,
                          what="a sandbox reporting desktop_versions", phase="stack", cause="no_sandbox",
                          on_wait=(lambda e: on_wait(f"no online sandbox yet ({e:.0f}s)")) if on_wait else None,
                          hint="COMPOSE_PROFILES=code-macos must be set so the sandbox-macos service runs")

    def wait_container(self, session_id: str, *, timeout: float) -> tuple[str, str]:
        """Poll the session until it names its desktop container: (id, name). ``no_container`` otherwise."""
        def lookup() -> tuple[str, str] | None:
            cid, cname = self.container_of(self.session(session_id))
            return (cid, cname) if cid else None

        return poll_until(lookup, timeout=timeout, what="the session's dev_container_id", phase="session",
                          cause="no_container",
                          hint="the sandbox never started the session's desktop container: read the sandbox's logs")

    # -- spec tasks (what `helix spectask start --wait` does over REST: api/pkg/cli/spectask/spectask.go
    #    createSpecTask, triggerStartPlanning, waitForTaskSession) ------------------------------------
    def start_spec_task(self, project: str, name: str, prompt: str, *, timeout: float) -> tuple[str, str]:
        """``POST /api/v1/spec-tasks/from-prompt`` then ``POST …/{id}/start-planning``, then poll
        ``GET /api/v1/spec-tasks/{id}`` until it names its ``planning_session_id``: (task id, session id)."""
        deadline = Deadline(timeout)
        task = self._json("POST", "/api/v1/spec-tasks/from-prompt", phase="session", ok=(200, 201),
                          json={"name": name, "prompt": prompt, "project_id": project},
                          timeout=min(30.0, max(0.5, deadline.remaining)))
        task_id = str((task or {}).get("id") or "") if isinstance(task, dict) else ""
        if not task_id:
            raise HelixApiError(f"POST /api/v1/spec-tasks/from-prompt returned no task id: {str(task)[:200]}",
                                phase="session", cause="no_session_id")
        self._json("POST", f"/api/v1/spec-tasks/{quote(task_id, safe='')}/start-planning", phase="session",
                   ok=(200, 201), timeout=min(30.0, max(0.5, deadline.remaining)))

        def planning_session() -> str | None:
            data = self._json("GET", f"/api/v1/spec-tasks/{quote(task_id, safe='')}", phase="session",
                              timeout=min(10.0, max(0.5, deadline.remaining)))
            sid = data.get("planning_session_id") if isinstance(data, dict) else None
            return str(sid) if sid else None

        session_id = poll_until(planning_session, timeout=deadline.remaining, what=f"spec task {task_id}'s "
                                "planning_session_id", phase="session", cause="session_start_timeout",
                                hint="the API never started the task's planning session: read the API's logs")
        return task_id, session_id

    # -- sessions --------------------------------------------------------------------
    def session(self, session_id: str) -> dict[str, Any]:
        return self._json("GET", f"/api/v1/sessions/{session_id}?skipInteractions=1", phase="session")

    def container_of(self, session: dict[str, Any]) -> tuple[str, str]:
        """(container id, container name) from a types.Session (metadata lives under ``config``)."""
        cfg = session.get("config") or {}
        cid = cfg.get("dev_container_id") or cfg.get("container_id") or ""
        return cid, cfg.get("container_name") or ""

    def spec_task(self, task_id: str) -> dict[str, Any]:
        """GET /api/v1/spec-tasks/{id} (types.SpecTask: ``status``, ``metadata.error`` when it failed)."""
        data = self._json("GET", f"/api/v1/spec-tasks/{quote(task_id, safe='')}", phase="session")
        if not isinstance(data, dict):
            raise HelixApiError(f"/api/v1/spec-tasks/{task_id} returned {type(data).__name__}, not an object",
                                phase="session")
        return data

    def task_failure(self, task_id: str) -> HelixApiError | None:
        """Why a task that got no session failed, from its status on the API (``None``: it did not fail;
        it is still provisioning). Upstream marks a failed task by ``metadata.error``
        (``SpecDrivenTaskService.markTaskFailedWithCause``), e.g. ``no agent configured - set DefaultHelixAppID
        on project`` when neither the request nor the project names an agent."""
        task = self.spec_task(task_id)
        metadata = task.get("metadata") if isinstance(task.get("metadata"), dict) else {}
        error = str(metadata.get("error") or "").strip()
        if not error:
            return None
        cause = "no_agent" if NO_AGENT_ERROR in error else "task_failed"
        return HelixApiError(f"spec task {task_id} failed (status {task.get('status')!r}): {redact(error)[:300]}",
                             phase="session", cause=cause)

    def stop_session(self, session_id: str) -> None:
        self._json("DELETE", f"/api/v1/sessions/{session_id}/stop-external-agent", phase="teardown", timeout=30)

    def screenshot(self, session_id: str) -> tuple[bytes, str]:
        resp = self._request("GET", f"/api/v1/external-agents/{session_id}/screenshot", phase="session", timeout=15)
        if resp.status_code != 200:
            raise HelixApiError(f"screenshot answered {resp.status_code}", status=resp.status_code, phase="session")
        return resp.content, resp.headers.get("Content-Type", "")

    def exec(
        self,
        session_id: str,
        command: list[str],
        *,
        background: bool = False,
        env: dict[str, str] | None = None,
        timeout: int = 30,
        phase: str = "desktop",
    ) -> ExecResult:
        body: dict[str, Any] = {"command": command, "background": background, "timeout": timeout}
        if env:
            body["env"] = env
        resp = self._request(
            "POST", f"/api/v1/external-agents/{session_id}/exec", phase=phase, json=body, timeout=timeout + 10
        )
        if resp.status_code != 200:
            text = redact(resp.text.strip()[:300])
            raise HelixApiError(
                f"exec {command[0]} answered {resp.status_code}: {text}",
                status=resp.status_code,
                body=text,
                phase=phase,
                hint="the desktop's exec allowlist refused it" if resp.status_code == 403 else None,
            )
        try:
            return ExecResult.from_json(resp.json())
        except (ValueError, TypeError) as exc:
            raise HelixApiError(f"exec answered malformed JSON: {exc}", phase=phase) from None

    # -- vkcube ----------------------------------------------------------------------
    def start_vkcube(self, session_id: str) -> ExecResult:
        result = self.exec(session_id, VKCUBE_COMMAND, background=True, env=VKCUBE_ENV)
        if not result.success:
            raise HelixApiError(f"starting vkcube failed: {result.error or result.output}", phase="desktop")
        return result

    def vkcube_running(self, session_id: str, pid: int = 0) -> bool:
        """`pkill -0 -f vkcube` exits 0, and (when its pid is known) vkcube is not a zombie."""
        return self.vkcube_state(session_id, pid) == "running"

    def vkcube_state(self, session_id: str, pid: int = 0) -> str:
        """``running``, ``gone`` (`pkill -0 -f vkcube` finds none) or ``zombie``. Upstream's background exec
        starts vkcube and never waits for it, so a vkcube that crashed stays a zombie that `pkill -0` still
        matches: its state is read from ``/proc/<pid>/stat`` (``cat`` is on the exec allowlist)."""
        if self.exec(session_id, ["pkill", "-0", "-f", "vkcube"]).exit_code != 0:
            return "gone"
        if pid > 0:
            stat = self.exec(session_id, ["cat", f"/proc/{pid}/stat"])
            if stat.exit_code != 0:
                return "gone"  # our vkcube is gone; what pkill found is some other process
            if proc_state(stat.output) == "Z":
                return "zombie"
        return "running"

    def wait_vkcube(self, session_id: str, *, timeout: float, pid: int = 0) -> bool:
        """Whether vkcube shows up within ``timeout`` after launching it (False: launched, then gone)."""
        try:
            return bool(poll_until(lambda: self.vkcube_running(session_id, pid), timeout=timeout,
                                   what="vkcube (pkill -0 -f vkcube)", phase="desktop"))
        except PhaseTimeout:
            return False

    def stop_vkcube(self, session_id: str) -> None:
        self.exec(session_id, ["pkill", "-f", "vkcube"], phase="teardown")  # exit code ignored, as Helix does
