"""Root conftest: the helix-e2e plugin is loaded through its pytest11 entry point."""
