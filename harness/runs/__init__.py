"""Programmatic runs outside pytest: provisioning a simulator, one whole run, soak."""
