"""``--rerun-infra N``: rerun a streaming test only when its verdict is transient infrastructure.

pytest-rerunfailures does the rerun; the condition here lets only the causes marked transient in
:mod:`harness.causes` through (an Apple Event OSStatus, SSH refused while booting). A product failure
is never retried. The rerun starts with ``Strategy.reset()`` (see ``hooks.pytest_runtest_setup``).
"""

from __future__ import annotations

import functools

import pytest

from ..verdict.checks import Finding
from ..verdict.triage import TRANSIENT_CAUSES, TRANSIENT_LAYERS

#: On each streaming test item: the Finding of its latest attempt.
FINDING_KEY = pytest.StashKey[Finding]()
RERUN_POLICY = ("only transient infrastructure failures are rerun (layer host, utm or ssh; cause "
                + " or ".join(sorted(TRANSIENT_CAUSES)) + "); product failures are never retried")


def rerun_wanted(item: pytest.Item, error: BaseException | None = None) -> bool:
    """pytest-rerunfailures' condition: rerun a transient infrastructure failure only, never a product one."""
    finding = item.stash.get(FINDING_KEY, None)
    return bool(finding is not None and not finding.ok and finding.layer in TRANSIENT_LAYERS
                and finding.cause in TRANSIENT_CAUSES)


def mark_for_reruns(config: pytest.Config, items: list[pytest.Item], uses_strategy) -> None:
    reruns = config.getoption("e2e_rerun_infra") or 0
    if reruns < 0:
        raise pytest.UsageError(f"--rerun-infra takes a count >= 0, got {reruns}")
    if reruns and not config.pluginmanager.hasplugin("rerunfailures"):
        raise pytest.UsageError("--rerun-infra needs the pytest-rerunfailures plugin (pip install pytest-rerunfailures)")
    if reruns:
        for item in items:
            if uses_strategy(item) and item.get_closest_marker("flaky") is None:
                item.add_marker(pytest.mark.flaky(reruns=reruns, condition=functools.partial(rerun_wanted, item)))
