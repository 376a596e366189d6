"""desktop-bridge's viewer registry (``api/pkg/desktop/session_registry.go``): who watches the session's stream.

Every viewer whose init carries a ``session_id`` registers when its stream starts: it gets a 0x58 SelfId,
then a 0x54 RemoteUser *joined* goes to every viewer (itself included), then one *joined* per existing
viewer goes to it. When a viewer's socket ends, every remaining viewer gets the 6-byte 0x54 *left*. A
viewer counts as active only when it sends a data message (WS ping/pong control frames do not count); the
stale sweep (every ``stale_sweep_interval_s``) drops one silent for longer than ``stale_client_timeout_s``
and tells the others it left, although its socket stays open and frames keep flowing to it. A re-joining
``client_unique_id`` evicts the old viewer (0x54 left, its TCP connection closed).

IDs come from one counter per desktop-bridge process (starting at 1); colours from the Figma palette,
per session. Messages are built with :mod:`harness.protocols.stream`; the registry hands them to each
viewer's ``deliver`` callback (which must not block). Its log lines are zerolog JSON (``[MULTIPLAYER]``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from harness.protocols.stream import REMOTE_USER_JOINED, Event, RemoteUser, RemoteUserLeft, SelfId

log = logging.getLogger("helix_sim.desktop")

#: session_registry.go userColors (Figma-style palette), assigned round-robin per session.
USER_COLORS = (
    "#F24822", "#FF7262", "#FFCD29", "#14AE5C", "#0D99FF", "#9747FF",
    "#FF6B6B", "#4ECDC4", "#45B7D1", "#96CEB4", "#FFEAA7", "#DDA0DD",
)
#: ws_stream.go Start: the name of a viewer whose init has no user_name.
DEFAULT_USER_NAME = "User"


@dataclass
class Viewer:
    """One registered viewer (``ConnectedClient``)."""

    id: int
    name: str
    color: str
    avatar: str
    user_id: str
    unique_id: str
    deliver: Callable[[Event], None] = field(repr=False)
    evict: Callable[[], None] = field(repr=False)
    last_seen: float = 0.0

    def joined(self) -> RemoteUser:
        """The 0x54 joined message that announces this viewer (names and URLs cut to their length fields)."""
        return RemoteUser(REMOTE_USER_JOINED, self.id, _cut(self.name, 0xFF), _cut(self.color, 0xFF),
                          _cut(self.avatar, 0xFFFF))


def _cut(text: str, limit: int) -> str:
    """At most ``limit`` UTF-8 bytes (Go writes the length into a u8/u16 field)."""
    raw = text.encode("utf-8")
    return text if len(raw) <= limit else raw[:limit].decode("utf-8", "ignore")


class ViewerRegistry:
    """The viewers of one desktop's session (the registry of its desktop-bridge process)."""

    def __init__(
        self,
        session_id: str,
        *,
        stale_timeout_s: float = 30.0,
        zerolog: Callable[..., None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session_id = session_id
        self.stale_timeout_s = stale_timeout_s
        self._zerolog = zerolog or (lambda level, message, **fields: None)
        self._clock = clock
        self._next_id = 0
        self._color_idx = 0
        self._viewers: dict[int, Viewer] = {}

    @property
    def viewers(self) -> list[Viewer]:
        return list(self._viewers.values())

    def __contains__(self, viewer_id: int) -> bool:
        return viewer_id in self._viewers

    def register(
        self,
        *,
        name: str = "",
        avatar: str = "",
        user_id: str = "",
        unique_id: str = "",
        deliver: Callable[[Event], None],
        evict: Callable[[], None],
    ) -> Viewer:
        """RegisterClient: evict a viewer with the same ``unique_id``, then SelfId, joined to all, existing users."""
        name = name or DEFAULT_USER_NAME
        self._zerolog("info", "[MULTIPLAYER] RegisterClient called", sessionID=self.session_id, userID=user_id,
                      userName=name, clientUniqueID=unique_id)
        if unique_id:
            for old in [v for v in self._viewers.values() if v.unique_id == unique_id]:
                self._zerolog("info", "[MULTIPLAYER] Evicting stale client (same clientUniqueID reconnected)",
                              sessionID=self.session_id, evictedClientID=old.id, clientUniqueID=unique_id)
                del self._viewers[old.id]
                self._broadcast_left(old.id)
                old.evict()
        self._next_id += 1
        color = USER_COLORS[self._color_idx % len(USER_COLORS)]
        self._color_idx += 1
        viewer = Viewer(self._next_id, name, color, avatar, user_id, unique_id, deliver, evict, self._clock())
        self._viewers[viewer.id] = viewer
        viewer.deliver(SelfId(viewer.id))
        self._zerolog("info", "[MULTIPLAYER] sendSelfId: sent to client", clientID=viewer.id)
        joined = viewer.joined()
        for other in list(self._viewers.values()):  # everyone, the new viewer included
            other.deliver(joined)
        self._zerolog("info", "[MULTIPLAYER] broadcastUserJoined", sessionID=self.session_id, newClientID=viewer.id,
                      userName=name, sentTo=len(self._viewers))
        for other in list(self._viewers.values()):
            if other.id != viewer.id:
                viewer.deliver(other.joined())
                self._zerolog("info", "[MULTIPLAYER] sendExistingUsers: sent existing user to new client",
                              newClientID=viewer.id, existingClientID=other.id, existingUserName=other.name)
        log.debug("session %s: viewer %d registered (%d viewers)", self.session_id, viewer.id, len(self._viewers))
        return viewer

    def unregister(self, viewer_id: int) -> bool:
        """UnregisterClient: the others hear it left, unless it was already removed (evicted, swept)."""
        if self._viewers.pop(viewer_id, None) is None:
            return False
        self._broadcast_left(viewer_id)
        return True

    def touch(self, viewer_id: int) -> None:
        """UpdateClientActivity: a data message arrived (a swept viewer is not re-added)."""
        viewer = self._viewers.get(viewer_id)
        if viewer is not None:
            viewer.last_seen = self._clock()

    def sweep(self) -> list[int]:
        """cleanupStaleClients' tick: drop viewers silent for longer than the timeout; returns their ids."""
        now = self._clock()
        stale = [v.id for v in self._viewers.values() if now - v.last_seen > self.stale_timeout_s]
        for viewer_id in stale:
            self._zerolog("info", "[MULTIPLAYER] Removing stale client", sessionID=self.session_id,
                          clientID=viewer_id, timeout=self.stale_timeout_s * 1000)
            del self._viewers[viewer_id]
            self._broadcast_left(viewer_id)
        return stale

    def _broadcast_left(self, viewer_id: int) -> None:
        left = RemoteUserLeft(viewer_id)
        for viewer in list(self._viewers.values()):
            viewer.deliver(left)

    def snapshot(self) -> list[dict[str, Any]]:
        """The registered viewers, for tests and logs."""
        return [{"id": v.id, "name": v.name, "color": v.color, "last_seen": v.last_seen} for v in self._viewers.values()]
