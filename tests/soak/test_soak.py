"""`pytest -m soak --soak-sessions N [--soak-reboot-every K]`: the slow-after-running check."""

from __future__ import annotations

import json

import pytest

from harness.report.metrics import write_json
from harness.runs.soak import FIGURES, SoakMargins, chart_svg, run_soak

pytestmark = pytest.mark.soak


def test_vm_does_not_slow_down_after_running(strategy, request, extras):
    config = request.config
    sessions = config.getoption("e2e_soak_sessions")
    reboot_every = config.getoption("e2e_soak_reboot_every")
    margins = SoakMargins(fps_drop=config.getoption("e2e_soak_fps_margin"),
                          ttff_rise=config.getoption("e2e_soak_ttff_margin"))
    result = run_soak(strategy, sessions, reboot_every=reboot_every, margins=margins)
    out = strategy.artifacts_dir
    write_json(out / "soak.json", result.as_dict())
    from pytest_html import extras as ex

    charts = "".join(chart_svg(result, name) for name in FIGURES
                     if any(r.get(name) is not None for r in result.iterations))
    (out / "soak-charts.html").write_text(charts)
    extras.append(ex.html(f"<div class='soak-charts'>{charts}</div>"))
    extras.append(ex.json(result.as_dict(), name="soak figures per iteration"))
    for name, value in result.slopes.items():
        if value is not None:
            request.node.user_properties.append((f"slope_{name}", value))
    assert len(result.iterations) == sessions
    assert result.ok, "; ".join(result.problems) + f" (per-iteration fps {[r.get('fps') for r in result.iterations]})"
    json.dumps(result.as_dict())
