"""Engine access: docker-py against ``$DOCKER_HOST``, seen from the VM or from inside a sandbox (whose
inner dockerd is the same engine, through the ``helix.sandbox`` label); daemon errors as the CLI prints them."""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator

from .identity import SANDBOX_LABEL
from .output import CliError


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def cannot_connect() -> CliError:
    return CliError(f"Cannot connect to the Docker daemon at {docker_host()}. Is the docker daemon running?")


class Engine:
    """docker-py against ``$DOCKER_HOST``, seen from the VM (``scope=None``) or from inside a sandbox."""

    def __init__(self, scope: str | None = None) -> None:
        import docker  # noqa: PLC0415 - slow to import; dial-stdio never needs it

        self._docker = docker
        self.scope = scope
        try:
            self.client = docker.DockerClient(base_url=docker_host(), timeout=60)
        except docker.errors.DockerException:
            raise cannot_connect() from None
        self.api = self.client.api

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a docker-py call; daemon errors become ``Error response from daemon: …``."""
        errors = self._docker.errors
        try:
            return fn(*args, **kwargs)
        except errors.APIError as exc:
            raise CliError(f"Error response from daemon: {exc.explanation or exc}") from None
        except (errors.DockerException, OSError):
            raise cannot_connect() from None
        except Exception as exc:  # requests' ConnectionError and friends
            if type(exc).__module__.startswith(("requests", "urllib3")):
                raise cannot_connect() from None
            raise

    def visible(self, summary_or_attrs: dict[str, Any]) -> bool:
        labels = summary_or_attrs.get("Labels")
        if labels is None:
            labels = (summary_or_attrs.get("Config") or {}).get("Labels")
        owner = (labels or {}).get(SANDBOX_LABEL)
        return owner == self.scope if self.scope else owner is None

    def list(self, *, all: bool = False, filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        rows = self.call(self.api.containers, all=all, filters=filters or None)
        return [r for r in rows if self.visible(r)]

    def inspect(self, name: str) -> dict[str, Any]:
        attrs = self.call(self.api.inspect_container, name)
        if not self.visible(attrs):
            raise CliError(f"Error response from daemon: No such container: {name}")
        return attrs

    def find(self, name: str) -> dict[str, Any] | None:
        try:
            return self.inspect(name)
        except CliError:
            return None

    def raw_logs(self, container_id: str, params: dict[str, Any]) -> Iterator[tuple[int, bytes]]:
        """Yield (stream, bytes) from the logs endpoint, demultiplexed as the docker CLI does."""
        url = self.api._url("/containers/{0}/logs", container_id)
        # A follower may sit idle for long: no read timeout then (the client's is 60 s).
        timeout = None if params.get("follow") else self.api.timeout
        res = self.call(self.api._get, url, params=params, stream=True, timeout=timeout)
        self.call(self.api._raise_for_status, res)
        raw = res.raw
        multiplexed = "multiplexed" in res.headers.get("Content-Type", "") or not self._is_tty(container_id)
        try:
            while True:
                if not multiplexed:
                    chunk = raw.read(32 * 1024)
                    if not chunk:
                        return
                    yield 1, chunk
                    continue
                header = raw.read(8)
                if len(header) < 8:
                    return
                stream, size = header[0], int.from_bytes(header[4:8], "big")
                data = raw.read(size) if size else b""
                yield (2 if stream == 2 else 1), data
        finally:
            res.close()

    def _is_tty(self, container_id: str) -> bool:
        return bool(((self.inspect(container_id).get("Config")) or {}).get("Tty"))
