"""The one table of causes: every cause the code names is a row, and the table is self-consistent."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from harness import causes
from harness.causes import CATASTROPHE, CATASTROPHE_ORDER, CAUSES, LAYER_HINTS, LAYERS, PHASE_CAUSES, SYMPTOM, Cause
from harness.errors import HarnessError, cause_of

ROOT = Path(__file__).resolve().parents[2]


def _named_causes() -> dict[str, list[str]]:
    """Every cause written as a literal in the harness: ``cause="…"``, ``default_cause = "…"``, and the first
    string argument after the message of ``_fail(check, message, "<cause>", …)`` in the checks."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "harness").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            values: list[ast.AST] = []
            if isinstance(node, ast.keyword) and node.arg == "cause":
                values.append(node.value)
            elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "default_cause"
                                                      for t in node.targets):
                values.append(node.value)
            elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "_fail" and len(node.args) >= 3:
                values.append(node.args[2])
            for value in values:
                for const in ast.walk(value):
                    if isinstance(const, ast.Constant) and isinstance(const.value, str):
                        found.setdefault(const.value, []).append(str(path.relative_to(ROOT)))
    return found


def test_every_cause_the_code_names_is_in_the_table():
    named = _named_causes()
    assert len(named) > 40, sorted(named)  # the scan really found them
    unknown = {name: where for name, where in named.items() if name not in CAUSES}
    assert not unknown, f"add these to harness/causes.py: {unknown}"


def test_causes_chosen_from_data_are_in_the_table():
    from harness.verdict import checks

    assert set(checks.UPSTREAM_STREAM_ERRORS.values()) <= set(CAUSES)
    assert set(checks._PROBE_CAUSES.values()) <= set(CAUSES)
    assert set(checks._DOCTOR.values()) <= set(CAUSES)


def test_the_table_is_consistent():
    assert set(LAYER_HINTS) == set(LAYERS)
    assert {c.name for c in CAUSES.values() if c.rank == CATASTROPHE} == set(CATASTROPHE_ORDER)
    assert all(CAUSES[c].layer in LAYERS for c in PHASE_CAUSES.values())
    assert {c.name for c in CAUSES.values() if c.transient} == {"utmctl_osstatus", "ssh_refused"}
    assert all(c.hint for c in CAUSES.values()), [c.name for c in CAUSES.values() if not c.hint]
    assert {c.name for c in CAUSES.values() if c.rank == SYMPTOM} >= {"stream_ended", "no_frames", "internal_error"}
    with pytest.raises(ValueError):
        Cause("x", "gpu")
    with pytest.raises(KeyError, match="add it to harness/causes.py"):
        causes.cause("no_such_cause")


def test_an_error_names_its_cause_and_the_table_its_hint():
    plain = HarnessError("boom", phase="api", cause="api_5xx")
    assert plain.hint == CAUSES["api_5xx"].hint  # no hint of its own: the cause's
    own = HarnessError("boom", cause="api_5xx", hint="mine")
    assert own.hint == "mine"
    wrapper = HarnessError("outer")
    wrapper.__cause__ = plain
    assert cause_of(wrapper) == "api_5xx" and cause_of(HarnessError("x")) is None and cause_of(None) is None
