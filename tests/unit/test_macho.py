"""harness.protocols.macho: the builders write Mach-O that macholib reads back exactly; the committed fixtures are current."""

from __future__ import annotations

import importlib.util
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from harness.protocols.macho import (
    DEFAULT_VERSION_STRING,
    LC_ID_DYLIB,
    LC_LOAD_DYLIB,
    LC_LOAD_WEAK_DYLIB,
    LC_REEXPORT_DYLIB,
    LC_RPATH,
    MachOError,
    build_fat,
    build_macho,
    read_macho,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "macho"
SYSROOT_JPEG = "/Users/luke/pm/UTM/sysroot-macOS-arm64/lib/libjpeg.62.dylib"


def _write(tmp_path: Path, data: bytes, name: str = "bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _load_commands(data: bytes, offset: int = 0) -> list[tuple[int, int]]:
    """(cmd, cmdsize) of every load command, parsed by hand (independent of macholib)."""
    magic = struct.unpack_from("<I", data, offset)[0]
    header = 32 if magic == 0xFEEDFACF else 28
    ncmds = struct.unpack_from("<I", data, offset + 16)[0]
    pos, out = offset + header, []
    for _ in range(ncmds):
        cmd, size = struct.unpack_from("<II", data, pos)
        out.append((cmd, size))
        pos += size
    return out


def test_thin_64_round_trip(tmp_path):
    data = build_macho(
        ["/usr/lib/libSystem.B.dylib", SYSROOT_JPEG],
        id_dylib="@rpath/qemu-aarch64-softmmu.framework/Versions/A/qemu-aarch64-softmmu",
        weak=["@rpath/w.framework/Versions/A/w"],
        reexport=["/System/Library/Frameworks/Metal.framework/Versions/A/Metal"],
        rpaths=["@loader_path/../../.."],
    )
    assert data[:4] == bytes.fromhex("cffaedfe")  # MH_MAGIC_64, little-endian
    (sl,) = read_macho(_write(tmp_path, data))
    assert (sl.arch, sl.bits, sl.filetype, sl.offset) == ("arm64", 64, "dylib", 0)
    assert [(c.cmd, c.path) for c in sl.commands] == [
        (LC_ID_DYLIB, "@rpath/qemu-aarch64-softmmu.framework/Versions/A/qemu-aarch64-softmmu"),
        (LC_LOAD_DYLIB, "/usr/lib/libSystem.B.dylib"),
        (LC_LOAD_DYLIB, SYSROOT_JPEG),
        (LC_LOAD_WEAK_DYLIB, "@rpath/w.framework/Versions/A/w"),
        (LC_REEXPORT_DYLIB, "/System/Library/Frameworks/Metal.framework/Versions/A/Metal"),
        (LC_RPATH, "@loader_path/../../.."),
    ]
    assert [c.kind for c in sl.dylibs] == ["LC_ID_DYLIB", "LC_LOAD_DYLIB", "LC_LOAD_DYLIB", "LC_LOAD_WEAK_DYLIB",
                                           "LC_REEXPORT_DYLIB"]
    assert [c.path for c in sl.rpaths] == ["@loader_path/../../.."]
    assert all(size % 8 == 0 for _, size in _load_commands(data))
    assert DEFAULT_VERSION_STRING + b"\x00" in data


def test_thin_32_and_executable(tmp_path):
    data = build_macho(["/usr/lib/libSystem.B.dylib"], reexport=["/Users/x/liby.dylib"], rpaths=["abc"], bits=32)
    assert data[:4] == bytes.fromhex("cefaedfe")  # MH_MAGIC, little-endian
    (sl,) = read_macho(_write(tmp_path, data))
    assert (sl.arch, sl.bits, sl.filetype) == ("arm", 32, "execute")
    assert [c.path for c in sl.commands] == ["/usr/lib/libSystem.B.dylib", "/Users/x/liby.dylib", "abc"]
    assert all(size % 4 == 0 for _, size in _load_commands(data))


def test_fat_slices(tmp_path):
    arm64 = build_macho(["/usr/lib/libSystem.B.dylib"], strings=(b"[HELIX] VERSION: a",))
    x86 = build_macho([SYSROOT_JPEG], cputype="x86_64", strings=(b"[HELIX] VERSION: b",))
    data = build_fat([arm64, x86])
    assert data[:8] == bytes.fromhex("cafebabe00000002")
    slices = read_macho(_write(tmp_path, data))
    assert [s.arch for s in slices] == ["arm64", "x86_64"]
    assert [s.offset % 4096 for s in slices] == [0, 0]
    assert [s.commands[0].path for s in slices] == ["/usr/lib/libSystem.B.dylib", SYSROOT_JPEG]
    assert data[slices[1].offset : slices[1].offset + len(x86)] == x86


def test_strings_go_into_cstring_and_output_is_deterministic():
    a = build_macho([], strings=("[HELIX] VERSION: x", b"second"))
    assert b"[HELIX] VERSION: x\x00second\x00" in a
    assert a == build_macho([], strings=("[HELIX] VERSION: x", b"second"))
    assert b"[HELIX]" not in build_macho([], strings=())


@pytest.mark.parametrize(
    "call",
    [
        lambda: build_macho([], bits=16),
        lambda: build_macho([], bits=32, cputype="x86_64"),
        lambda: build_macho([], cputype="vax"),
        lambda: build_macho(["/a\x00b"]),
        lambda: build_macho([""]),
        lambda: build_macho("/usr/lib/libSystem.B.dylib"),
        lambda: build_macho([], strings=(b"a\x00b",)),
        lambda: build_fat([]),
        lambda: build_fat([b"not a mach-o at all"]),
    ],
)
def test_builder_rejects_bad_arguments(call):
    with pytest.raises(MachOError):
        call()


def test_read_rejects_what_is_not_macho(tmp_path):
    with pytest.raises(MachOError, match="cannot read"):
        read_macho(tmp_path / "missing")
    with pytest.raises(MachOError, match="not a Mach-O"):
        read_macho(_write(tmp_path, b"#!/bin/sh\necho hi\n"))
    with pytest.raises(MachOError):
        read_macho(_write(tmp_path, b""))


def test_truncated_files_raise_macho_error_only(tmp_path):
    data = (FIXTURES / "qemu-32bit").read_bytes()
    path = tmp_path / "cut"
    for cut in range(0, len(data), 4):
        path.write_bytes(data[:cut])
        try:
            read_macho(path)
        except MachOError:
            pass


def _make_fixtures_module():
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_fixtures_match_the_generator():
    built = _make_fixtures_module().build_all()
    assert set(built) == {p.name for p in FIXTURES.iterdir() if p.name.startswith("qemu-")}
    for name, data in built.items():
        assert (FIXTURES / name).read_bytes() == data, f"{name} is out of date: run fixtures/macho/make_fixtures.py"


@pytest.mark.skipif(shutil.which("llvm-objdump") is None, reason="llvm-objdump not installed")
def test_llvm_objdump_accepts_every_fixture():
    for path in sorted(FIXTURES.glob("qemu-*")):
        proc = subprocess.run(["llvm-objdump", "--macho", "--private-headers", str(path)],
                              capture_output=True, text=True, timeout=10)
        assert proc.returncode == 0, f"{path.name}: {proc.stderr}"
        assert "malformed" not in proc.stderr
