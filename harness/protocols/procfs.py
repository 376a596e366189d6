"""``/proc/<pid>/stat`` (proc(5)): the process state a desktop's exec API can read with ``cat``.

The line is ``pid (comm) state ppid …``; ``comm`` may itself hold spaces and parentheses, so the state is
the first field after the *last* ``)``. States: R running, S sleeping, D disk sleep, Z zombie, T stopped,
t tracing stop, X dead, I idle.
"""

from __future__ import annotations

from .errors import RemoteProtocolError

STATES = frozenset("RSDZTtXxKWPI")


def proc_state(stat_line: str) -> str:
    """The one-letter state of a ``/proc/<pid>/stat`` line; ``RemoteProtocolError`` when it is not one."""
    text = stat_line.strip()
    close = text.rfind(")")
    if close < 0 or "(" not in text[:close]:
        raise RemoteProtocolError(f"not a /proc/<pid>/stat line: {text[:80]!r}")
    rest = text[close + 1:].split()
    if not rest or rest[0] not in STATES:
        raise RemoteProtocolError(f"no process state after the command name in {text[:80]!r}")
    return rest[0]
