"""DockerDriver against the simulator's Docker engine: docker-py over our SSH connection
(``docker system dial-stdio`` channels) and ``docker compose exec -T <sandbox> docker …`` for the
desktop container.

The contract: a compose service's container is found by its label (none is an error naming the
profile); ``state``/``desktop_state`` read a container's state (a missing one is an error);
``logs(since=)`` keeps sub-second precision, ``desktop_logs(since=)`` whole seconds; ``close``
leaves our SSH connection open.
"""

from __future__ import annotations

import math
import time
from datetime import datetime

import pytest

from harness.drivers.docker import DockerDriverError

pytestmark = pytest.mark.timeout(90)


def _unix(stamp: str) -> float:
    """An RFC 3339 stamp with nanoseconds (docker's) → Unix seconds (to the microsecond)."""
    head, _, frac = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float("0." + (frac or "0"))


def test_service_containers_by_compose_label(rig) -> None:
    rig.stack_up()
    assert rig.docker.ping() is True
    assert rig.docker.find_service_container("sandbox-macos") == "helix-sandbox-macos-1"
    assert rig.docker.find_service_container("api") == "helix-api-1"
    with pytest.raises(DockerDriverError) as err:
        rig.docker.find_service_container("sandbox-nvidia")
    assert err.value.phase == "stack" and "COMPOSE_PROFILES" in (err.value.hint or "")


def test_state(rig) -> None:
    rig.stack_up()
    st = rig.docker.state("helix-sandbox-macos-1")
    assert (st.name, st.status, st.running, st.oom_killed, st.restart_count) == (
        "helix-sandbox-macos-1", "running", True, False, 0)
    assert st.started_at.startswith("20") and st.problems() == [] and st.problems(st) == []
    with pytest.raises(DockerDriverError, match="does not exist"):
        rig.docker.state("helix-no-such-1")


def test_desktop_state_through_the_sandbox(rig) -> None:
    _, container = rig.session()
    st = rig.docker.desktop_state(container)
    assert (st.name, st.status, st.running, st.exit_code) == (container, "running", True, 0)
    assert st == rig.docker.state(container)  # the same container as the engine API sees it
    with pytest.raises(DockerDriverError) as err:
        rig.docker.desktop_state("ubuntu-external-nosuch")
    assert err.value.phase == "desktop" and "not found in the sandbox" in err.value.message


def _stamp_of(rig, container: str, needle: str) -> float:
    """When the engine logged the one line holding ``needle`` (its own nanosecond timestamp)."""
    stamped = rig.docker.client.api.logs(container, timestamps=True).decode().splitlines()
    [stamp] = [ln.split(" ", 1)[0] for ln in stamped if needle in ln]
    return _unix(stamp)


def test_logs_since_keeps_sub_second_precision(rig) -> None:
    sid, container = rig.session()
    rig.api.exec(sid, ["echo", "logs-since-marker"])
    t_listen = _stamp_of(rig, container, "desktop server listening")
    t_exec = _stamp_of(rig, container, "logs-since-marker")
    assert t_exec > t_listen
    everything = rig.docker.logs(container)
    assert "desktop server listening" in everything and "logs-since-marker" in everything
    newer = rig.docker.logs(container, since=(t_listen + t_exec) / 2)  # may well be the same second
    assert "logs-since-marker" in newer and "desktop server listening" not in newer


def test_desktop_logs_since_whole_seconds(rig) -> None:
    sid, container = rig.session()
    rig.api.exec(sid, ["echo", "desktop-logs-marker"])
    second = math.floor(_stamp_of(rig, container, "desktop-logs-marker"))
    logs = rig.docker.desktop_logs(container)
    assert "desktop server listening" in logs and "desktop-logs-marker" in logs
    assert "desktop-logs-marker" in rig.docker.desktop_logs(container, since=second)
    assert "desktop-logs-marker" not in rig.docker.desktop_logs(container, since=second + 1)
    with pytest.raises(DockerDriverError, match="reading logs of ubuntu-external-nosuch failed"):
        rig.docker.desktop_logs("ubuntu-external-nosuch")


def test_close_keeps_our_ssh_connection(rig) -> None:
    rig.stack_up()
    docker = rig.docker_driver()
    assert docker.ping()
    docker.close()
    assert rig.ssh.connected and rig.ssh.ping()
    assert rig.docker.ping()  # and another DockerDriver on it still works


def test_a_guest_that_stops_answering_never_hangs_a_docker_call(rig) -> None:
    """docker-py's SSH channels wait for their exec reply with no timeout: the driver ends a call at its own
    deadline, with an error naming it, and its SSH connection is the SshDriver's, untouched."""
    from harness.drivers.docker import DockerDriver

    rig.stack_up()
    ssh = rig.ssh_driver()
    ssh.connect(20)
    driver = DockerDriver(ssh.client, ssh, rig.guest, call_timeout=1.5)
    try:
        assert driver.ping()
        driver.close()  # a fresh channel for the next call, opened while the guest is frozen
        with rig.guest_frozen(ssh):
            started = time.monotonic()
            with pytest.raises(DockerDriverError) as err:
                driver.ping()
            assert time.monotonic() - started < 6
            assert "did not answer within 2s" in err.value.message and err.value.phase == "stack"
        assert ssh.ping()  # the SSH connection itself survived
    finally:
        driver.close()
