"""Verdicts: what counts as broken (checks), why (the table of causes) and the one root cause of a run (triage)."""
