"""`docker` in the simulated guest: the docker CLI subset the Helix stack and the harness use.

It talks to the simulator's Docker Engine API (``$DOCKER_HOST``) through docker-py, as the real
CLI talks to dockerd:

- ``docker compose [-f F] [-p P] [--profile P] up -d | ps | exec -T | logs | stop | rm | down | config``
  (compose file + ``COMPOSE_PROFILES`` from the env or the project's ``.env``; containers are
  ``<project>-<service>-1`` with the compose labels);
- ``docker ps``, ``logs``, ``inspect``, ``exec``, ``info``, ``version``, ``start|stop|restart|rm``,
  ``image inspect``;
- ``docker system dial-stdio``: a raw byte pipe between stdin/stdout and the engine socket, which
  docker-py's ``ssh://`` transport runs on the far side of an SSH channel.

Commands run inside containers (``compose exec`` / ``docker exec``) are simulated: ``pg_isready``
in postgres, and ``docker …`` in the sandbox, whose inner dockerd is the same engine seen
through the ``helix.sandbox`` label (the desktop containers live there, not on the VM).
Daemon errors print ``Error response from daemon: <msg>`` and exit 1, as the real CLI does.

Run as ``python -m helix_sim.guest.docker ARGS`` by the guest's ``bin/docker``; it imports
nothing from ``harness`` and imports docker-py only when a command needs it.

By job: :mod:`.cli` (the command line), :mod:`.compose` and :mod:`.compose_project` (``docker compose``
and the project it reads, with :mod:`.yaml_lite`), :mod:`.containers` (the container commands and
what ``exec`` runs inside them), :mod:`.engine` (docker-py against the engine), :mod:`.dial_stdio`,
:mod:`.formatting` (templates, tables, ``--since``), :mod:`.flags`, :mod:`.output`, :mod:`.identity`.
Go's formatting is :mod:`helix_sim.gofmt`.
"""
