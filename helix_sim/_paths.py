"""Where the simulator's code lives, for the launchers it writes (utmctl, the guest's shims, the built helix CLI)."""

from __future__ import annotations

from pathlib import Path

#: The ``helix_sim`` package directory.
PACKAGE_DIR = Path(__file__).resolve().parent
#: The directory that holds ``helix_sim`` (and ``harness``): what a launcher puts on ``PYTHONPATH``.
IMPORT_ROOT = PACKAGE_DIR.parent
