# Environment of the simulated guest (rendered by helix_sim/vm/sshd.py; do not edit).
# Sourced by the sshd ForceCommand wrapper and by ~/.profile (login shells).
export HOME=@@Q:HOME@@
export PATH=@@Q:BIN@@:/usr/bin:/bin
export SHELL=/bin/bash
export LANG=C.UTF-8
# The guest's Docker engine (the simulator's Engine API socket).
export DOCKER_HOST=@@Q:DOCKER_HOST@@
# What the go/docker shims and the built helix CLI run on.
export HELIX_SIM_PYTHON=@@Q:PYTHON@@
# Marks every guest process, so the VM's shutdown finds commands that outlived their SSH session.
export HELIX_SIM_GUEST=@@Q:ROOT@@
export PYTHONPATH=@@Q:PYTHONPATH@@
# SimConfig.delay_scale: the sim CLI's modelled waits (its --wait poll interval) scale with it.
export HELIX_SIM_DELAY_SCALE=@@Q:DELAY_SCALE@@
