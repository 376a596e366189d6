"""A session's desktop container: exec, the shared video pipeline, its logs, and the video itself."""
