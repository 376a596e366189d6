"""The spectask commands that talk REST: ``start`` (create, start planning, ``--wait``), ``list``, ``stop``,
``screenshot``, ``resume`` and ``exec``, with spectask.go's output and error texts.

``start --wait`` polls as waitForTaskSession does; its interval and deadline come from
:class:`~helix_sim.guest.helix.timing.CliTiming` (the simulator's config, passed in the guest's env).
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import time
from typing import Any

from ...gofmt import GoError, errno_text, go_json, go_json_decode, go_quote
from .cobra import Context
from .http_client import Http


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _task_url(api_url: str, task: dict[str, Any], project_fallback: str) -> str:
    project = _str(task.get("project_id")) or project_fallback
    org = _str(task.get("organization_id"))
    if not org or not project:
        return ""
    return f"{api_url.rstrip('/')}/orgs/{org}/projects/{project}/tasks/{_str(task.get('id'))}"


def _decode_object(body: bytes) -> dict[str, Any]:
    value = go_json_decode(body)
    if value is None:
        return {}
    if not isinstance(value, dict):
        kind = {list: "array", str: "string", bool: "bool"}.get(type(value), "number")
        raise GoError(f"json: cannot unmarshal {kind} into Go value of type spectask.SpecTask")
    return value


def run_start(ctx: Context) -> None:
    f = ctx.flags
    api_url, http = ctx.api_url, Http(ctx.token)
    quiet = f["quiet"]
    project = f["project"]
    if ctx.args:
        task_id = ctx.args[0]
    else:
        if not project:
            raise GoError("--project is required when creating a new task")
        if not quiet:
            ctx.print("Creating new spec task...\n")
        prompt = f["prompt"]
        if f["prompt-file"]:
            try:
                with open(f["prompt-file"], "rb") as fh:
                    data = fh.read().decode("utf-8", errors="replace")
            except OSError as exc:
                op = "read" if exc.errno == errno.EISDIR else "open"
                raise GoError(f"failed to read --prompt-file {go_quote(f['prompt-file'])}: "
                              f"{op} {f['prompt-file']}: {errno_text(exc)}") from None
            prompt = f"{prompt}\n\n{data}" if prompt else data
        if not prompt:
            prompt = "Testing RevDial connectivity"
        payload = {"name": f["name"], "prompt": prompt}
        if project:
            payload["project_id"] = project
        agent = f.get("agent", "")  # 2026-08 only: the newer CLI sends no app_id (the project's default agent)
        if agent:
            payload["app_id"] = agent
        runtime = f.get("runtime", "")  # 2026-11 only; the API checks the value
        if runtime:
            payload["sandbox_runtime"] = runtime
        try:
            status, body, _ = http.request("POST", api_url + "/api/v1/spec-tasks/from-prompt",
                                           body=go_json(payload).encode(), content_type="application/json")
            if status not in (200, 201):
                raise GoError(f"API returned {status}: {body.decode('utf-8', 'replace')}")
            task = _decode_object(body)
        except GoError as exc:
            raise GoError(f"failed to create spec task: {exc.message}") from None
        task_id = _str(task.get("id"))
        if not quiet:
            ctx.print(f"✅ Created spec task: {_str(task.get('name'))} (ID: {task_id})\n")
            if agent:
                ctx.print(f"   Agent: {agent}\n")
        if f["attach"]:
            _upload_attachments(ctx, http, task_id, f["attach"])
            if not quiet:
                ctx.print(f"📎 Uploaded {len(f['attach'])} attachment(s)\n")

    if not quiet:
        ctx.print(f"Starting planning for task {task_id}...\n")
    try:
        status, body, _ = http.request("POST", f"{api_url}/api/v1/spec-tasks/{task_id}/start-planning", timeout=30)
        if status not in (200, 201):
            raise GoError(f"API returned {status}: {body.decode('utf-8', 'replace')}")
        task = _decode_object(body)
    except GoError as exc:
        raise GoError(f"failed to start planning: {exc.message}") from None
    if not quiet:
        ctx.print(f"✅ Task status: {_str(task.get('status'))}\n")

    if not (f["wait"] and not f["no-wait"]):
        if quiet:
            ctx.print(task_id + "\n")
        else:
            ctx.print(f"\n✅ Task created — planning started: {task_id}\n")
            url = _task_url(api_url, task, project)
            if url:
                ctx.print(f"   Open in browser: {url}\n")
            ctx.print("   The sandbox provisions in the background; the page shows it loading.\n")
        return

    if not quiet:
        ctx.print("⏳ Waiting for sandbox to start (this takes ~15 seconds)...\n")
    session = _wait_for_task_session(ctx, http, task_id, ctx.timing.wait_timeout_s)
    if session is None:
        if quiet:
            ctx.print(task_id + "\n")
        else:
            ctx.print(f"\n⏳ Task created ({task_id}) — sandbox still provisioning after 3m.\n")
            url = _task_url(api_url, task, project)
            if url:
                ctx.print(f"   Open in browser: {url}\n")
        return
    sid = _str(session.get("id"))
    if quiet:
        ctx.print(sid + "\n")
    else:
        ctx.print(
            "\n✅ Sandbox is running!\n"
            f"   Session ID: {sid}\n"
            "\n📺 Connect to Desktop:\n"
            f"   Open in browser: {api_url}/sessions/{sid}\n"
            "\n📷 Test screenshot:\n"
            f"   helix spectask screenshot {sid}\n"
        )


def _upload_attachments(ctx: Context, http: Http, task_id: str, files: list[str]) -> None:
    import uuid  # noqa: PLC0415

    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for path in files:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise GoError(f"failed to upload attachments: read {go_quote(path)}: open {path}: {errno_text(exc)}") from None
        name = os.path.basename(path).replace('"', "%22")
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    try:
        status, resp, _ = http.request("POST", f"{ctx.api_url}/api/v1/spec-tasks/{task_id}/attachments", body=body,
                                       content_type=f"multipart/form-data; boundary={boundary}")
    except GoError as exc:
        raise GoError(f"failed to upload attachments: {exc.message}") from None
    if status not in (200, 201):
        raise GoError(f"failed to upload attachments: attachments API returned {status}: {resp.decode('utf-8', 'replace')}")


def _wait_for_task_session(ctx: Context, http: Http, task_id: str, timeout: float) -> dict[str, Any] | None:
    """waitForTaskSession: poll every 2 s; ``None`` on timeout (the CLI still exits 0)."""
    deadline = time.monotonic() + timeout
    last_status = ""
    while time.monotonic() < deadline:
        try:
            status, body, _ = http.request("GET", f"{ctx.api_url}/api/v1/spec-tasks/{task_id}", timeout=10)
            if status == 200:
                task = _decode_object(body)
                sid = _str(task.get("planning_session_id"))
                if sid:
                    s_status, s_body, _ = http.request("GET", f"{ctx.api_url}/api/v1/sessions/{sid}", timeout=10)
                    if s_status == 200:
                        session = go_json_decode(s_body)
                        session = session if isinstance(session, dict) else {}
                        meta = session.get("config") if isinstance(session.get("config"), dict) else {}
                        message = _str(meta.get("status_message"))
                        if message and message != last_status:
                            ctx.print(f"   {message}\n")
                            last_status = message
                        if _str(meta.get("dev_container_id")) or _str(meta.get("container_id")):
                            return session
        except GoError:
            pass
        time.sleep(ctx.timing.wait_poll)  # the CLI's fixed poll interval (spectask.go waitForTaskSession)
    return None


# --- list / stop / screenshot / resume ----------------------------------------------------------


def run_list(ctx: Context) -> None:
    http = Http(ctx.token)
    status, body, _ = http.request("GET", ctx.api_url + "/api/v1/sessions")
    try:
        data = go_json_decode(body)
    except GoError as exc:
        raise GoError(f"failed to parse sessions: {exc.message}") from None
    sessions = data.get("sessions") if isinstance(data, dict) else None
    ctx.print("Active Sessions with External Agents:\n\n")
    count = 0
    for s in sessions if isinstance(sessions, list) else []:
        if not isinstance(s, dict):
            continue
        meta = s.get("metadata") if isinstance(s.get("metadata"), dict) else {}
        if _str(meta.get("dev_container_id")):
            count += 1
            sid = _str(s.get("session_id"))
            ctx.print(f"Session: {sid}\n  Type: {_str(s.get('type'))}\n")
            if _str(meta.get("container_name")):
                ctx.print(f"  Container: {_str(meta.get('container_name'))}\n")
            ctx.print(f"  Screenshot: helix spectask screenshot {sid}\n\n")
    if count == 0:
        ctx.print(
            "No sessions with active external agents found.\n"
            "\nTo start a session:\n"
            '  1. Fork a sample project:  helix project fork modern-todo-app --name "My Project"\n'
            '  2. Create a spec task:     helix spectask start <project-id> -n "Task Name"\n'
        )
    else:
        ctx.print(f"Found {count} session(s) with external agents.\n")


def _stop_session(ctx: Context, http: Http, sid: str) -> None:
    ctx.print(f"Stopping session {sid}...\n")
    try:
        status, body, _ = http.request("DELETE", f"{ctx.api_url}/api/v1/sessions/{sid}/stop-external-agent", timeout=30)
    except GoError as exc:
        raise GoError(f"failed to stop session: {exc.message}") from None
    if status != 200:
        raise GoError(f"stop failed: {status} - {body.decode('utf-8', 'replace')}")
    ctx.print(f"Session {sid} stopped.\n")


def run_stop(ctx: Context) -> None:
    http = Http(ctx.token)
    if ctx.flags["all"]:
        status, body, _ = http.request("GET", ctx.api_url + "/api/v1/sessions")
        try:
            data = go_json_decode(body)
        except GoError as exc:
            raise GoError(f"failed to parse sessions: {exc.message}") from None
        stopped = 0
        for s in (data.get("sessions") or []) if isinstance(data, dict) else []:
            meta = s.get("metadata") if isinstance(s, dict) and isinstance(s.get("metadata"), dict) else {}
            if _str(meta.get("dev_container_id")):
                sid = _str(s.get("session_id"))
                try:
                    _stop_session(ctx, http, sid)
                    stopped += 1
                except GoError as exc:
                    ctx.print(f"Failed to stop {sid}: {exc.message}\n")
        ctx.print(f"\nStopped {stopped} session(s).\n")
        return
    if not ctx.args:
        raise GoError("session ID required (or use --all)")
    _stop_session(ctx, http, ctx.args[0])


def run_screenshot(ctx: Context) -> None:
    sid = ctx.args[0]
    ctx.print(f"Testing screenshot for session {sid}...\n")
    http = Http(ctx.token)
    try:
        status, body, _ = http.request("GET", f"{ctx.api_url}/api/v1/external-agents/{sid}/screenshot", timeout=15)
    except GoError as exc:
        raise GoError(f"failed to get screenshot: {exc.message}") from None
    if status != 200:
        raise GoError(f"screenshot request failed: {status} - {body.decode('utf-8', 'replace')}")
    filename = f"screenshot-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.jpg"
    try:
        with open(filename, "wb") as fh:
            fh.write(body)
    except OSError as exc:
        raise GoError(f"failed to save screenshot: open {filename}: {errno_text(exc)}") from None
    ctx.print(f"✅ Screenshot saved: {filename} ({len(body)} bytes)\n")


def run_resume(ctx: Context) -> None:
    sid = ctx.args[0]
    ctx.print(f"Resuming session {sid}...\n")
    http = Http(ctx.token)
    try:
        status, body, _ = http.request("POST", f"{ctx.api_url}/api/v1/sessions/{sid}/resume", timeout=60)
    except GoError as exc:
        raise GoError(f"failed to resume session: {exc.message}") from None
    if status != 200:
        raise GoError(f"resume failed: {status} - {body.decode('utf-8', 'replace')}")
    try:
        result = go_json_decode(body)
    except GoError as exc:
        raise GoError(f"failed to parse response: {exc.message}") from None
    ctx.print("✅ Session resumed successfully!\n")
    if isinstance(result, dict) and isinstance(result.get("dev_container_id"), str):
        ctx.print(f"   Container ID: {result['dev_container_id']}\n")


# --- exec --------------------------------------------------------------------------------------


def run_exec(ctx: Context) -> None:
    sid, command = ctx.args[0], ctx.args[1:]
    env: dict[str, str] = {}
    for item in ctx.flags["env"]:
        key, eq, value = item.partition("=")
        if not eq:
            raise GoError(f"invalid environment variable format: {item} (expected KEY=VALUE)")
        env[key] = value
    # ExecRequest field order (command, background, env); omitempty drops false/empty.
    payload = '{"command":' + go_json(command)
    if ctx.flags["background"]:
        payload += ',"background":true'
    if env:
        payload += ',"env":' + go_json(env)
    payload += "}"
    timeout = ctx.flags["timeout"]
    http = Http(ctx.token)
    try:
        status, body, _ = http.request("POST", f"{ctx.api_url}/api/v1/external-agents/{sid}/exec",
                                       body=payload.encode(), content_type="application/json",
                                       timeout=timeout if timeout > 0 else None)
    except GoError as exc:
        raise GoError(f"request failed: {exc.message}") from None
    if status not in (200, 201):
        raise GoError(f"exec API returned {status}: {body.decode('utf-8', 'replace')}")
    output, error, exit_code = "", "", 0
    try:
        result = json.loads(body.decode("utf-8"))
        if not isinstance(result, dict):
            raise ValueError("not an object")
        output, error = _str(result.get("output")), _str(result.get("error"))
        code = result.get("exit_code")
        exit_code = code if isinstance(code, int) and not isinstance(code, bool) else 0
    except (ValueError, UnicodeDecodeError):
        output = body.decode("utf-8", "replace")  # not JSON: the body is the output
    if error:
        ctx.print(f"Error: {error}\n")
        if exit_code != 0:
            raise GoError(f"command exited with code {exit_code}")
        raise GoError("command failed")
    if output:
        ctx.print(output if output.endswith("\n") else output + "\n")
    if ctx.flags["background"]:
        ctx.print("Command started in background\n")


def not_simulated(ctx: Context) -> None:
    raise GoError(f"`helix spectask {ctx.cmd.name}` is not simulated by helix-e2e "
                  "(simulated: start, stream, benchmark, exec, stop, list, screenshot, resume)")
