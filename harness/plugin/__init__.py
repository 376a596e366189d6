"""The helix-e2e pytest plugin (registered through the ``pytest11`` entry point)."""

from .fixtures import (  # noqa: F401
    booted_vm,
    helix_session,
    helix_stack,
    pytest_addoption,
    stream_run,
    strategy,
    target,
)
from .hooks import (  # noqa: F401
    pytest_configure,
    pytest_runtest_makereport,
    pytest_runtest_setup,
    pytest_sessionfinish,
    pytest_terminal_summary,
    pytest_unconfigure,
)
