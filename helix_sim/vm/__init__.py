"""The VM guest: a real sshd serving a sandboxed guest home (:mod:`.sshd`), rendered from ``templates/``."""
