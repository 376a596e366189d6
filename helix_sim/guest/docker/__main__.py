"""``python -m helix_sim.guest.docker ARGS``: the guest's ``docker`` (run by its ``bin/docker`` shim)."""

import sys

if __name__ == "__main__":
    # docker-py pulls in paramiko for ssh:// hosts. This CLI only dials unix/tcp sockets, and
    # without it every `docker` call starts in half the time; docker-py treats it as optional.
    sys.modules["paramiko"] = None  # type: ignore[assignment]

from .cli import main  # noqa: E402 - after the paramiko block

if __name__ == "__main__":
    sys.exit(main())
