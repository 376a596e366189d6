"""Under pytest-xdist each worker drives its own target and writes its own metrics.json; the
controller merges them into one metrics.json keyed by target, one summary.md and the history."""

from __future__ import annotations

import json
from pathlib import Path

from .metrics import _completion, _tests, write_json
from .summary import append_history, render_summary


def merge_worker_metrics(latest: Path, outcomes: dict[str, str], completion: dict | None = None) -> dict:
    """Merge ``latest/<worker>/metrics.json`` into ``latest/metrics.json`` (and summary.md, history)."""
    targets = {}
    for path in sorted(latest.glob("*/metrics.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        name = (data.get("target") or {}).get("name") or path.parent.name
        targets[name] = data
    merged = {"schema": "helix-e2e/metrics/1", "tests": _tests(outcomes, completion), **_completion(completion),
              "targets": targets}
    write_json(latest / "metrics.json", merged)
    summaries = [render_summary({**m, "tests": m.get("tests") or {}}) for m in targets.values()]
    if not merged["complete"]:
        summaries.insert(0, render_summary(merged))
    (latest / "summary.md").write_text("\n".join(summaries))
    for m in targets.values():
        append_history(latest.parent / "history.jsonl", m)
    return merged
