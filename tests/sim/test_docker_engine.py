"""The sim's Docker Engine, driven by docker-py itself (the client the guest shim and harness use)."""

from __future__ import annotations

import asyncio
import struct
import threading
import time
from datetime import datetime

import docker
import pytest

from helix_sim.config import SimConfig
from helix_sim.stack.docker_engine import DockerEngine, EngineError


class _LoopThread:
    """An asyncio loop on a thread, so blocking docker-py calls can hit the engine."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="engine-loop", daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn, *args):
        async def wrapper():
            return fn(*args)

        return self.run(wrapper())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def _make(tmp_path, **cfg):
    config = SimConfig(root=tmp_path, api_port=18080, **cfg)
    lt = _LoopThread()
    engine = DockerEngine(config, tmp_path / "docker.sock")
    lt.run(engine.start())
    return lt, engine


@pytest.fixture
def engine_env(tmp_path):
    lt, engine = _make(tmp_path)
    client = docker.DockerClient(base_url=f"unix://{engine.socket_path}", version="1.43", timeout=10)
    yield lt, engine, client
    client.close()
    lt.run(engine.stop())
    lt.close()


def test_ping_version_info(engine_env):
    lt, engine, client = engine_env
    assert client.ping() is True
    version = client.version()
    assert version["ApiVersion"] and version["Os"] == "linux"
    info = client.info()
    assert info["Containers"] == 0 and info["OSType"] == "linux"


def test_from_env_negotiates_version(tmp_path, monkeypatch):
    lt, engine = _make(tmp_path)
    try:
        monkeypatch.setenv("DOCKER_HOST", f"unix://{engine.socket_path}")
        client = docker.from_env()
        assert client.api.api_version == "1.47"
        assert client.containers.list() == []
        client.close()
    finally:
        lt.run(engine.stop())
        lt.close()


def test_create_start_inspect_list_remove(engine_env):
    lt, engine, client = engine_env
    started: list[str] = []

    async def on_start(container):
        started.append(container.name)

    lt.call(engine.on_service_start, "postgres", on_start)
    c = client.containers.create(
        "postgres:17",
        name="helix-postgres-1",
        labels={"com.docker.compose.service": "postgres", "com.docker.compose.project": "helix"},
        environment={"POSTGRES_PASSWORD": "x"},
    )
    assert len(c.id) == 64 and all(ch in "0123456789abcdef" for ch in c.id)
    assert c.status == "created"
    assert client.containers.list() == []
    c.start()
    assert started == ["helix-postgres-1"]
    c.reload()
    state = c.attrs["State"]
    assert state["Status"] == "running" and state["Running"] is True and state["Pid"] > 0
    assert state["OOMKilled"] is False and state["ExitCode"] == 0 and state["StartedAt"].endswith("Z")
    assert c.attrs["Name"] == "/helix-postgres-1" and c.name == "helix-postgres-1"
    assert c.attrs["Config"]["Image"] == "postgres:17"
    assert "POSTGRES_PASSWORD=x" in c.attrs["Config"]["Env"]
    assert c.labels["com.docker.compose.service"] == "postgres"
    assert c.attrs["RestartCount"] == 0

    assert [x.name for x in client.containers.list(filters={"name": "postgres"})] == ["helix-postgres-1"]
    assert client.containers.list(filters={"label": "com.docker.compose.service=api"}) == []
    assert [x.id for x in client.containers.list(filters={"label": "com.docker.compose.project=helix"})] == [c.id]
    assert client.containers.get("helix-postgres-1").id == c.id
    assert client.containers.get(c.id[:12]).id == c.id

    with pytest.raises(docker.errors.APIError) as conflict:
        client.containers.create("postgres:17", name="helix-postgres-1")
    assert conflict.value.response.status_code == 409
    with pytest.raises(docker.errors.APIError) as running:
        c.remove()
    assert running.value.response.status_code == 409

    c.stop(timeout=1)
    c.reload()
    assert c.status == "exited" and c.attrs["State"]["Running"] is False
    assert client.containers.list() == [] and len(client.containers.list(all=True)) == 1
    c.remove()
    with pytest.raises(docker.errors.NotFound):
        client.containers.get("helix-postgres-1")


def test_logs_multiplexed_since_tail_timestamps(engine_env):
    lt, engine, client = engine_env
    sim = lt.call(lambda: engine.create_container("ubuntu-external-01abc", image="helix-ubuntu:latest"))
    sim.log("first line")
    sim.log("an error", stream="stderr")
    time.sleep(0.02)  # distinct wall-clock timestamps, so since= can split them
    mark = time.time()
    time.sleep(0.02)
    sim.log("after mark")
    c = client.containers.get("ubuntu-external-01abc")
    assert c.logs() == b"first line\nan error\nafter mark\n"
    assert c.logs(stderr=False) == b"first line\nafter mark\n"
    assert c.logs(stdout=False) == b"an error\n"
    assert c.logs(since=mark) == b"after mark\n"
    assert c.logs(tail=2) == b"an error\nafter mark\n"
    assert c.logs(until=mark) == b"first line\nan error\n"
    stamped = c.logs(timestamps=True).decode().splitlines()
    assert stamped[0].endswith(" first line")
    ts = stamped[0].split(" ", 1)[0]
    assert len(ts) == len("2026-01-01T00:00:00.000000000Z")
    datetime.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")
    # The raw stream: 8-byte headers, stream id 1 (stdout) / 2 (stderr), big-endian length.
    res = client.api._get(client.api._url("/containers/{0}/logs", c.id), params={"stdout": 1, "stderr": 1})
    assert res.headers["Content-Type"] == "application/vnd.docker.multiplexed-stream"
    raw = res.content
    assert raw[:8] == struct.pack(">BxxxL", 1, len(b"first line\n"))
    off = 8 + len(b"first line\n")
    assert raw[off : off + 8] == struct.pack(">BxxxL", 2, len(b"an error\n"))


def test_logs_follow_stream(engine_env):
    lt, engine, client = engine_env
    sim = lt.call(lambda: engine.create_container("follow-me", image="img"))
    sim.log("one")
    c = client.containers.get("follow-me")
    stream = c.logs(stream=True, follow=True)
    assert next(stream) == b"one\n"
    sim.log("two")
    assert next(stream) == b"two\n"
    lt.call(sim.exit, 0)
    assert list(stream) == []


def test_exit_restart_oom(engine_env):
    lt, engine, client = engine_env
    sim = lt.call(
        lambda: engine.create_container(
            "ubuntu-external-02def", image="helix-ubuntu:latest", labels={"helix.sandbox": "helix-sandbox-macos-1"}
        )
    )
    assert sim.running and engine.get("ubuntu-external-02def") is sim
    sim.restart(oom_killed=True)
    c = client.containers.get(sim.id)
    assert c.attrs["RestartCount"] == 1
    assert c.attrs["State"]["OOMKilled"] is True and c.attrs["State"]["Running"] is True
    sim.exit(137, oom_killed=True)
    c.reload()
    assert c.status == "exited" and c.attrs["State"]["ExitCode"] == 137 and c.attrs["State"]["OOMKilled"] is True
    assert c.attrs["State"]["FinishedAt"] != "0001-01-01T00:00:00Z"
    assert [x.name for x in client.containers.list(all=True, filters={"label": "helix.sandbox"})] == [
        "ubuntu-external-02def"
    ]


def test_stack_fails_api_start(tmp_path):
    lt, engine = _make(tmp_path, faults=frozenset({"stack_fails"}))
    client = docker.DockerClient(base_url=f"unix://{engine.socket_path}", version="1.43")
    try:
        api = client.containers.create("helix-api:dev", name="helix-api-1", labels={"com.docker.compose.service": "api"})
        with pytest.raises(docker.errors.APIError) as err:
            api.start()
        assert err.value.response.status_code == 500
        message = err.value.explanation
        assert message.startswith("driver failed programming external connectivity on endpoint helix-api-1 (")
        assert message.endswith("): Bind for 0.0.0.0:18080 failed: port is already allocated")
        api.reload()
        assert api.status == "created" and api.attrs["State"]["Error"] == message
        # other services still start
        pg = client.containers.create("postgres:17", name="helix-postgres-1", labels={"com.docker.compose.service": "postgres"})
        pg.start()
    finally:
        client.close()
        lt.run(engine.stop())
        lt.close()


def test_reset_and_in_process_api(engine_env):
    lt, engine, client = engine_env
    stopped: list[str] = []

    async def on_stop(container):
        stopped.append(container.name)

    lt.call(engine.on_service_stop, "api", on_stop)
    api = lt.call(lambda: engine.create_container("helix-api-1", image="helix-api", service="api"))
    assert api.service == "api" and api.labels["com.docker.compose.service"] == "api"
    with pytest.raises(EngineError) as dup:
        lt.call(lambda: engine.create_container("helix-api-1", image="helix-api"))
    assert dup.value.status == 409
    client.containers.get("helix-api-1").stop()
    assert stopped == ["helix-api-1"]
    lt.call(engine.reset)
    assert client.containers.list(all=True) == []
    with pytest.raises(EngineError):
        engine.remove("helix-api-1")


def test_long_socket_path_uses_symlink(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    config = SimConfig(root=tmp_path)
    lt = _LoopThread()
    engine = DockerEngine(config, deep / "docker.sock")
    try:
        lt.run(engine.start())
        assert (deep / "docker.sock").is_symlink()
        assert engine.docker_host != f"unix://{deep / 'docker.sock'}"
        client = docker.DockerClient(base_url=engine.docker_host, version="1.43")
        assert client.ping()
        client.close()
    finally:
        lt.run(engine.stop())
        lt.close()
    assert not (deep / "docker.sock").exists()


def test_unknown_route_and_bad_logs(engine_env):
    lt, engine, client = engine_env
    with pytest.raises(docker.errors.NotFound):
        client.api.inspect_container("nope")
    res = client.api._get(client.api._url("/containers/{0}/logs", "nope"), params={"stdout": 1})
    assert res.status_code == 404 and res.json() == {"message": "No such container: nope"}
    sim = lt.call(lambda: engine.create_container("x1", image="img"))
    res = client.api._get(client.api._url("/containers/{0}/logs", sim.id), params={})
    assert res.status_code == 400
    res = client.api._get(client.api._url("/nonexistent"))
    assert res.status_code == 404 and "message" in res.json()
