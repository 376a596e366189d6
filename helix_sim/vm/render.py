"""The guest's files: templates under ``templates/`` rendered into the VM root with the simulator's values
(``@@NAME@@``, and ``@@Q:NAME@@`` shell-quoted), each with its mode."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

#: The guest's files (sshd config, shell wrapper, env, shims, ~/helix), rendered by :func:`render`.
TEMPLATES_DIR = Path(__file__).resolve().with_name("templates")
_PLACEHOLDER = re.compile(r"@@(Q:)?([A-Z_]+)@@")

#: (template under templates/, destination relative to the VM root, mode). Dotfiles are stored
#: without their dot so package-data globs pick them up.
GUEST_FILES: tuple[tuple[str, str, int], ...] = (
    ("guest-shell", "guest-shell", 0o755),
    ("guest-tmpns", "guest-tmpns", 0o755),
    ("guest-env.sh", "guest-env.sh", 0o644),
    ("profile", "home/.profile", 0o644),
    ("helix/stack", "home/helix/stack", 0o755),
    ("helix/docker-compose.dev.yaml", "home/helix/docker-compose.dev.yaml", 0o644),
    ("helix/env", "home/helix/.env", 0o644),
    ("helix/env.usercreds", "home/helix/.env.usercreds", 0o600),
    ("helix/gitignore", "home/helix/.gitignore", 0o644),
    ("helix/api/go.mod", "home/helix/api/go.mod", 0o644),
    ("helix/api/main.go", "home/helix/api/main.go", 0o644),
    ("helix/api/pkg/cli/spectask/cli_generation.go", "home/helix/api/pkg/cli/spectask/cli_generation.go", 0o644),
    ("bin/go", "bin/go", 0o755),
    ("bin/docker", "bin/docker", 0o755),
    ("bin/sudo", "bin/sudo", 0o755),
    ("bin/zpool", "bin/zpool", 0o755),
    ("bin/systemctl", "bin/systemctl", 0o755),
)


def render(template: str, values: dict[str, str]) -> str:
    """Replace ``@@NAME@@`` with ``values[NAME]`` and ``@@Q:NAME@@`` with its shell-quoted form."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in values:
            raise KeyError(f"guest template placeholder @@{name}@@ has no value")
        value = values[name]
        return shlex.quote(value) if match.group(1) else value

    return _PLACEHOLDER.sub(sub, template)


def write_file(path: Path, text: str, mode: int) -> None:
    """Write with ``mode`` from the start (.env.usercreds holds the API key: never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    path.chmod(mode)
