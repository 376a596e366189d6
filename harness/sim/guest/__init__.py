"""Files of the simulated VM guest: templates rendered by harness.sim.vm, and the go/docker shims."""
