package spectask

// CLIGeneration names which spectask CLI this checkout builds (written by the helix-e2e simulator; its go
// shim reads it): "2026-08" has -a/--agent, "2026-11" has --runtime and no --agent.
const CLIGeneration = "@@CLI_GENERATION@@"
