"""helix-e2e: an end-to-end harness for Helix's macOS ARM video-streaming path."""

__version__ = "0.1.0"
