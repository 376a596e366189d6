"""The simulator's import contract (docs/design.md "The simulator"), read from the source with ``ast``.

- ``helix_sim`` is the far end of the wire: from ``harness`` it imports ``harness.protocols`` (the shared
  wire formats) and nothing else.
- The programs run inside the guest (``helix_sim.guest``) are separate processes: they import nothing
  from ``harness`` and, of the simulator, only each other, ``helix_sim.gofmt`` and ``helix_sim._paths``.
- ``helix_sim`` and ``helix_sim.config`` stay light: no PyAV, numpy or aiohttp when imported.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import helix_sim

PACKAGE = Path(helix_sim.__file__).resolve().parent
GUEST_MAY_IMPORT = ("helix_sim.guest", "helix_sim.gofmt", "helix_sim._paths")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    return _imports_of(path.read_text(encoding="utf-8"), _module_name(path), is_package=path.name == "__init__.py")


def _imports_of(source: str, module: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in ``source``, relative ones resolved; ``from X import name``
    yields ``X.name`` too, as ``name`` may be a submodule."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names if alias.name != "*")
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_the_sources_are_found():
    names = {_module_name(p) for p in SOURCES}
    assert {"helix_sim.simulator", "helix_sim.stack.api.rest", "helix_sim.guest.helix.cli"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: _module_name(p))
def test_helix_sim_imports_only_harness_protocols(path):
    bad = []
    for line, name in _imports(path):
        if not _within(name, "harness"):
            continue
        if name == "harness" or _within(name, "harness.protocols"):
            continue
        bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {name}")
    # `from harness import protocols` resolves to "harness" + "harness.protocols": both allowed above;
    # any other `from harness import X` shows up as harness.X and is reported.
    assert not bad, "helix_sim may import only harness.protocols:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", sorted((PACKAGE / "guest").rglob("*.py")), ids=lambda p: _module_name(p))
def test_guest_programs_import_only_themselves(path):
    bad = [f"{path.relative_to(PACKAGE.parent)}:{line}: {name}" for line, name in _imports(path)
           if (_within(name, "harness") or _within(name, "helix_sim"))
           and name != "helix_sim" and not any(_within(name, ok) for ok in GUEST_MAY_IMPORT)]
    assert not bad, "a guest program imports the simulator or the harness:\n" + "\n".join(bad)


def test_the_import_reader_resolves_relative_and_sees_harness_imports():
    source = ("from ...errors import SimError\nfrom harness.deadline import poll_until\n"
              "import harness.protocols.stream\nfrom harness import drivers\n")
    found = _imports_of(source, "helix_sim.stack.api.rest")
    assert (1, "helix_sim.errors") in found and (2, "harness.deadline") in found
    assert (3, "harness.protocols.stream") in found and (4, "harness.drivers") in found


def test_importing_helix_sim_and_its_config_stays_light():
    code = ("import sys, helix_sim, helix_sim.config\n"
            "from helix_sim import SimConfig, FAULTS, parse_faults\n"
            "heavy = [m for m in ('av', 'numpy', 'cv2', 'aiohttp', 'harness') if m in sys.modules]\n"
            "print(','.join(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == ""


def test_every_fault_names_the_module_that_implements_it():
    from helix_sim.config import FAULTS

    names = {_module_name(p) for p in SOURCES}
    unknown = {f.name: f.place for f in FAULTS.values() if f"helix_sim.{f.place}" not in names}
    assert not unknown, f"FAULTS places that are no helix_sim module: {unknown}"
