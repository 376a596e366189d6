"""The helix CLI's own waits, set by the simulator through the guest's environment.

The real CLI has them compiled in (spectask.go: ``--wait`` polls every 2 s for 3 minutes; the stream
prints a Live Statistics block every 2 s). The simulator passes its config (``SimConfig.cli_*`` and
``delay_scale``, rendered into the guest's ``guest-env.sh``) as ``HELIX_SIM_*`` variables, so a test
sets them through the config instead of patching this program. Missing or invalid values fall back
to the real CLI's.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping

#: Field of :class:`CliTiming` → the environment variable that carries it.
ENV_NAMES = {
    "wait_poll_s": "HELIX_SIM_CLI_WAIT_POLL_S",
    "wait_timeout_s": "HELIX_SIM_CLI_WAIT_TIMEOUT_S",
    "stats_interval_s": "HELIX_SIM_CLI_STATS_INTERVAL_S",
    "delay_scale": "HELIX_SIM_DELAY_SCALE",
}
#: Accepted range of each value (outside it: the default).
_LIMITS = {"wait_poll_s": (0.001, 3600.0), "wait_timeout_s": (0.001, 86400.0), "stats_interval_s": (0.001, 3600.0),
           "delay_scale": (0.01, 10.0)}


@dataclass(frozen=True)
class CliTiming:
    #: ``start --wait``: the poll interval of waitForTaskSession (scaled by ``delay_scale``).
    wait_poll_s: float = 2.0
    #: ``start --wait``: how long it waits for the sandbox before it gives up (and still exits 0).
    wait_timeout_s: float = 180.0
    #: ``stream``: its ticker, one Live Statistics block this often (without ``-v``).
    stats_interval_s: float = 2.0
    #: ``SimConfig.delay_scale``: scales the modelled waits (the poll interval).
    delay_scale: float = 1.0

    @property
    def wait_poll(self) -> float:
        """The ``--wait`` poll interval in seconds, scaled."""
        return self.wait_poll_s * self.delay_scale

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "CliTiming":
        values: dict[str, float] = {}
        for name, var in ENV_NAMES.items():
            try:
                value = float(env[var])
            except (KeyError, ValueError):
                continue
            low, high = _LIMITS[name]
            if low <= value <= high:
                values[name] = value
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The ``HELIX_SIM_*`` variables that carry these values (what :meth:`from_env` reads)."""
        return {ENV_NAMES[f.name]: repr(float(getattr(self, f.name))) for f in fields(self)}
