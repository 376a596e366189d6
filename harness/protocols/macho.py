"""Mach-O load commands: read them (macholib, never ``otool``) and write small, real Mach-O files.

Reading: :func:`read_macho` returns every slice of a thin or fat (universal) binary with its
dylib-related load commands (``LC_ID_DYLIB``, ``LC_LOAD_DYLIB``, ``LC_LOAD_WEAK_DYLIB``,
``LC_REEXPORT_DYLIB``, ``LC_LOAD_UPWARD_DYLIB``, ``LC_LAZY_LOAD_DYLIB``) and ``LC_RPATH`` entries. It works
on any OS, so the doctor can check a QEMU build (macos-frame-export.md §4) from Linux against fixtures.

Writing: :func:`build_macho` makes a thin Mach-O (``mach_header``/``mach_header_64``, a ``__TEXT``
segment whose ``__cstring`` section holds the given strings, and ``dylib_command``/``rpath_command``
load commands with padded path strings); :func:`build_fat` joins thin slices into a universal binary.
The fixtures under ``fixtures/macho/`` and the simulator's fake UTM.app QEMU binary are made with them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import HarnessError

__all__ = [
    "MachOError", "LoadCommand", "MachOSlice", "read_macho", "build_macho", "build_fat",
    "LC_ID_DYLIB", "LC_LOAD_DYLIB", "LC_LOAD_WEAK_DYLIB", "LC_REEXPORT_DYLIB", "LC_LOAD_UPWARD_DYLIB",
    "LC_LAZY_LOAD_DYLIB", "LC_RPATH", "CPU_TYPES", "DEFAULT_VERSION_STRING",
]

# -- constants (<mach-o/loader.h>, <mach-o/fat.h>, <mach/machine.h>) ---------------------------
MH_MAGIC = 0xFEEDFACE
MH_MAGIC_64 = 0xFEEDFACF
FAT_MAGIC = 0xCAFEBABE
MH_EXECUTE = 0x2
MH_DYLIB = 0x6
_MH_FLAGS = 0x1 | 0x4 | 0x80  # MH_NOUNDEFS | MH_DYLDLINK | MH_TWOLEVEL

LC_REQ_DYLD = 0x80000000
LC_SEGMENT = 0x1
LC_SEGMENT_64 = 0x19
LC_LOAD_DYLIB = 0xC
LC_ID_DYLIB = 0xD
LC_LAZY_LOAD_DYLIB = 0x20
LC_LOAD_WEAK_DYLIB = 0x18 | LC_REQ_DYLD
LC_REEXPORT_DYLIB = 0x1F | LC_REQ_DYLD
LC_LOAD_UPWARD_DYLIB = 0x23 | LC_REQ_DYLD
LC_RPATH = 0x1C | LC_REQ_DYLD

#: Load commands that carry a ``dylib_command`` (an install name), by value.
DYLIB_COMMANDS = {
    LC_ID_DYLIB: "LC_ID_DYLIB",
    LC_LOAD_DYLIB: "LC_LOAD_DYLIB",
    LC_LOAD_WEAK_DYLIB: "LC_LOAD_WEAK_DYLIB",
    LC_REEXPORT_DYLIB: "LC_REEXPORT_DYLIB",
    LC_LOAD_UPWARD_DYLIB: "LC_LOAD_UPWARD_DYLIB",
    LC_LAZY_LOAD_DYLIB: "LC_LAZY_LOAD_DYLIB",
}

_ABI64 = 0x01000000
#: name → (cputype, default cpusubtype). A 64-bit cputype needs ``bits=64`` and vice versa.
CPU_TYPES: dict[str, tuple[int, int]] = {
    "arm64": (12 | _ABI64, 0),      # CPU_SUBTYPE_ARM64_ALL
    "arm64e": (12 | _ABI64, 2),     # CPU_SUBTYPE_ARM64E
    "x86_64": (7 | _ABI64, 3),      # CPU_SUBTYPE_X86_64_ALL
    "arm": (12, 9),                 # CPU_SUBTYPE_ARM_V7
    "i386": (7, 3),                 # CPU_SUBTYPE_I386_ALL
}
_CPU_NAMES = {12 | _ABI64: "arm64", 7 | _ABI64: "x86_64", 12: "arm", 7: "i386", 12 | 0x02000000: "arm64_32",
              18: "ppc", 18 | _ABI64: "ppc64"}

#: The version string a current Helix QEMU carries (helix_log format argument, macos-frame-export.md §2).
DEFAULT_VERSION_STRING = b"[HELIX] VERSION: 2026-02-15-v10-ipa-granule-test"

# struct layouts, little-endian (arm64/x86_64 slices); the fat header is big-endian.
_MACH_HEADER = struct.Struct("<IiiIIII")          # 28 B
_MACH_HEADER_64 = struct.Struct("<IiiIIIII")      # 32 B (+ reserved)
_LOAD_COMMAND = struct.Struct("<II")              # cmd, cmdsize
_DYLIB_COMMAND = struct.Struct("<IIIIII")         # cmd, cmdsize, name.offset, timestamp, current, compat (24 B)
_RPATH_COMMAND = struct.Struct("<III")            # cmd, cmdsize, path.offset (12 B)
_SEGMENT = struct.Struct("<II16sIIIIiiII")        # 56 B
_SEGMENT_64 = struct.Struct("<II16sQQQQiiII")     # 72 B
_SECTION = struct.Struct("<16s16sIIIIIIIII")      # 68 B
_SECTION_64 = struct.Struct("<16s16sQQIIIIIIII")  # 80 B
_FAT_HEADER = struct.Struct(">II")
_FAT_ARCH = struct.Struct(">iiIII")
_S_CSTRING_LITERALS = 0x2
_VM_PROT_RX = 0x5


class MachOError(HarnessError):
    """A file is not a Mach-O we can read, or a builder argument is invalid."""

    default_phase = "qemu"


@dataclass(frozen=True, slots=True)
class LoadCommand:
    """One install-name or rpath load command of one slice."""

    kind: str  # "LC_LOAD_DYLIB", "LC_ID_DYLIB", ..., "LC_RPATH"
    cmd: int
    path: str
    index: int  # position among the slice's load commands


@dataclass(frozen=True, slots=True)
class MachOSlice:
    arch: str  # "arm64", "x86_64", "arm", ... or "cputype 0x..."
    bits: int  # 32 | 64
    filetype: str  # macholib's short name: "dylib", "execute", ...
    offset: int  # of the slice within the file (0 for a thin file)
    commands: tuple[LoadCommand, ...]

    @property
    def dylibs(self) -> tuple[LoadCommand, ...]:
        return tuple(c for c in self.commands if c.cmd in DYLIB_COMMANDS)

    @property
    def rpaths(self) -> tuple[LoadCommand, ...]:
        return tuple(c for c in self.commands if c.cmd == LC_RPATH)


# -- reading -------------------------------------------------------------------------------------------
def _arch_name(cputype: int, cpusubtype: int) -> str:
    cputype &= 0xFFFFFFFF
    name = _CPU_NAMES.get(cputype, f"cputype 0x{cputype:x}")
    if name == "arm64" and (cpusubtype & 0x00FFFFFF) == 2:
        return "arm64e"
    return name


def _lc_str(offset: int, fixed_size: int, data: bytes, what: str) -> str:
    """An ``lc_str``: ``offset`` counts from the start of the load command; ``data`` follows its fixed part."""
    start = int(offset) - fixed_size
    if start < 0 or start > len(data):
        raise MachOError(f"{what}: string offset {int(offset)} lies outside its load command")
    raw = data[start:]
    end = raw.find(b"\x00")
    if end >= 0:
        raw = raw[:end]
    return raw.decode("utf-8", "surrogateescape")


def read_macho(path: str | Path) -> tuple[MachOSlice, ...]:
    """Every slice of a thin or fat Mach-O with its install-name and rpath load commands.

    Raises :class:`MachOError` for an unreadable file or anything macholib cannot parse.
    """
    from macholib.MachO import MachO  # imported lazily: the builders need no macholib
    from macholib.ptypes import sizeof

    path = Path(path)
    try:
        macho = MachO(str(path), allow_unknown_load_commands=True)
    except OSError as exc:
        raise MachOError(f"cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - macholib raises assorted errors on foreign bytes
        raise MachOError(f"{path} is not a Mach-O file macholib can parse ({type(exc).__name__}: {exc})") from exc
    slices = []
    for header in macho.headers:
        commands = []
        for index, (lc, cmd, data) in enumerate(header.commands):
            fixed = sizeof(lc.__class__) + sizeof(cmd.__class__)
            where = f"{path} load command #{index}"
            if lc.cmd in DYLIB_COMMANDS:
                text = _lc_str(cmd.name, fixed, data, where)
                commands.append(LoadCommand(DYLIB_COMMANDS[lc.cmd], lc.cmd, text, index))
            elif lc.cmd == LC_RPATH:
                text = _lc_str(cmd.path, fixed, data, where)
                commands.append(LoadCommand("LC_RPATH", lc.cmd, text, index))
        bits = 64 if header.MH_MAGIC in (MH_MAGIC_64, 0xCFFAEDFE) else 32
        slices.append(
            MachOSlice(
                arch=_arch_name(header.header.cputype, header.header.cpusubtype),
                bits=bits,
                filetype=header.filetype,
                offset=header.offset,
                commands=tuple(commands),
            )
        )
    if not slices:
        raise MachOError(f"{path} has no Mach-O slices")
    return tuple(slices)


# -- writing -------------------------------------------------------------------------------------------
def _pad(data: bytes, align: int) -> bytes:
    return data + b"\x00" * (-len(data) % align)


def _cpu(cputype: int | str | None, bits: int) -> tuple[int, int]:
    if cputype is None:
        cputype = "arm64" if bits == 64 else "arm"
    if isinstance(cputype, str):
        if cputype not in CPU_TYPES:
            raise MachOError(f"unknown cputype {cputype!r}", hint=f"one of {', '.join(CPU_TYPES)} or an int")
        value, subtype = CPU_TYPES[cputype]
    elif isinstance(cputype, int) and not isinstance(cputype, bool):
        value, subtype = cputype, 0
    else:
        raise MachOError(f"cputype must be a name or an int, got {type(cputype).__name__}")
    if bool(value & _ABI64) != (bits == 64):
        raise MachOError(f"cputype 0x{value:x} does not fit a {bits}-bit header")
    return value, subtype


def _path_bytes(path: str, what: str) -> bytes:
    if not isinstance(path, str) or not path:
        raise MachOError(f"{what} must be a non-empty str, got {path!r}")
    raw = path.encode("utf-8")
    if b"\x00" in raw:
        raise MachOError(f"{what} must not contain NUL: {path!r}")
    return raw


def _dylib_command(cmd: int, path: str, align: int, what: str) -> bytes:
    name = _path_bytes(path, what) + b"\x00"
    size = _DYLIB_COMMAND.size + len(name)
    size += -size % align  # cmdsize is a multiple of 8 (64-bit) or 4 (32-bit)
    return _pad(_DYLIB_COMMAND.pack(cmd, size, _DYLIB_COMMAND.size, 2, 0x10000, 0x10000) + name, align)


def _rpath_command(path: str, align: int) -> bytes:
    name = _path_bytes(path, "rpath") + b"\x00"
    size = _RPATH_COMMAND.size + len(name)
    size += -size % align
    return _pad(_RPATH_COMMAND.pack(LC_RPATH, size, _RPATH_COMMAND.size) + name, align)


def build_macho(
    dylibs: Sequence[str],
    *,
    id_dylib: str | None = None,
    weak: Sequence[str] = (),
    reexport: Sequence[str] = (),
    rpaths: Sequence[str] = (),
    bits: int = 64,
    cputype: int | str | None = None,
    strings: Iterable[bytes | str] = (DEFAULT_VERSION_STRING,),
) -> bytes:
    """A thin little-endian Mach-O that macholib (and ``otool -L``) read like a linked binary.

    - ``dylibs`` → ``LC_LOAD_DYLIB``, ``weak`` → ``LC_LOAD_WEAK_DYLIB``, ``reexport`` → ``LC_REEXPORT_DYLIB``,
      ``rpaths`` → ``LC_RPATH``; ``id_dylib`` adds ``LC_ID_DYLIB`` and makes the file an ``MH_DYLIB``
      (otherwise ``MH_EXECUTE``), like the QEMU framework binary UTM loads.
    - ``bits`` 64 (``mach_header_64``, commands padded to 8) or 32 (``mach_header``, padded to 4).
    - ``cputype``: a name from :data:`CPU_TYPES` or a raw value; default ``"arm64"`` (64-bit) / ``"arm"`` (32-bit).
    - ``strings`` are written NUL-terminated into ``__TEXT,__cstring``, where a C compiler puts the
      ``helix_log("[HELIX] VERSION: …")`` format argument. Default: the v10 version string.

    The output is deterministic. Bad arguments raise :class:`MachOError`.
    """
    if bits not in (32, 64):
        raise MachOError(f"bits must be 32 or 64, got {bits!r}")
    for name, value in (("dylibs", dylibs), ("weak", weak), ("reexport", reexport), ("rpaths", rpaths)):
        if isinstance(value, (str, bytes)):
            raise MachOError(f"{name} must be a sequence of paths, not a single {type(value).__name__}")
    cpu, subtype = _cpu(cputype, bits)
    align = 8 if bits == 64 else 4
    header_struct = _MACH_HEADER_64 if bits == 64 else _MACH_HEADER
    segment_struct, section_struct = (_SEGMENT_64, _SECTION_64) if bits == 64 else (_SEGMENT, _SECTION)

    blob = b""
    for item in strings:
        raw = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        if b"\x00" in raw:
            raise MachOError(f"a C string must not contain NUL: {raw[:40]!r}")
        blob += raw + b"\x00"

    commands: list[bytes] = []
    if id_dylib is not None:
        commands.append(_dylib_command(LC_ID_DYLIB, id_dylib, align, "id_dylib"))
    commands += [_dylib_command(LC_LOAD_DYLIB, p, align, "dylib path") for p in dylibs]
    commands += [_dylib_command(LC_LOAD_WEAK_DYLIB, p, align, "weak dylib path") for p in weak]
    commands += [_dylib_command(LC_REEXPORT_DYLIB, p, align, "reexport dylib path") for p in reexport]
    commands += [_rpath_command(p, align) for p in rpaths]

    segment_size = segment_struct.size + section_struct.size
    sizeofcmds = segment_size + sum(len(c) for c in commands)
    ncmds = 1 + len(commands)
    strings_off = header_struct.size + sizeofcmds
    strings_off += -strings_off % 16
    file_size = strings_off + len(blob)
    file_size += -file_size % 16
    vm_size = file_size + (-file_size % 0x4000)

    section = section_struct.pack(
        b"__cstring", b"__TEXT", strings_off, len(blob), strings_off, 0, 0, 0, _S_CSTRING_LITERALS, 0, 0,
        *((0,) if bits == 64 else ()),
    )
    segment = segment_struct.pack(
        LC_SEGMENT_64 if bits == 64 else LC_SEGMENT, segment_size, b"__TEXT",
        0, vm_size, 0, file_size, _VM_PROT_RX, _VM_PROT_RX, 1, 0,
    ) + section
    filetype = MH_DYLIB if id_dylib is not None else MH_EXECUTE
    header_fields = [MH_MAGIC_64 if bits == 64 else MH_MAGIC, cpu, subtype, filetype, ncmds, sizeofcmds, _MH_FLAGS]
    if bits == 64:
        header_fields.append(0)
    out = header_struct.pack(*header_fields) + segment + b"".join(commands)
    out = _pad(out, 16) + blob
    return _pad(out, 16)


def build_fat(slices: Sequence[bytes], *, align: int = 12) -> bytes:
    """A universal (fat) binary of thin Mach-O ``slices``, each at a ``2**align`` boundary (lipo uses 14 for arm64)."""
    if not slices:
        raise MachOError("build_fat needs at least one slice")
    if not 0 <= align <= 15:
        raise MachOError(f"align is a power of two exponent 0..15, got {align}")
    archs = []
    for i, data in enumerate(slices):
        data = bytes(data)
        if len(data) < 12:
            raise MachOError(f"slice {i} is too short to be a Mach-O")
        magic_le = struct.unpack_from("<I", data)[0]
        magic_be = struct.unpack_from(">I", data)[0]
        if magic_le in (MH_MAGIC, MH_MAGIC_64):
            cpu, sub = struct.unpack_from("<ii", data, 4)
        elif magic_be in (MH_MAGIC, MH_MAGIC_64):
            cpu, sub = struct.unpack_from(">ii", data, 4)
        else:
            raise MachOError(f"slice {i} is not a thin Mach-O (magic 0x{magic_be:08x})")
        archs.append((cpu, sub, data))
    step = 1 << align
    offset = _FAT_HEADER.size + _FAT_ARCH.size * len(archs)
    table, body = [], b""
    for cpu, sub, data in archs:
        offset += -offset % step
        table.append(_FAT_ARCH.pack(cpu, sub, offset, len(data), align))
        body += b"\x00" * (offset - _FAT_HEADER.size - _FAT_ARCH.size * len(archs) - len(body)) + data
        offset += len(data)
    return _FAT_HEADER.pack(FAT_MAGIC, len(archs)) + b"".join(table) + body
