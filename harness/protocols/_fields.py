"""Field validation shared by the message dataclasses of every protocol core."""

from __future__ import annotations

from dataclasses import fields

from .errors import LocalProtocolError


def check_int(owner: object, name: str, lo: int, hi: int, *, allow_bool: bool = False) -> None:
    """``owner.name`` must be an int within [lo, hi]; with ``allow_bool`` a bool is stored as 0/1."""
    value = getattr(owner, name)
    if isinstance(value, bool):
        if not allow_bool:
            raise LocalProtocolError(f"{type(owner).__name__}.{name} must be an int, got bool")
        value = int(value)
        object.__setattr__(owner, name, value)
    if not isinstance(value, int):
        raise LocalProtocolError(f"{type(owner).__name__}.{name} must be an int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise LocalProtocolError(f"{type(owner).__name__}.{name}={value} is outside [{lo}, {hi}]")


def unsigned(owner: object, bits: int, *names: str, allow_bool: bool = False) -> None:
    for name in names:
        check_int(owner, name, 0, (1 << bits) - 1, allow_bool=allow_bool)


def signed(owner: object, bits: int, *names: str, allow_bool: bool = False) -> None:
    for name in names:
        check_int(owner, name, -(1 << (bits - 1)), (1 << (bits - 1)) - 1, allow_bool=allow_bool)


def short_repr(self: object) -> str:
    """Dataclass repr with long bytes shown as their size."""
    parts = []
    for f in fields(self):  # type: ignore[arg-type]
        name, value = f.name, getattr(self, f.name)
        if isinstance(value, bytes) and len(value) > 32:
            text = f"<{len(value)} bytes>"
        elif isinstance(value, tuple) and any(isinstance(v, bytes) and len(v) > 32 for v in value):
            text = "(" + "".join(f"<{len(v)} bytes>, " for v in value) + ")"
        else:
            text = repr(value)
        parts.append(f"{name}={text}")
    return f"{type(self).__name__}({', '.join(parts)})"
