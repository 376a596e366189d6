"""The import contract of ``harness`` and ``helix_sim``, as a test.

Every import of every module of both packages is read with ``ast``: module level and inside
functions (lazy imports count), ``from . import x`` resolved against the importing module, and
``importlib.import_module("…")`` with a literal name. Then:

- **Layers.** Within ``harness`` a module may import its own layer and the layers below it in
  :data:`LAYERS`, never one above. Packages on one line of the table are peers.
- **Forbidden although below.** :data:`FORBIDDEN` lists imports the layers would allow but the
  design does not (checks and reports read the run record, they do not drive anything).
- **The simulator.** ``helix_sim`` imports from ``harness`` only ``harness.protocols`` (the shared
  wire and file formats); within ``harness`` only :data:`SIM_USERS` import ``helix_sim`` (they
  provision one: ``harness.runs.provision`` launches ``python -m helix_sim up``).

A failure names the importing module, the line, the imported module and the rule it breaks.
Every ``harness`` module must belong to a layer, so a new package is placed in the table on purpose.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "helix_sim")

#: Layers of ``harness``, top to bottom, one per line: (name, packages or modules). A module may
#: import modules of its own layer and of the layers below it, never of a layer above. An entry
#: covers its submodules; ``harness`` alone is the package's own ``__init__``.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("cli", ("harness.cli",)),
    ("plugin", ("harness.plugin",)),
    ("runs", ("harness.runs",)),  # provisioning, the in-process runner, soak
    ("verdict/report", ("harness.verdict", "harness.report")),  # what a run means and how it is shown
    ("strategy", ("harness.strategy", "harness.record")),  # the state machine and its typed run record
    ("doctor", ("harness.doctor",)),  # beside the drivers: preflight checks that use them
    ("drivers", ("harness.drivers",)),
    ("analysis", ("harness.analysis",)),
    ("protocols", ("harness.protocols",)),  # sans-I/O wire and file formats (the simulator's too)
    ("base", ("harness", "harness.errors", "harness.deadline", "harness.causes", "harness.config", "harness.redact",
              "harness.timeline", "harness.usercreds")),
]

#: (importer prefix, imported prefix, why): forbidden although the layers allow them.
FORBIDDEN: list[tuple[str, str, str]] = [
    ("harness.verdict", "harness.strategy", "checks are pure functions of the run record, not of the strategy"),
    ("harness.verdict", "harness.drivers", "checks do no I/O: the strategy collects the evidence through the drivers"),
    ("harness.report", "harness.strategy", "reports read the run record, not the strategy"),
    ("harness.report", "harness.drivers", "reports do no I/O: the strategy collects the evidence through the drivers"),
]

#: What ``helix_sim`` may import from ``harness``.
SIM_MAY_IMPORT = ("harness.protocols",)
#: The ``harness`` packages that may import ``helix_sim``.
SIM_USERS = ("harness.cli", "harness.runs")

#: Violations of today's code, as (importer, imported) modules: to be removed by the restructure
#: (issue 10). The test fails on any other violation, and on an entry here that no longer happens.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int


@dataclass(frozen=True)
class Violation:
    importer: str
    imported: str
    line: int
    rule: str

    def __str__(self) -> str:
        return f"{self.importer} (line {self.line}) imports {self.imported}: {self.rule}"


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name → (file, is a package ``__init__``), for both packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def imports_of(name: str, path: Path, is_package: bool, known: dict) -> list[Import]:
    """Every import in the module, anywhere in it, resolved to a dotted module name."""
    package = name if is_package else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [Import(name, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:  # `from pkg import submodule` imports that submodule
                sub = f"{base}.{alias.name}"
                out.append(Import(name, sub if sub in known else base, node.lineno))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and not node.args[0].value.startswith(".")):
            out.append(Import(name, node.args[0].value, node.lineno))
    return out


def all_imports() -> list[Import]:
    """Each (importer, imported, line) once (``from x import a, b`` is one import of x)."""
    known = modules()
    found = [imp for name, (path, is_pkg) in known.items() for imp in imports_of(name, path, is_pkg, known)]
    return list(dict.fromkeys(found))


def layer_of(module: str) -> int | None:
    """The index in LAYERS of the longest entry covering ``module``."""
    best: tuple[int, int] | None = None  # (entry length, layer)
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            covers = module == entry if entry == "harness" else _within(module, entry)
            if covers and (best is None or len(entry) > best[0]):
                best = (len(entry), index)
    return None if best is None else best[1]


def check(imp: Import) -> str | None:
    """The rule ``imp`` breaks, or None."""
    src, dst = imp.importer, imp.imported
    if _within(src, "helix_sim"):
        if _within(dst, "harness") and not any(_within(dst, ok) for ok in SIM_MAY_IMPORT):
            return f"helix_sim may import only {', '.join(SIM_MAY_IMPORT)} from harness"
        return None
    if not _within(src, "harness"):
        return None
    if _within(dst, "helix_sim"):
        if not any(_within(src, user) for user in SIM_USERS):
            return f"only {' and '.join(SIM_USERS)} may import helix_sim (provisioning)"
        return None
    if not _within(dst, "harness"):
        return None
    for importer, imported, why in FORBIDDEN:
        if _within(src, importer) and _within(dst, imported):
            return f"{importer} must not import {imported}: {why}"
    src_layer, dst_layer = layer_of(src), layer_of(dst)
    if src_layer is None or dst_layer is None:
        return None  # reported by test_every_harness_module_has_a_layer
    if dst_layer < src_layer:
        return (f"layer `{LAYERS[src_layer][0]}` must not import layer `{LAYERS[dst_layer][0]}` above it "
                f"(harness layers point one way: {' → '.join(name for name, _ in LAYERS)})")
    return None


def violations() -> list[Violation]:
    found = []
    for imp in all_imports():
        rule = check(imp)
        if rule is not None:
            found.append(Violation(imp.importer, imp.imported, imp.line, rule))
    return found


# -- the contract --------------------------------------------------------------------------------------


def test_every_harness_module_has_a_layer() -> None:
    missing = sorted(name for name in modules() if _within(name, "harness") and layer_of(name) is None)
    assert not missing, f"modules in no layer of LAYERS (place them in the table): {missing}"


def test_imports_follow_the_contract() -> None:
    new = [v for v in violations() if (v.importer, v.imported) not in KNOWN_VIOLATIONS]
    assert not new, "import contract broken:\n" + "\n".join(map(str, new))


def test_known_violations_still_exist() -> None:
    """An entry of KNOWN_VIOLATIONS that no longer happens must go (the set only shrinks)."""
    happening = {(v.importer, v.imported) for v in violations()}
    gone = sorted(KNOWN_VIOLATIONS - happening)
    assert not gone, f"fixed, remove from KNOWN_VIOLATIONS: {gone}"


# -- the checker itself ----------------------------------------------------------------------------------


def test_the_checker_sees_lazy_and_relative_imports(tmp_path) -> None:
    """A lazy relative import inside a function is found and resolved, and classified by the rules."""
    pkg = tmp_path / "harness" / "drivers"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    source = "import os\n\ndef f():\n    from ..plugin import hooks\n    from .. import strategy\n    from . import ssh\n"
    (pkg / "fake.py").write_text(source)
    known = {"harness.plugin.hooks": None, "harness.strategy": None, "harness.drivers.ssh": None}
    found = imports_of("harness.drivers.fake", pkg / "fake.py", False, known)
    assert [(i.imported, i.line) for i in found] == [
        ("os", 1), ("harness.plugin.hooks", 4), ("harness.strategy", 5), ("harness.drivers.ssh", 6)]
    rules = [check(i) for i in found]
    assert rules[0] is None and rules[3] is None
    assert "layer `drivers` must not import layer `plugin` above it" in rules[1]
    assert "layer `drivers` must not import layer `strategy` above it" in rules[2]


def test_the_simulator_rules() -> None:
    assert check(Import("helix_sim.desktop", "harness.protocols.stream", 1)) is None
    assert "helix_sim may import only harness.protocols" in check(Import("helix_sim.api", "harness.analysis.timing", 3))
    assert check(Import("harness.runs.provision", "helix_sim.config", 1)) is None
    assert "only harness.cli and harness.runs may import helix_sim" in check(
        Import("harness.strategy", "helix_sim.simulator", 9))
    assert "checks are pure functions of the run record" in check(Import("harness.verdict.checks", "harness.strategy", 1))
    assert str(Violation("a.b", "c.d", 7, "why")) == "a.b (line 7) imports c.d: why"
