"""The guest's `go`."""
