"""The helix-e2e blocks of the pytest-html report: the verdict, provenance, and under xdist one
verdict per target. Every value is escaped and redacted before it reaches HTML."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from ..redact import redact


def _h(value: object) -> str:
    return html.escape(redact(str(value)))


def verdict_html(verdict: Any, reruns: dict | None = None) -> str:
    """The verdict block at the top of the HTML report (``verdict``: a triage Verdict or ``None``)."""
    if verdict is None:
        block = "<p class='e2e-verdict e2e-verdict-ok'><b>All checks passed</b>: nothing to triage.</p>"
    else:
        transient = " (transient infrastructure)" if verdict.transient else ""
        explains = f"<p>Explains: {_h(', '.join(verdict.explains))}</p>" if verdict.explains else ""
        block = (f"<p class='e2e-verdict'><b>Root cause: layer <code>{_h(verdict.layer)}</code>, cause "
                 f"<code>{_h(verdict.cause)}</code></b>{transient}: {_h(verdict.message)}</p>"
                 f"<p><b>Hint:</b> {_h(verdict.hint)}</p>"
                 f"<pre class='e2e-evidence'>{_h(chr(10).join(verdict.evidence))}</pre>{explains}")
    if reruns is not None:
        done = "; ".join(f"{r['test']} (attempt {r['attempt']}: {r['verdict']})" for r in reruns["reruns"]) or "none"
        block += f"<p><b>--rerun-infra {reruns['allowed']}</b>: {_h(reruns['policy'])}. Reruns: {_h(done)}</p>"
    return f"<h2>Verdict</h2>{block}"


def provenance_html(provenance: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th style='text-align:left'>{_h(k)}</th><td>{_h(v)}</td></tr>" for k, v in provenance.items())
    return f"<h2>Provenance</h2><table class='e2e-provenance'>{rows}</table>"


def merged_verdicts_html(path: Path) -> str:
    """Under xdist: one verdict line per target, from the merged metrics.json."""
    try:
        targets = json.loads(path.read_text()).get("targets") or {}
    except (OSError, ValueError):
        return ""
    rows = []
    for name, m in sorted(targets.items()):
        t = m.get("triage")
        text = (f"{t.get('layer')} / {t.get('cause')} — {t.get('hint', '')}" if isinstance(t, dict) and t
                else "all checks passed")
        rows.append(f"<tr><th style='text-align:left'>{_h(name)}</th><td>{_h(text)}</td></tr>")
    return f"<h2>Verdict per target</h2><table class='e2e-verdicts'>{''.join(rows)}</table>" if rows else ""
