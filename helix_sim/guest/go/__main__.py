"""``python -m helix_sim.guest.go ARGS``: the guest's ``go`` (run by its ``bin/go`` shim)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
