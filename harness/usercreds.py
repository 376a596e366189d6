"""`~/helix/.env.usercreds`: plain `KEY=value` lines, sourced by Helix's docs with `set -a`."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import HarnessError
from .redact import register

REQUIRED = ("HELIX_API_KEY", "HELIX_URL", "HELIX_PROJECT")
KNOWN = ("HELIX_API_KEY", "HELIX_URL", "HELIX_PROJECT", "HELIX_UBUNTU_AGENT")


class UsercredsError(HarnessError):
    default_phase = "session"


@dataclass(frozen=True)
class Usercreds:
    api_key: str = field(repr=False)
    url: str
    project: str
    agent: str = ""

    def __repr__(self) -> str:  # never show the key
        return f"Usercreds(url={self.url!r}, project={self.project!r}, agent={self.agent!r}, api_key=***)"


def parse_usercreds(text: str, *, source: str = ".env.usercreds") -> Usercreds:
    """Parse the file. Values are never put into error messages."""
    if not isinstance(text, str):
        raise UsercredsError(f"{source}: not text")
    values: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "").isalnum():
            raise UsercredsError(f"{source}:{lineno}: expected KEY=value", hint="fix the line (its value is not shown)")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    missing = [k for k in REQUIRED if not values.get(k)]
    if missing:
        raise UsercredsError(
            f"{source} lacks {', '.join(missing)}",
            hint="create it as in Helix's README: HELIX_API_KEY, HELIX_URL, HELIX_PROJECT, HELIX_UBUNTU_AGENT",
        )
    if values["HELIX_API_KEY"] == "oh-hallo-insecure-token":
        raise UsercredsError(
            f"{source}: HELIX_API_KEY is the runner token", hint="use a user API key (hl-…), never the runner token"
        )
    register(values["HELIX_API_KEY"])
    return Usercreds(
        api_key=values["HELIX_API_KEY"],
        url=values["HELIX_URL"],
        project=values["HELIX_PROJECT"],
        agent=values.get("HELIX_UBUNTU_AGENT", ""),
    )
