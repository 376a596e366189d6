"""StackDriver against the simulated guest's ``~/helix/stack`` and its Docker engine, over SSH.

The contract: ``start`` runs ``COMPOSE_PROFILES=<profile> ./stack start`` in ``helix_dir`` and returns
its output, or raises ``StackError`` (phase ``stack``) with the last lines of the compose output;
``read_usercreds`` returns the creds file or raises in phase ``session`` with a hint; ``git_sha`` is
the checkout's HEAD, or "" when there is none; ``compose_ps`` shows the services.
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from harness.drivers.stack import StackError
from harness.errors import CommandError
from harness.usercreds import parse_usercreds

pytestmark = pytest.mark.timeout(90)


def test_start_brings_the_services_up(rig) -> None:
    stack = rig.stack_driver()
    out = stack.start(timeout=30)
    assert "Using COMPOSE_PROFILES from environment: 'code-macos'" in out  # the profile reached the script
    assert "Stack started" in out
    ps = stack.compose_ps()
    assert "helix-api-1" in ps and "helix-sandbox-macos-1" in ps


def test_usercreds(rig) -> None:
    creds = parse_usercreds(rig.stack_driver().read_usercreds())
    assert creds.api_key == rig.info["api_key"]
    assert creds.project.startswith("prj_") and creds.url.startswith("http://")


def test_missing_usercreds_is_a_session_error(rig) -> None:
    guest = dataclasses.replace(rig.guest, usercreds="/nonexistent/.env.usercreds")
    with pytest.raises(StackError) as err:
        rig.stack_driver(guest).read_usercreds()
    assert err.value.phase == "session" and "/nonexistent/.env.usercreds" in err.value.message
    assert "HELIX_API_KEY" in (err.value.hint or "")


def test_git_sha(rig) -> None:
    sha = rig.stack_driver().git_sha()
    assert re.fullmatch(r"[0-9a-f]{40}", sha)
    assert rig.ssh.run("git -C ~/helix rev-parse HEAD", timeout=10).stdout.strip() == sha
    assert rig.stack_driver(dataclasses.replace(rig.guest, helix_dir="~/no-checkout")).git_sha() == ""


def test_start_failure_carries_the_compose_output(make_rig) -> None:
    rig = make_rig(faults={"stack_fails"})
    with pytest.raises(StackError) as err:
        rig.stack_driver().start(timeout=30)
    e = err.value
    assert e.phase == "stack" and e.message.startswith("./stack start failed (exit ")
    assert "port is already allocated" in e.message
    assert "docker compose -f docker-compose.dev.yaml ps" in (e.hint or "")
    assert isinstance(e.__cause__, CommandError) and e.__cause__.exit_status not in (0, None)
