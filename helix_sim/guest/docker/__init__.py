"""The guest's `docker`."""
