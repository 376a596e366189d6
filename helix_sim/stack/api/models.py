"""The Helix API's data: users, spec tasks and sessions as the API serialises them, IDs (prefix + lowercase
ULID) and the fixed names of the one sandbox (``sandbox-macos``) and its desktop image."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from ...config import SimConfig
from ...desktop import Desktop
from ...errors import SimError
from ...gofmt import rfc3339_seconds

RUNNER_TOKEN = "oh-hallo-insecure-token"
HELIX_VERSION = "2.6.3"
SANDBOX_ID = "sandbox-macos"
SANDBOX_CONTAINER = "helix-sandbox-macos-1"
DESKTOP_IMAGE = "helix-ubuntu"

STATUS_WAITING = "Waiting for a sandbox to come online..."
STATUS_STARTING = "Starting desktop container..."
STATUS_READY = "Desktop is running"

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


class ApiError(SimError):
    """The simulated API could not start or do what was asked."""

    default_phase = "api"


def new_ulid(now: float | None = None) -> str:
    """A lowercase ULID: 48-bit millisecond time + 80 random bits, 26 Crockford base32 characters."""
    ms = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    value = (ms << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in range(25, -1, -1))


def new_id(prefix: str) -> str:
    return f"{prefix}_{new_ulid()}"


@dataclass(frozen=True, slots=True)
class User:
    id: str
    name: str
    admin: bool
    runner: bool = False


@dataclass
class SpecTask:
    id: str
    project_id: str
    app_id: str
    prompt: str
    name: str
    owner: str
    created: float
    updated: float
    status: str = "backlog"
    planning_session_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "project_id": self.project_id,
            "name": self.name,
            "description": self.prompt,
            "type": "feature",
            "priority": "medium",
            "status": self.status,
            "original_prompt": self.prompt,
            "requirements_spec": "",
            "technical_design": "",
            "implementation_plan": "",
            "spec_agent": "",
            "implementation_agent": "",
            "helix_app_id": self.app_id,
            "planning_session_id": self.planning_session_id,
            "created_by": self.owner,
            "created_at": rfc3339_seconds(self.created),
            "updated_at": rfc3339_seconds(self.updated),
            "archived": False,
            "labels": [],
        }


@dataclass
class Session:
    id: str
    task: SpecTask
    owner: str
    created: float
    updated: float
    status_message: str = ""
    agent_status: str = "starting"
    container: Any = None
    desktop: Desktop | None = None
    provision: asyncio.Task[None] | None = field(default=None, repr=False)
    stopped: bool = False
    index: int = 0  # 0 for the simulator's first session (slow_after_running)

    @property
    def container_name(self) -> str:
        return getattr(self.container, "name", "") if self.container is not None else ""

    @property
    def container_id(self) -> str:
        return getattr(self.container, "id", "") if self.container is not None else ""

    def metadata(self, config: SimConfig) -> dict[str, Any]:
        return {
            "agent_type": "zed_external",
            "session_role": "planning",
            "spec_task_id": self.task.id,
            "project_id": self.task.project_id,
            "external_agent_id": f"zed-{self.id}",
            "external_agent_status": self.agent_status,
            "dev_container_id": self.container_id,
            "container_id": self.container_id,
            "container_name": self.container_name,
            "status_message": self.status_message,
            "desktop_type": "ubuntu",
            "video_mode": config.video_mode,
            "sandbox_id": SANDBOX_ID if self.container is not None else "",
        }

    def to_json(self, config: SimConfig, *, interactions: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "name": self.task.name,
            "created": rfc3339_seconds(self.created),
            "updated": rfc3339_seconds(self.updated),
            "parent_session": "",
            "parent_app": self.task.app_id,
            "mode": "inference",
            "type": "text",
            "model_name": "external_agent",
            "provider": "",
            "lora_dir": "",
            "owner": self.owner,
            "owner_type": "user",
            "project_id": self.task.project_id,
            "organization_id": "",
            "config": self.metadata(config),
        }
        if interactions:
            data["interactions"] = [{
                "id": f"int_{self.id[4:]}",
                "created": rfc3339_seconds(self.created),
                "updated": rfc3339_seconds(self.updated),
                "session_id": self.id,
                "user_id": self.owner,
                "mode": "inference",
                "prompt_message": self.task.prompt,
                "response_message": "",
                "state": "waiting",
            }]
        else:
            data["interactions"] = []
        return data

    def summary(self, config: SimConfig) -> dict[str, Any]:
        return {
            "session_id": self.id,
            "name": self.task.name,
            "interaction_id": f"int_{self.id[4:]}",
            "mode": "inference",
            "type": "text",
            "model_name": "external_agent",
            "owner": self.owner,
            "app_id": self.task.app_id,
            "created": rfc3339_seconds(self.created),
            "updated": rfc3339_seconds(self.updated),
            "summary": self.task.prompt[:100],
            "priority": False,
            "metadata": self.metadata(config),
        }
