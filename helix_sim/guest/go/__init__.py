"""The guest's ``go``: :mod:`.cli` (version, env, usage) and :mod:`.build` (``go build`` writes the helix CLI's launcher)."""
