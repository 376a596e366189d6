"""Helix WebSocket stream messages (sans-I/O).

The payloads of ``/api/v1/external-agents/{sid}/ws/stream`` (reference: helix-stream.md §4). The WS
framing itself belongs to ``websockets``/aiohttp; this module only turns message payloads into events
and back. Most binary messages are big-endian; cursor/presence messages (0x50, 0x51, 0x54, 0x58) are
little-endian, so every layout below carries its own byte order.

``StreamConnection(role)`` tracks ``AWAITING_INIT → STREAMING → CLOSED`` for either end.

Other viewers of the same session are normal traffic (upstream-corrections.md §1): 0x58 SelfId, 0x54
RemoteUser joined and the 6-byte ``RemoteUserLeft``, and the cursor/presence messages 0x50, 0x51, 0x53
``RemoteCursor``, 0x55 ``AgentCursor`` and 0x56 ``RemoteTouch`` can arrive at any point. Until the first
frame a newer server sends a text ``StreamStatus`` (``state: "starting_video"``). Any other binary type is
an ``UnknownMessage`` (lossless), any other text a ``TextMessage``. Only real errors raise
``RemoteProtocolError``: a malformed video frame header, or a known fixed layout that is cut short or too
long. ``classify()`` and ``StreamTally`` give the live capture and the offline ``analyze`` one rule for
what is a viewer event, a status message and an error.
"""

from __future__ import annotations

from .binary import *  # noqa: F401,F403
from .binary import __all__ as _binary
from .connection import *  # noqa: F401,F403
from .connection import __all__ as _connection
from .parse import *  # noqa: F401,F403
from .parse import __all__ as _parse
from .tally import *  # noqa: F401,F403
from .tally import __all__ as _tally
from .text import *  # noqa: F401,F403
from .text import __all__ as _text

__all__ = [*_binary, *_text, *_parse, *_connection, *_tally]
