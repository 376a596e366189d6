"""The Helix API server (:class:`HelixApiServer`): REST for spec tasks, sessions, sandboxes, exec and
screenshots, the session's provisioning, and the route to the WebSocket stream (:mod:`.stream`).

Shapes, status codes and texts follow ``shared/reference/helix-stream.md`` §0–§4,
``macos-frame-export.md`` §8 and ``upstream-corrections.md``. Auth as ``getRequestToken``:
``Authorization: Bearer``, ``x-api-key``, ``api-key``, cookie ``access_token``, query ``?access_token=`` (the
first one present counts). Valid: ``SimConfig.api_key`` and the runner token. A raw ``503 Sandbox not
connected`` when the desktop is unreachable (or fault ``ws_503``).

Spec tasks as upstream runs them: ``start-planning`` answers the task ``queued_spec_generation``; the
orchestrator then starts spec generation (status ``spec_generation``, a planning session) or, with no agent
(no request ``app_id`` and no project ``DefaultHelixAppID``), marks it failed: status ``backlog``,
``metadata.error`` = ``no agent configured - set DefaultHelixAppID on project``. Faults ``api_5xx``,
``no_container`` and ``no_agent`` (the project has no default agent) live here.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import time
from typing import Any, Awaitable, Callable

from aiohttp import web

from ...config import SimConfig
from ...desktop import Desktop, DesktopUnavailable
from ...errors import SimError
from ...gofmt import rfc3339_seconds
from .models import (
    DESKTOP_IMAGE,
    HELIX_VERSION,
    RUNNER_TOKEN,
    SANDBOX_CONTAINER,
    SANDBOX_ID,
    NO_AGENT_ERROR,
    RUNTIME_DESKTOP,
    RUNTIME_HEADLESS,
    STATUS_READY,
    STATUS_STARTING,
    STATUS_WAITING,
    TASK_QUEUED_SPEC_GENERATION,
    TASK_SPEC_GENERATION,
    ApiError,
    Session,
    SpecTask,
    User,
    new_id,
    new_ulid,
)
from .stream import Canary, StreamClient

log = logging.getLogger("helix_sim.api")

#: slow_after_running: each successive session's fps is multiplied by this (its start delay divided).
SLOWDOWN = 0.7
RAW_503 = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\nSandbox not connected"
#: proxyStreamWebSocket when the desktop answers the upgrade with a status (desktop.go handleWSStream: 503 "Video
#: streaming not available - no screen capture session" on a desktop without PipeWire, e.g. a headless runtime).
RAW_DESKTOP_503 = b"HTTP/1.1 503 503 Service Unavailable\r\n\r\n"


def _text(status: int, message: str) -> web.Response:
    """Go's http.Error: text/plain, the message and a newline."""
    resp = web.Response(status=status, text=message + "\n", content_type="text/plain")
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, separators=(",", ":")) + "\n")


# --------------------------------------------------------------------------- the API


class HelixApiServer:
    """The Helix API of the sim: ``await start(port)`` → http://127.0.0.1:<port>, ``await stop()``."""

    def __init__(self, config: SimConfig, engine: Any, qemu: Any, host: Any) -> None:
        self.config = config
        self.engine = engine
        self.qemu = qemu
        self.host = host
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: dict[str, SpecTask] = {}
        self._sessions: dict[str, Session] = {}
        self._streams: set[StreamClient] = set()
        self._by_client_id: dict[tuple[str, str], StreamClient] = {}
        self._bg: set[asyncio.Task[Any]] = set()
        self._canary = Canary()
        self._sandbox_online_at: float | None = None
        self._sandbox_created = time.time()
        self._sessions_started = 0
        self._stream_numbers = 0
        self._users = {
            config.api_key: User(f"usr_{new_ulid()}", "sim-user", admin=True),
            RUNNER_TOKEN: User("runner", "runner", admin=True, runner=True),
        }
        self.desktop_hash = hashlib.sha256(f"helix-ubuntu-{config.seed}".encode()).hexdigest()[:12]

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise ApiError("the API is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self, port: int | None = None) -> int:
        """Listen on 127.0.0.1:<port> (0/None: a free port). Returns the port. A fresh boot: not slow."""
        if self._runner is not None:
            assert self.port is not None
            return self.port
        self._sessions_started = 0
        app = web.Application(middlewares=[self._errors_middleware], client_max_size=8 * 1024 * 1024)
        r = app.router
        r.add_get("/api/v1/config", self._config)
        r.add_get("/api/v1/health", self._health)
        r.add_get("/api/v1/status", self._status)
        r.add_get("/api/v1/sandboxes", self._sandboxes)
        r.add_post("/api/v1/spec-tasks/from-prompt", self._from_prompt)
        r.add_post("/api/v1/spec-tasks/{id}/start-planning", self._start_planning)
        r.add_get("/api/v1/spec-tasks/{id}", self._get_task)
        r.add_get("/api/v1/sessions", self._list_sessions)
        r.add_get("/api/v1/sessions/{id}", self._get_session)
        r.add_delete("/api/v1/sessions/{id}/stop-external-agent", self._stop_agent)
        r.add_post("/api/v1/sessions/{id}/resume", self._resume)
        r.add_get("/api/v1/external-agents/{id}/screenshot", self._screenshot)
        r.add_post("/api/v1/external-agents/{id}/exec", self._exec)
        r.add_get("/api/v1/external-agents/{id}/ws/stream", self._ws_stream)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port or 0, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ApiError(f"the sim API could not listen on 127.0.0.1:{port}: {exc.strerror or exc}",
                           hint="another process holds the port") from exc
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        self._spawn(self._canary.run())
        if self._sandbox_online_at is not None:  # an API restart: the sandbox registers again
            self._sandbox_online_at = time.monotonic()
        for sess in self._sessions.values():
            self._revive(sess)
        log.info("helix api listening on 127.0.0.1:%d", self.port)
        return self.port

    async def stop(self) -> None:
        """Close every WS (TCP close), stop every desktop pipeline and its thread, close the server. Idempotent."""
        runner, self._runner = self._runner, None
        for client in list(self._streams):
            client.abort("API stopped")
        current = asyncio.current_task()
        tasks = [t for t in self._bg if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for sess in list(self._sessions.values()):
            if sess.desktop is not None:
                await sess.desktop.shutdown("API stopped")
        if runner is not None:
            await runner.cleanup()
        self._streams.clear()
        self._by_client_id.clear()
        log.info("helix api stopped")

    def _revive(self, sess: Session) -> None:
        """After an API restart: desktops whose containers still run are reachable again;
        the others are gone; provisioning that the stop interrupted starts over."""
        if sess.stopped:
            return
        if sess.desktop is not None:
            container = sess.container
            current = self.engine.get(container.id) if container is not None else None
            if current is container and getattr(container, "running", False):
                sess.desktop.resume()
                return
            sess.desktop = None
            sess.container = None
            sess.agent_status = "stopped"
            self._set_status(sess, "")
            return
        if sess.container is None:
            sess.provision = self._spawn(self._provision(sess))

    def sandbox_online(self) -> None:
        """The sandbox-macos container started: it reports ``desktop_versions`` after ``sandbox_delay_s``."""
        if self._sandbox_online_at is None:
            self._sandbox_online_at = time.monotonic()
            self._sandbox_created = time.time()
            log.info("sandbox %s online (desktop versions in %.1fs)", SANDBOX_ID, self.config.delay(self.config.sandbox_delay_s))

    def sandbox_offline(self) -> None:
        self._sandbox_online_at = None

    @property
    def sandbox_ready(self) -> bool:
        at = self._sandbox_online_at
        return at is not None and time.monotonic() >= at + self.config.delay(self.config.sandbox_delay_s)

    def desktops(self) -> list[Desktop]:
        return [s.desktop for s in self._sessions.values() if s.desktop is not None]

    def session_desktop(self, session_id: str) -> Desktop | None:
        sess = self._sessions.get(session_id)
        return sess.desktop if sess is not None else None

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)
        return task

    # -- plumbing -------------------------------------------------------------------------

    @web.middleware
    async def _errors_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return _text(404, "404 page not found")
        except web.HTTPMethodNotAllowed:
            return _text(405, "405 method not allowed")
        except web.HTTPException:
            raise
        except DesktopUnavailable as exc:
            return _text(503, f"Sandbox not connected: {exc.message}")
        except SimError as exc:
            log.warning("%s %s failed: %s", request.method, request.path, exc)
            return _text(500, exc.message)

    def _token(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth[len("Bearer "):].strip()
            if token:
                return token
        for header in ("x-api-key", "api-key"):
            value = request.headers.get(header, "").strip()
            if value:
                return value
        cookie = request.cookies.get("access_token")
        if cookie:
            return cookie
        query = request.query.get("access_token")
        return query or None

    def _user(self, request: web.Request) -> User | None:
        token = self._token(request)
        if not token:
            return None
        for known, user in self._users.items():
            if hmac.compare_digest(token.encode(), known.encode()):
                return user
        return None

    def _session_or_404(self, request: web.Request, message: str) -> Session | web.Response:
        sess = self._sessions.get(request.match_info["id"])
        if sess is None:
            return _text(404, message)
        return sess

    def _viewers_of(self, session_id: str) -> list[StreamClient]:
        return [c for c in self._streams if c.session.id == session_id and c.streaming]

    def _forget(self, client: StreamClient) -> None:
        self._streams.discard(client)
        if client.client_id is not None and self._by_client_id.get((client.session.id, client.client_id)) is client:
            del self._by_client_id[(client.session.id, client.client_id)]

    # -- unauthenticated --------------------------------------------------------------------

    async def _config(self, request: web.Request) -> web.Response:
        return _json({
            "filestore_prefix": "dev",
            "stripe_enabled": False,
            "sentry_dsn_frontend": "",
            "google_analytics_frontend": "",
            "eval_user_id": "",
            "tools_enabled": True,
            "apps_enabled": True,
            "version": HELIX_VERSION,
            "latest_version": HELIX_VERSION,
            "deployment_id": "sim",
            "license": None,
            "organizations_create_enabled_for_non_admins": True,
        })

    async def _health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    # -- readiness ------------------------------------------------------------------------

    async def _status(self, request: web.Request) -> web.Response:
        if "api_5xx" in self.config.faults:
            return _text(502, "502 Bad Gateway")
        user = self._user(request)
        if user is None:
            return _text(401, "unauthorized")
        return _json({
            "admin": user.admin,
            "user": user.id,
            "slug": user.name,
            "config": {"stripe_subscription_active": False, "stripe_customer_id": ""},
        })

    async def _sandboxes(self, request: web.Request) -> web.Response:
        if self._user(request) is None:
            return _text(401, "unauthorized")
        if self._sandbox_online_at is None:
            return _json([])
        now = time.time()
        entry: dict[str, Any] = {
            "id": SANDBOX_ID,
            "created": rfc3339_seconds(self._sandbox_created),
            "updated": rfc3339_seconds(now),
            "ip_address": "172.19.0.6",
            "hostname": SANDBOX_CONTAINER,
            "status": "online",
            "last_seen": rfc3339_seconds(now),
            "gpu_vendor": "none",
            "render_node": "/dev/dri/renderD128",
            "active_sandboxes": sum(1 for s in self._sessions.values() if s.desktop is not None and s.desktop.available),
            "max_sandboxes": 20,
            "privileged_mode": False,
            "helix_version": HELIX_VERSION,
        }
        if self.sandbox_ready:
            entry["desktop_versions"] = {"ubuntu": self.desktop_hash}
        return _json([entry])

    # -- spec tasks and sessions --------------------------------------------------------------

    async def _body(self, request: web.Request) -> dict[str, Any] | web.Response:
        if not request.can_read_body:
            return {}
        try:
            data = await request.json()
        except (ValueError, UnicodeDecodeError) as exc:
            return _text(400, f"failed to decode request body: {exc}")
        if not isinstance(data, dict):
            return _text(400, "failed to decode request body: expected a JSON object")
        return data

    async def _from_prompt(self, request: web.Request) -> web.Response:
        user = self._user(request)
        if user is None:
            return _text(401, "unauthorized")
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return _text(400, "prompt is required")
        project = body.get("project_id") if isinstance(body.get("project_id"), str) and body.get("project_id") else self.config.project_id
        # CreateTaskFromPrompt: the request's app_id, else the project's DefaultHelixAppID (none under no_agent).
        app_id = body.get("app_id") if isinstance(body.get("app_id"), str) and body.get("app_id") else self.default_agent
        runtime = body.get("sandbox_runtime") or RUNTIME_DESKTOP
        if runtime not in (RUNTIME_DESKTOP, RUNTIME_HEADLESS):
            return _text(400, f"invalid sandbox runtime {json.dumps(runtime)} (use {RUNTIME_DESKTOP} or {RUNTIME_HEADLESS})")
        now = time.time()
        first_line = prompt.strip().splitlines()[0]
        name = first_line if len(first_line) <= 60 else first_line[:57] + "..."
        task = SpecTask(new_id("spt"), project, app_id, prompt, name, user.id, now, now, runtime=runtime)
        self._tasks[task.id] = task
        log.info("spec task %s created", task.id)
        return _json(task.to_json(), status=201)

    async def _get_task(self, request: web.Request) -> web.Response:
        if self._user(request) is None:
            return _text(401, "unauthorized")
        task = self._tasks.get(request.match_info["id"])
        if task is None:
            return _text(404, "spec task not found")
        return _json(task.to_json())

    async def _start_planning(self, request: web.Request) -> web.Response:
        user = self._user(request)
        if user is None:
            return _text(401, "unauthorized")
        task = self._tasks.get(request.match_info["id"])
        if task is None:
            return _text(404, "spec task not found")
        if task.status != "backlog":
            return _text(400, f"task is not in backlog status (current: {task.status})")
        task.set_status(TASK_QUEUED_SPEC_GENERATION, time.time())
        self._spawn(self._orchestrate(task, user))
        log.info("spec task %s queued for spec generation", task.id)
        return _json(task.to_json())

    @property
    def default_agent(self) -> str:
        """The project's DefaultHelixAppID (empty under fault no_agent)."""
        return "" if "no_agent" in self.config.faults else self.config.agent_id

    async def _orchestrate(self, task: SpecTask, user: User) -> None:
        """The spec-task orchestrator picks the queued task up: StartSpecGeneration."""
        await asyncio.sleep(0)
        now = time.time()
        if not task.app_id:
            task.app_id = self.default_agent
        if not task.app_id:
            log.info("spec task %s failed: %s (fault no_agent)", task.id, NO_AGENT_ERROR)
            task.mark_failed(NO_AGENT_ERROR, now)
            return
        task.metadata.pop("error", None)
        task.metadata.pop("error_timestamp", None)
        sess = Session(new_id("ses"), task, user.id, now, now, index=self._sessions_started)
        self._sessions_started += 1
        self._sessions[sess.id] = sess
        task.planning_session_id = sess.id
        task.set_status(TASK_SPEC_GENERATION, now)
        sess.provision = self._spawn(self._provision(sess))
        log.info("spec task %s: planning session %s", task.id, sess.id)

    def _slowdown(self, sess: Session) -> float:
        return SLOWDOWN ** sess.index if "slow_after_running" in self.config.faults else 1.0

    async def _provision(self, sess: Session) -> None:
        """The sandbox starts the session's desktop container (fault no_container: never)."""
        if not self.sandbox_ready:
            self._set_status(sess, STATUS_WAITING)
            while not self.sandbox_ready:  # the sandbox's own start-up (a modelled delay, not a test sleep)
                await asyncio.sleep(0.1)
        self._set_status(sess, STATUS_STARTING)
        if "no_container" in self.config.faults:
            log.info("session %s never gets a container (fault no_container)", sess.id)
            return
        factor = self._slowdown(sess)
        await asyncio.sleep(self.config.delay(self.config.session_delay_s) / factor)
        name = f"ubuntu-external-{sess.id[len('ses_'):]}"
        fps = self.config.effective_fps * factor
        env = {
            "HELIX_SESSION_ID": sess.id,
            "HELIX_VIDEO_MODE": self.config.video_mode,
            "HELIX_FRAME_EXPORT_PORT": str(getattr(self.qemu, "port", 15937) or 15937),
            "GST_DEBUG": "vsockenc:5",
            "GAMESCOPE_WIDTH": str(self.config.width),
            "GAMESCOPE_HEIGHT": str(self.config.height),
            "GAMESCOPE_REFRESH": str(int(round(fps))),
            "WAYLAND_DISPLAY": "wayland-0",
            "XDG_RUNTIME_DIR": "/run/user/1000",
        }
        labels = {
            "helix.sandbox": SANDBOX_CONTAINER,
            "helix.session_id": sess.id,
            "helix.spec_task_id": sess.task.id,
            "helix.desktop_type": "ubuntu",
        }
        container = self.engine.create_container(name, image=f"{DESKTOP_IMAGE}:{self.desktop_hash}", labels=labels, env=env)
        desktop = Desktop(self.config, session_id=sess.id, container=container, qemu=self.qemu, host=self.host, fps=fps)
        desktop.start()
        sess.container = container
        sess.desktop = desktop
        sess.agent_status = "running"
        self._set_status(sess, STATUS_READY)
        log.info("session %s: desktop container %s running (%.1f fps)", sess.id, name, fps)

    def _set_status(self, sess: Session, message: str) -> None:
        sess.status_message = message
        sess.updated = time.time()

    async def _get_session(self, request: web.Request) -> web.Response:
        if self._user(request) is None:
            return _text(401, "unauthorized")
        sess = self._session_or_404(request, "session not found")
        if isinstance(sess, web.Response):
            return sess
        skip = request.query.get("skipInteractions", "") not in ("", "0", "false")
        return _json(sess.to_json(self.config, interactions=not skip))

    async def _list_sessions(self, request: web.Request) -> web.Response:
        if self._user(request) is None:
            return _text(401, "unauthorized")
        try:
            page = max(1, int(request.query.get("page", "1")))
            size = max(1, min(1000, int(request.query.get("page_size", request.query.get("pageSize", "50")))))
        except ValueError:
            return _text(400, "invalid page or page_size")
        ordered = sorted(self._sessions.values(), key=lambda s: s.created, reverse=True)
        chunk = ordered[(page - 1) * size : page * size]
        return _json({
            "sessions": [s.summary(self.config) for s in chunk],
            "page": page,
            "pageSize": size,
            "totalCount": len(ordered),
            "totalPages": max(1, math.ceil(len(ordered) / size)),
        })

    async def _stop_agent(self, request: web.Request) -> web.Response:
        """stopExternalAgentSession: 400 only for a session that is not zed_external; stopping a desktop that is
        already gone is not an error (StopDesktop logs it); 500 when stopping fails."""
        if self._user(request) is None:
            return _text(401, "unauthorized")
        sess = self._session_or_404(request, "session not found")
        if isinstance(sess, web.Response):
            return sess
        if sess.agent_type != "zed_external":
            return _text(400, "session does not have an external Zed agent")
        try:
            await self._stop_desktop(sess)
        except SimError as exc:
            log.warning("stopping session %s failed: %s", sess.id, exc)
            return _text(500, "failed to stop external Zed agent")
        log.info("session %s stopped", sess.id)
        return _json({"message": "external Zed agent stopped", "session_id": sess.id})

    async def _stop_desktop(self, sess: Session) -> None:
        """HydraExecutor.StopDesktop: the viewers' sockets end, the desktop container is deleted."""
        if sess.provision is not None and not sess.provision.done():
            sess.provision.cancel()
        desktop, container = sess.desktop, sess.container
        for client in self._viewers_of(sess.id):
            client.abort("session stopped")
        if desktop is not None:
            await desktop.shutdown("session stopped")
        if container is not None and self.engine.get(container.id) is not None:
            self.engine.remove(container.id)
        sess.container = None
        sess.desktop = None
        sess.stopped = True
        sess.agent_status = "stopped"
        self._set_status(sess, "")

    async def _resume(self, request: web.Request) -> web.Response:
        """resumeSession: start (or keep) the session's desktop; ``SessionResumeResponse``."""
        if self._user(request) is None:
            return _text(401, "unauthorized")
        sess = self._sessions.get(request.match_info["id"])
        if sess is None:
            return _text(404, "session not found: not found")
        if sess.agent_type != "zed_external":
            return _text(400, "only external agent sessions can be resumed")
        if sess.desktop is None or not sess.desktop.available:
            sess.stopped = False
            if sess.provision is None or sess.provision.done():
                sess.provision = self._spawn(self._provision(sess))
            try:
                await asyncio.shield(sess.provision)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the executor's error, as a 500
                return _text(500, f"failed to resume agent: {exc}")
            if sess.container is None:  # no_container: the sandbox never started one
                return _text(500, "failed to resume agent: desktop container did not start")
        log.info("session %s resumed (container %s)", sess.id, sess.container_name)
        return _json({"session_id": sess.id, "status": "resumed", "dev_container_id": sess.container_id,
                      "screenshot_url": f"/api/v1/sessions/{sess.id}/screenshot"})

    # -- desktop proxies ------------------------------------------------------------------------

    def _desktop_of(self, sess: Session) -> Desktop:
        desktop = sess.desktop
        if desktop is None or not desktop.available:
            raise DesktopUnavailable(f"no connection to desktop-{sess.id}")
        return desktop

    async def _exec(self, request: web.Request) -> web.Response:
        if self._user(request) is None:
            return _text(401, "unauthorized")
        sess = self._session_or_404(request, "Session not found")
        if isinstance(sess, web.Response):
            return sess
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError) as exc:
            return _text(400, f"invalid JSON: {exc}")
        if not isinstance(body, dict):
            return _text(400, "invalid JSON: expected an object")
        command = body.get("command") or []
        env = body.get("env") or None
        timeout = body.get("timeout") or 0
        if not isinstance(command, list) or (env is not None and not isinstance(env, dict)) or not isinstance(timeout, int):
            return _text(400, "invalid JSON: bad field types")
        desktop = self._desktop_of(sess)
        result = await desktop.exec(command, background=bool(body.get("background")), env=env, timeout=timeout)
        if isinstance(result.body, dict):
            return _json(result.body, status=result.status)
        return _text(result.status, result.body.rstrip("\n"))

    async def _screenshot(self, request: web.Request) -> web.Response:
        if self._user(request) is None:
            return _text(401, "unauthorized")
        sess = self._session_or_404(request, "session not found")
        if isinstance(sess, web.Response):
            return sess
        desktop = self._desktop_of(sess)
        # The query goes to the desktop as it came, with quality=40 when absent; the desktop reads format
        # (default jpeg; anything else gives PNG) and quality (an integer clamped to 1..100, else 70).
        fmt = request.query.get("format", "")
        raw_quality = request.query.get("quality", "") or "40"
        try:
            quality = int(raw_quality)
        except ValueError:
            quality = 70
        data, ctype = await desktop.screenshot(fmt, quality)
        etag = f'"{await asyncio.to_thread(_fnv64a, data):x}"'  # fmt.Sprintf(`"%x"`, h.Sum64()): no padding
        headers = {"ETag": etag, "Cache-Control": "private, no-cache, must-revalidate"}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=data, content_type=ctype, headers=headers)

    # -- the WebSocket stream ---------------------------------------------------------------------

    async def _ws_stream(self, request: web.Request) -> web.StreamResponse:
        if self._user(request) is None:
            return _text(401, "unauthorized")
        sess = self._sessions.get(request.match_info["id"])
        if sess is None:
            return _text(404, "session or sandbox not found")
        desktop = sess.desktop
        if "ws_503" in self.config.faults or desktop is None or not desktop.available:
            return self._raw_503(request)
        if sess.task.headless:  # no screen capture session to stream
            return self._raw_503(request, RAW_DESKTOP_503)
        client_id = request.query.get("client_id") or None
        self._stream_numbers += 1
        client = StreamClient(self, sess, request, self._stream_numbers, client_id)
        if client_id is not None:
            old = self._by_client_id.get((sess.id, client_id))
            if old is not None:
                self._spawn(old.supersede())
            self._by_client_id[(sess.id, client_id)] = client
        self._streams.add(client)
        try:
            return await client.run()
        finally:
            self._forget(client)

    def _raw_503(self, request: web.Request, raw: bytes = RAW_503) -> web.StreamResponse:
        """After the hijack the proxy writes a hand-made response and drops the connection."""
        transport = request.transport
        if transport is not None and not transport.is_closing():
            transport.write(raw)
            transport.close()
        request.protocol.force_close()
        return web.Response(status=503)


def _fnv64a(data: bytes) -> int:
    """FNV-1a, 64 bit (the desktop's screenshot ETag)."""
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h
