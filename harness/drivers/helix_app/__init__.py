"""The Helix.app provider (``[vm] provider = "helix-app"``): Helix.app's bundled QEMU, run by the harness
with the app's command line (:mod:`.command`), driven over QMP (:mod:`..qmp`), refusing to share the
host with the app or a stale QEMU (:mod:`.conflicts`), and the app's boot stages over SSH (:mod:`.stack`).
The provider itself is :class:`~.provider.HelixAppVm`."""

from .provider import HelixAppError, HelixAppVm

__all__ = ["HelixAppVm", "HelixAppError"]
