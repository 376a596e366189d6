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


#: SpecTaskStatus values the sim uses (types/simple_spec_task.go).
TASK_BACKLOG = "backlog"
TASK_QUEUED_SPEC_GENERATION = "queued_spec_generation"
TASK_SPEC_GENERATION = "spec_generation"
#: The sandbox runtimes of the newer CLI's ``--runtime`` (the sim's project defaults to the desktop one).
RUNTIME_DESKTOP = "ubuntu-desktop"
RUNTIME_HEADLESS = "headless-ubuntu"
#: spec_driven_task_service.go StartSpecGeneration: no request app_id and no project DefaultHelixAppID.
NO_AGENT_ERROR = "no agent configured - set DefaultHelixAppID on project"


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
    status: str = TASK_BACKLOG
    planning_session_id: str = ""
    status_updated: float | None = None
    #: types.SpecTask.Metadata: markTaskFailed stores ``error`` and ``error_timestamp`` here (status stays backlog)
    metadata: dict[str, Any] = field(default_factory=dict)
    #: the newer CLI's ``--runtime`` (``sandbox_runtime``): ubuntu-desktop, or headless-ubuntu (no desktop, no stream)
    runtime: str = "ubuntu-desktop"

    def set_status(self, status: str, now: float) -> None:
        self.status = status
        self.status_updated = now
        self.updated = now

    def mark_failed(self, message: str, now: float) -> None:
        """markTaskFailedWithCause: back to backlog, the message in ``metadata.error``."""
        self.set_status(TASK_BACKLOG, now)
        self.metadata["error"] = message
        self.metadata["error_timestamp"] = rfc3339_seconds(int(now))

    @property
    def headless(self) -> bool:
        return self.runtime == RUNTIME_HEADLESS

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "project_id": self.project_id,
            "user_id": self.owner,
            "organization_id": "",
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
            "metadata": dict(self.metadata),
        }
        if self.status_updated is not None:
            data["status_updated_at"] = rfc3339_seconds(self.status_updated)
        for key in ("helix_app_id", "planning_session_id", "metadata"):  # omitempty
            if not data[key]:
                del data[key]
        return data


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
    agent_type: str = "zed_external"  # Metadata.AgentType (every spec-task planning session has one)

    @property
    def container_name(self) -> str:
        return getattr(self.container, "name", "") if self.container is not None else ""

    @property
    def container_id(self) -> str:
        return getattr(self.container, "id", "") if self.container is not None else ""

    def metadata(self, config: SimConfig) -> dict[str, Any]:
        return {
            "agent_type": self.agent_type,
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
