"""``python -m helix_sim.guest.helix ARGS``: the built ``helix`` CLI (the launcher ``go build`` writes runs this)."""

import signal
import sys

from .cli import main

if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # before the stream installs its handler, as in Go
    try:
        sys.exit(main())
    except BrokenPipeError:
        sys.exit(1)
