"""The programs that run inside the simulated guest, each a package run with ``python -m``:
``docker`` (:mod:`.docker`), ``go`` (:mod:`.go`) and the built ``helix`` CLI (:mod:`.helix`).

They are separate processes started over SSH: they import nothing heavy at start-up and nothing
from ``harness``.
"""
