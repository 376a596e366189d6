"""The Helix stack inside the VM: the Docker engine and the Helix API server."""
