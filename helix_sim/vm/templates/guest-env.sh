# Environment of the simulated guest (rendered by helix_sim/vm/sshd.py; do not edit).
# Sourced by the sshd ForceCommand wrapper and by ~/.profile (login shells).
export HOME=@@Q:HOME@@
export PATH=@@Q:BIN@@:/usr/bin:/bin
export SHELL=/bin/bash
export LANG=C.UTF-8
# The guest's temp dir: /tmp, which guest-shell makes the VM's own (or that dir itself where it cannot).
export TMPDIR=@@Q:GUEST_TMPDIR@@
# The guest's Docker engine (the simulator's Engine API socket).
export DOCKER_HOST=@@Q:DOCKER_HOST@@
# What the go/docker shims and the built helix CLI run on.
export HELIX_SIM_PYTHON=@@Q:PYTHON@@
# Marks every guest process, so the VM's shutdown finds commands that outlived their SSH session.
export HELIX_SIM_GUEST=@@Q:ROOT@@
export PYTHONPATH=@@Q:PYTHONPATH@@
# SimConfig.delay_scale and cli_*: the helix CLI's waits (helix_sim/guest/helix/timing.py).
export HELIX_SIM_DELAY_SCALE=@@Q:DELAY_SCALE@@
export HELIX_SIM_CLI_WAIT_POLL_S=@@Q:CLI_WAIT_POLL_S@@
export HELIX_SIM_CLI_WAIT_TIMEOUT_S=@@Q:CLI_WAIT_TIMEOUT_S@@
export HELIX_SIM_CLI_STATS_INTERVAL_S=@@Q:CLI_STATS_INTERVAL_S@@
