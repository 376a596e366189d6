"""The simulated Helix API: :mod:`.models` (users, spec tasks, sessions, IDs), :mod:`.rest`
(:class:`HelixApiServer`: the REST endpoints and session provisioning) and :mod:`.stream` (the
WebSocket stream, one :class:`~.stream.StreamClient` per viewer).

Named ``HelixApiServer`` because the harness's client is ``harness.drivers.helix_api.HelixApi``.
"""

from .models import RUNNER_TOKEN, ApiError, new_id, new_ulid
from .rest import HelixApiServer

__all__ = ["ApiError", "HelixApiServer", "RUNNER_TOKEN", "new_id", "new_ulid"]
