"""Shared fixtures: one passing and one failing streaming run in a child pytest.

tests/test_teardown.py checks what they leave behind, tests/test_secrets.py greps their artifacts;
each run happens once per session, whichever test asks first.

Also the Hypothesis profile ``fast`` of ``make test-fast`` (``--hypothesis-profile fast``): at most
:data:`FAST_EXAMPLES` examples per property, including the properties that pin a larger
``max_examples`` of their own. ``make test`` and ``make fuzz`` run the full counts.
"""

from __future__ import annotations

import pytest

from childrun import ChildPytest, finished_run

#: Examples per Hypothesis property under the `fast` profile (the inner loop).
FAST_EXAMPLES = 25

try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # hypothesis is a [test] extra
    _hypothesis_settings = None
else:
    _hypothesis_settings.register_profile("fast", max_examples=FAST_EXAMPLES)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under the `fast` profile, cap the properties that pin their own ``max_examples``.

    A profile only sets defaults: ``@settings(max_examples=1500)`` on a test wins over it. So each such
    test gets its own settings again, derived from its pinned ones with the profile's count
    (``_hypothesis_internal_use_settings`` is where ``@settings`` keeps them).
    """
    if _hypothesis_settings is None or _hypothesis_settings.get_current_profile_name() != "fast":
        return
    cap = _hypothesis_settings.default.max_examples
    for item in items:
        test = getattr(item, "obj", None)
        pinned = getattr(test, "_hypothesis_internal_use_settings", None)
        if pinned is not None and pinned.max_examples > cap:
            test._hypothesis_internal_use_settings = _hypothesis_settings(pinned, max_examples=cap)


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
