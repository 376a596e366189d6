"""The desktop's errors: what it refuses, when it is unreachable (the API answers 503), and a failed stream start."""

from __future__ import annotations

from ..errors import SimError


class DesktopError(SimError):
    """Something the simulated desktop refuses or cannot do."""

    default_phase = "desktop"


class DesktopUnavailable(DesktopError):
    """The desktop (its container, its desktop-bridge) is not there: the API answers 503."""


class StreamStartError(DesktopError):
    """Starting the video for a viewer failed: the API sends this message as a 0x31 StreamError."""

    default_phase = "stream"
