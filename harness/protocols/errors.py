"""Protocol errors: whose fault it was (h11 style).

``LocalProtocolError``: we misused a protocol (an invalid event, a send in the wrong state).
``RemoteProtocolError``: the peer sent bad bytes. Fuzz contract for every parser in
``harness.protocols``: any input yields events or a ``RemoteProtocolError``; anything else is a bug.
"""

from __future__ import annotations

from ..errors import HarnessError


class ProtocolError(HarnessError):
    """Base of protocol errors; abstract, raise a subclass. ``.data`` holds the offending bytes."""

    default_phase = "protocol"

    def __init__(
        self,
        message: str,
        *,
        data: bytes | None = None,
        phase: str | None = None,
        hint: str | None = None,
    ) -> None:
        if type(self) is ProtocolError:
            raise TypeError("ProtocolError is abstract: raise LocalProtocolError or RemoteProtocolError")
        super().__init__(message, phase=phase, hint=hint)
        self.data = bytes(data) if data is not None else None


class LocalProtocolError(ProtocolError):
    """We misused the protocol (an invalid event, or an event not allowed in this state)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol."""
