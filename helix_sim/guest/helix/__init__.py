"""The guest's `helix`."""
