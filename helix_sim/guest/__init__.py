"""Files of the simulated VM guest: templates rendered by helix_sim.vm, and the go/docker shims."""
