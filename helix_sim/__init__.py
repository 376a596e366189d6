"""helix_sim: the far end of the wire for helix-e2e, a simulated Mac host, UTM VM, QEMU and Helix stack.

Laid out by place (docs/design.md "The simulator"): :mod:`.host` (UTM.app, utmctl, QEMU),
:mod:`.vm` (the sshd guest), :mod:`.guest` (docker, go and helix run inside it), :mod:`.stack`
(Docker engine, Helix API), :mod:`.desktop` (a session's desktop and its video), with
:mod:`.simulator` composing them, :mod:`.config` (``SimConfig``, ``FAULTS``), :mod:`.recordings`
and :mod:`.gofmt` (Go's formatting, shared). It imports nothing from ``harness`` but
``harness.protocols``.

The public names below load lazily: ``import helix_sim`` (which every guest program pays for)
stays cheap, and ``helix_sim.config`` never pulls in PyAV, numpy or aiohttp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name → the module that defines it.
_EXPORTS = {
    "CLI_GENERATIONS": "config",
    "FAULTS": "config",
    "QEMU_BEHAVIOURS": "config",
    "VIDEO_MODES": "config",
    "SimConfig": "config",
    "parse_faults": "config",
    "Simulator": "simulator",
    "synthesize_recording": "recordings",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from .config import CLI_GENERATIONS, FAULTS, QEMU_BEHAVIOURS, VIDEO_MODES, SimConfig, parse_faults
    from .recordings import synthesize_recording
    from .simulator import Simulator


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'helix_sim' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return list(__all__)
