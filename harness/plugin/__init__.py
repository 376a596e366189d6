"""The helix-e2e pytest plugin (registered through the ``pytest11`` entry point).

Options and fixtures live in ``fixtures``, hooks in ``hooks``; both are loaded from here.
"""

pytest_plugins = ["harness.plugin.fixtures", "harness.plugin.hooks"]
