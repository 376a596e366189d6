"""The fault runs of a test module, started together on a small thread pool.

Each run is a whole boot-to-stream flow against its own simulator (``harness.runs.runner.run_once``),
mostly waiting on a child process, so two run side by side on a 2-core host. The fixture starts
the runs the session selected (``-k`` works), longest first, and each test waits for its own.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Hashable

import pytest

#: Parallel runs (HELIX_E2E_FAULT_WORKERS=1 runs them one after the other). Each run mostly waits on its
#: simulator (about 0.4 of a core each), so three fit a 2-core host.
WORKERS = max(1, int(os.environ.get("HELIX_E2E_FAULT_WORKERS", "3")))
#: The parametrize arguments that name a run of the requesting module.
JOB_PARAMS = ("fault", "case")


class Runs:
    """Futures of the module's runs; ``result(key)`` waits for one (each run is bounded by its own deadlines)."""

    def __init__(self, jobs: dict[Hashable, Callable[[], Any]], cost: Callable[[Hashable], float], workers: int) -> None:
        self.started = time.monotonic()
        self.finished: float | None = None
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fault-run")
        self._futures: dict[Hashable, Future] = {}
        for key in sorted(jobs, key=lambda k: -cost(k)):  # longest first: the workers finish together
            self._futures[key] = self._pool.submit(jobs[key])

    def result(self, key: Hashable, timeout: float = 600.0) -> Any:
        if key not in self._futures:
            raise KeyError(f"no run was started for {key!r}")
        value = self._futures[key].result(timeout=timeout)
        if all(f.done() for f in self._futures.values()) and self.finished is None:
            self.finished = time.monotonic()
        return value

    def wall_s(self, timeout: float = 600.0) -> float:
        """Wall time of all the runs together (waits for every one)."""
        for key in self._futures:
            try:
                self.result(key, timeout)
            except Exception:  # noqa: BLE001 - its own test reports it
                pass
        return (self.finished or time.monotonic()) - self.started

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module")
def fault_runs(request: pytest.FixtureRequest):
    """Start every run the module's selected tests need; the module gives ``make_job(kind, value)`` and ``cost(key)``."""
    module = request.module
    keys: list[tuple[str, Any]] = []
    for item in request.session.items:
        if getattr(item, "module", None) is not module or not hasattr(item, "callspec"):
            continue
        for name in JOB_PARAMS:
            if name in item.callspec.params:
                key = (name, item.callspec.params[name])
                if key not in keys:
                    keys.append(key)
    runs = Runs({key: module.make_job(*key) for key in keys}, module.cost, WORKERS)
    yield runs
    runs.close()
