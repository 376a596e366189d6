"""What this docker CLI says it is (client and compose versions) and the labels compose and the sandbox put
on containers."""

from __future__ import annotations

CLIENT_VERSION = "27.5.1"
COMPOSE_VERSION = "2.32.4"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NUMBER_LABEL = "com.docker.compose.container-number"
ONEOFF_LABEL = "com.docker.compose.oneoff"
#: Desktop containers carry this label naming the sandbox container whose dockerd runs them.
SANDBOX_LABEL = "helix.sandbox"
COMPOSE_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
