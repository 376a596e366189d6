"""The VM guest, by job: a real OpenSSH sshd on loopback serving a sandboxed guest home, with the SSH
faults (:mod:`.sshd`), the guest's files rendered from ``templates/`` (:mod:`.render`), and stopping and
reaping the guest's processes (:mod:`.processes`). The programs the guest runs are :mod:`helix_sim.guest`.
"""
