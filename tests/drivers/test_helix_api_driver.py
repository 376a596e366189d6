"""HelixApi (the REST client) against the simulator's Helix API and desktop.

The contract: ``status_code`` is the readiness signal (any answer; a dead port is a typed error);
``sandboxes``/``ready_sandbox`` find the sandbox that lists desktop versions; ``session`` and
``container_of`` find the session's desktop container; the exec API starts, checks and stops
vkcube (a 403 from the desktop's allowlist is an error with a hint, a vkcube that dies is seen
by ``vkcube_running``); ``stop_session`` stops the agent. The API key goes out in the
Authorization header only: it is registered for redaction and never reaches a log record or an
error message.
"""

from __future__ import annotations

import logging

import pytest

from harness.drivers.helix_api import HelixApi, HelixApiError
from harness.redact import redact

pytestmark = pytest.mark.timeout(90)


def test_status_code_is_readiness(rig, make_rig) -> None:
    down = make_rig()  # the VM is off: nothing listens on the API port
    with pytest.raises(HelixApiError) as err:
        down.api_driver().status_code()
    assert err.value.phase == "stack" and "/api/v1/status" in err.value.message
    rig.stack_up()
    assert rig.api.status_code() == 200
    assert rig.api_driver(token="not-the-key-0123").status_code() == 401  # the API is up: any code < 500


def test_sandboxes_and_the_ready_one(rig) -> None:
    rig.stack_up()
    sandboxes = rig.api.sandboxes()
    ready = HelixApi.ready_sandbox(sandboxes)
    assert ready is not None and ready in sandboxes
    assert ready["status"] == "online" and ready["desktop_versions"]
    assert HelixApi.ready_sandbox([]) is None
    assert HelixApi.ready_sandbox(["junk", {"status": "offline", "desktop_versions": {"ubuntu": "x"}},
                                   {"status": "online", "desktop_versions": {}}]) is None


def test_session_lookup_and_container(rig) -> None:
    sid, container = rig.session()
    session = rig.api.session(sid)
    assert session["id"] == sid
    cid, name = rig.api.container_of(session)
    assert cid and name == container and name.startswith("ubuntu-external-")
    assert rig.api.container_of({}) == ("", "")
    assert rig.api.container_of({"config": {"container_id": "abc"}}) == ("abc", "")
    with pytest.raises(HelixApiError) as err:
        rig.api.session("ses_01nonexistent0000000000000")
    assert (err.value.status, err.value.phase) == (404, "session")


def test_exec_api(rig) -> None:
    sid, _ = rig.session()
    res = rig.api.exec(sid, ["echo", "hello", "exec"])
    assert (res.success, res.exit_code, res.output.strip()) == (True, 0, "hello exec")
    with pytest.raises(HelixApiError) as err:
        rig.api.exec(sid, ["rm", "-rf", "/"], phase="desktop")
    assert (err.value.status, err.value.phase) == (403, "desktop")
    assert "command not allowed: rm" in err.value.message and "allowlist" in (err.value.hint or "")


def test_vkcube_start_check_stop(rig) -> None:
    sid, _ = rig.session()
    started = rig.api.start_vkcube(sid)
    assert started.success and started.pid > 0
    assert rig.api.vkcube_running(sid, started.pid) is True
    rig.api.stop_vkcube(sid)
    # Upstream's background exec never reaps what it started: the killed vkcube stays a zombie that
    # `pkill -0 -f vkcube` still matches, so only its pid tells it is gone.
    assert rig.api.vkcube_state(sid, started.pid) in ("zombie", "gone")
    assert rig.api.vkcube_running(sid, started.pid) is False
    rig.api.stop_vkcube(sid)  # nothing to stop: the exit code is ignored


def test_screenshot_and_stream_url(rig) -> None:
    sid, _ = rig.session()
    data, ctype = rig.api.screenshot(sid)
    assert ctype == "image/jpeg" and data[:3] == b"\xff\xd8\xff"
    port = rig.info["api_url"].rsplit(":", 1)[1]
    assert rig.api.stream_url(sid) == f"ws://127.0.0.1:{port}/api/v1/external-agents/{sid}/ws/stream"
    assert HelixApi("https://helix.example/", "tok123456").ws_base == "wss://helix.example"


def test_stop_session(rig) -> None:
    sid, _ = rig.new_session("driver-tests-stop")
    rig.api.stop_session(sid)
    rig.api.stop_session(sid)  # upstream: stopping a desktop that is already gone is not an error
    with pytest.raises(HelixApiError) as err:
        rig.api.stop_session("ses_" + "0" * 26)  # no such session
    assert (err.value.status, err.value.phase) == (404, "teardown")


def test_api_key_is_never_logged(rig) -> None:
    """Every record of a DEBUG run (requests, urllib3, the driver) and every error, with the
    redacting log-record factory switched off, so the driver itself is what is checked."""
    rig.stack_up()
    key = rig.info["api_key"]
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler, root = Keep(level=logging.DEBUG), logging.getLogger()
    factory, level = logging.getLogRecordFactory(), root.level
    logging.setLogRecordFactory(logging.LogRecord)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    errors: list[str] = []
    try:
        api = HelixApi(rig.info["api_url"], key)
        assert redact(f"x {key} y") == "x *** y"  # registered for redaction on construction
        assert key not in repr(api)
        sid, _ = rig.session()
        api.status_code()
        api.sandboxes()
        api.session(sid)
        api.vkcube_running(sid)
        for call in (lambda: api.session("ses_missing"), lambda: api.exec(sid, ["rm"])):
            try:
                call()
            except HelixApiError as exc:
                errors.append(f"{exc!s} {exc.body}")
        api.close()
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        logging.setLogRecordFactory(factory)
    assert len(errors) == 2
    assert api.auth_headers == {"Authorization": f"Bearer {key}"}  # what the WebSocket capture sends
    text = "\n".join(r.getMessage() for r in records)
    assert "/api/v1/sessions/" in text, "no DEBUG record of the requests: is the check vacuous?"
    assert key not in text and key not in "\n".join(errors)


def test_exec_forbidden(make_rig) -> None:
    rig = make_rig(faults={"exec_forbidden"})
    sid, _ = rig.session()
    with pytest.raises(HelixApiError) as err:
        rig.api.start_vkcube(sid)
    assert (err.value.status, err.value.phase) == (403, "desktop")
    assert "command not allowed: vkcube" in err.value.message and "allowlist" in (err.value.hint or "")


def test_vkcube_dies(make_rig) -> None:
    rig = make_rig(faults={"vkcube_dies"})
    sid, _ = rig.session()
    started = rig.api.start_vkcube(sid)
    assert started.success  # the exec itself succeeds …
    # … and then vkcube crashes: a zombie `pkill -0 -f vkcube` still matches, dead by its pid's state
    assert rig.api.vkcube_running(sid, started.pid) is False
    assert rig.api.vkcube_state(sid, started.pid) in ("zombie", "gone")
