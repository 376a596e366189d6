"""The Helix stack in Helix.app's VM, brought up the way the app's ``waitForReady`` does (helix-app-vm.md §3):
the boot stages after "Booting VM..." run over SSH, each shown as a progress line with the app's words.

1. ``Setting up storage...``: the ZFS pool script (``[vm] storage_script``, upstream's
   for-mac/scripts/init-zfs-pool.sh; without one, import the pool and start Docker, which is disabled at boot).
2. ``Configuring environment...``: the two values the frame export needs (``injectDesktopSecret``):
   ``HELIX_FRAME_EXPORT_PORT`` in ``~/helix/.env`` (or ``.env.vm``) and ``QEMU_ADDR=10.0.2.2:<port>`` in the
   drm manager's env file, restarting ``helix-drm-manager`` when it changed. The app's secrets are its own.
3. ``Starting Helix services...``: ``docker compose -f <dev or prod file> up -d`` in ``~/helix``.

The strategy then polls ``/api/v1/status`` (``Starting app...``) and ``/api/v1/sandboxes`` (``Waiting for
sandbox...``). The image has no source checkout, so there is no ``./stack`` and no git SHA.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Callable

from ...config import GuestConfig, VmConfig, expand, shell_path
from ...deadline import Deadline
from ...errors import CommandError, HarnessError
from ..base import CommandRunner
from ..stack import StackDriver, StackError, _last_lines

#: The boot stages the harness runs, with the app's boot_stage strings.
STAGES = ("Setting up storage...", "Configuring environment...", "Starting Helix services...")
#: The SLIRP address of the host, as the guest sees it (QEMU_ADDR's host part).
SLIRP_HOST = "10.0.2.2"

#: Without [vm] storage_script: the pool exists already (the app ran once), so import it and start Docker.
STORAGE_BUILTIN = """set -e
if ! sudo -n zpool list helix >/dev/null 2>&1; then sudo -n zpool import -f helix; fi
if ! systemctl is-active docker >/dev/null 2>&1; then sudo -n systemctl start docker; fi
echo STORAGE_READY
"""

_ENV_SCRIPT = """set -e
cd {helix_dir}
if [ -f .env ]; then ENV_FILE=$(readlink -f .env); else ENV_FILE=.env.vm; touch "$ENV_FILE"; fi
set_kv() {{ if grep -q "^$2=" "$1"; then sed -i "s|^$2=.*|$2=$3|" "$1"; else printf '%s=%s\\n' "$2" "$3" >> "$1"; fi; }}
set_kv "$ENV_FILE" HELIX_FRAME_EXPORT_PORT {port}
want={want}
if [ "$(cat {drm} 2>/dev/null)" != "$want" ]; then
  printf '%s\\n' "$want" | sudo -n tee {drm} >/dev/null
  sudo -n systemctl restart helix-drm-manager || true
  echo DRM_MANAGER_UPDATED
fi
echo ENV_READY
"""

_COMPOSE_SCRIPT = """set -e
cd {helix_dir}
if [ ! -e .env ] && [ -f .env.vm ]; then ln -s .env.vm .env; fi
if [ -f docker-compose.dev.yaml ]; then F=docker-compose.dev.yaml; elif [ -f docker-compose.yaml ]; then \
F=docker-compose.yaml; else echo 'no docker-compose.dev.yaml or docker-compose.yaml in ~/helix' >&2; exit 3; fi
echo "COMPOSE_FILE=$F"
COMPOSE_PROFILES={profiles} docker compose -f "$F" up -d 2>&1
if [ "$F" = docker-compose.yaml ] && [ -f sandbox.sh ]; then
  docker stop helix-sandbox >/dev/null 2>&1 || true
  docker rm helix-sandbox >/dev/null 2>&1 || true
  nohup bash sandbox.sh > /tmp/sandbox.log 2>&1 &
  echo SANDBOX_RESTARTED
fi
echo STARTED
"""


class HelixAppStack(StackDriver):
    """``start`` runs the app's three stages over SSH; the rest (usercreds, compose ps) is the guest's as on UTM."""

    label = "the app's boot stages (storage, environment, compose up), the API and an online sandbox"

    def __init__(self, runner: CommandRunner, guest: GuestConfig, vm: VmConfig) -> None:
        super().__init__(runner, guest)
        self.vm = vm

    def storage_script(self) -> str:
        if not self.vm.storage_script:
            return STORAGE_BUILTIN
        path = Path(expand(self.vm.storage_script))
        try:
            return path.read_text()
        except OSError as exc:
            raise StackError(f"cannot read [vm] storage_script {path}: {exc.strerror or exc}",
                             cause="config_failed", hint="point [vm] storage_script at for-mac/scripts/"
                             "init-zfs-pool.sh of a helix checkout, or leave it empty") from None

    def env_script(self) -> str:
        port = self.vm.frame_export_port
        return _ENV_SCRIPT.format(helix_dir=shell_path(self.guest.helix_dir), port=port,
                                  want=shlex.quote(f"QEMU_ADDR={SLIRP_HOST}:{port}"),
                                  drm=shell_path(self.guest.drm_env_file))

    def compose_script(self) -> str:
        return _COMPOSE_SCRIPT.format(helix_dir=shell_path(self.guest.helix_dir),
                                      profiles=shlex.quote(self.guest.compose_profiles))

    def start(self, *, timeout: float, on_stage: Callable[[str], None] | None = None) -> str:
        deadline = Deadline(timeout)
        output = []
        for stage, script, what in ((STAGES[0], self.storage_script(), "the storage stage (ZFS pool, Docker)"),
                                    (STAGES[1], self.env_script(), "the environment stage (HELIX_FRAME_EXPORT_PORT, "
                                     "QEMU_ADDR)"),
                                    (STAGES[2], self.compose_script(), "docker compose up -d")):
            if on_stage:
                on_stage(stage)
            try:
                result = self.runner.run(script, timeout=max(0.5, deadline.remaining), phase="stack",
                                         log_command=f"<{stage}>")
            except CommandError as exc:
                if exc.exit_status is None:  # a timeout or a lost connection: not the script's verdict
                    raise
                raise StackError(f"{stage} failed (exit {exc.exit_status}): {_last_lines(exc.stdout + exc.stderr)}",
                                 cause="stack_start_failed",
                                 hint=f"{what} failed in the guest: read its output in the evidence") from exc
            except HarnessError:
                raise
            output.append(f"== {stage}\n{result.stdout}")
        return "\n".join(output)

    def git_sha(self, *, timeout: float = 20) -> str:
        return ""  # Helix.app's VM image has no source checkout
