"""Shared fixtures: one passing and one failing streaming run in a child pytest.

tests/test_teardown.py checks what they leave behind, tests/test_secrets.py greps their artifacts;
each run happens once per session, whichever test asks first.
"""

from __future__ import annotations

import pytest

from childrun import ChildPytest, finished_run


@pytest.fixture(scope="session")
def passing_run(tmp_path_factory) -> ChildPytest:
    return finished_run(tmp_path_factory.mktemp("passing"), [])


@pytest.fixture(scope="session")
def failing_run(tmp_path_factory) -> ChildPytest:
    # 20 fps is below the target's 30..60 band: test_stream_fps_in_band fails. Everything that can
    # carry a secret into a report is switched on: DEBUG logs of every library (websockets logs the
    # handshake headers), logs in JUnit, locals in tracebacks, every test's artifacts, all summaries.
    return finished_run(tmp_path_factory.mktemp("failing"), [
        "--sim-fps", "20", "--log-level", "DEBUG", "-o", "junit_logging=all", "--showlocals", "-rA",
        "--keep-artifacts", "always",
    ])
