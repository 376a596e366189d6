"""The guest's Docker Engine: an Engine API subset on a unix socket, for docker-py 7.x.

Two faces over one container table:

- **REST** (aiohttp on ``docker.sock``), what the guest's ``docker`` shim and the harness's
  docker-py talk to: ``/_ping``, ``/version``, ``/info``, ``/containers/json``,
  ``/containers/create``, ``/containers/{id}/start|stop|restart|kill|json|logs``,
  ``DELETE /containers/{id}``, ``/images/{name}/json``. Every path also answers under a
  ``/v1.NN`` prefix, as dockerd does. Errors are ``{"message": ...}`` with dockerd's status codes.
- **In-process**, for other sim modules: :meth:`DockerEngine.create_container`, :meth:`get`,
  :meth:`remove`, :meth:`on_service_start`, :meth:`on_service_stop`, :meth:`reset`, and on a
  :class:`SimContainer`: :meth:`~SimContainer.log`, :meth:`~SimContainer.exit`, :meth:`~SimContainer.restart`.

Logs are sent as dockerd does for non-TTY containers: an 8-byte header per frame
(``>BxxxL``: stream 1 = stdout, 2 = stderr; payload length), optional RFC 3339 timestamps,
``since``/``until``/``tail``/``follow``.

Fault ``stack_fails``: starting the compose service ``api`` fails with dockerd's 500
"port is already allocated" error, so ``docker compose up`` (and ``./stack start``) fail the way
they do on a VM where something else holds the API port.
"""

from .container import EngineError, LogEntry, SimContainer
from .engine import DockerEngine

__all__ = ["DockerEngine", "EngineError", "LogEntry", "SimContainer"]
