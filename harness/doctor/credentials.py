"""What the harness needs to log in: the SSH key, the guest's host key in known_hosts, and a local copy of
``.env.usercreds``.

Checks ``ssh_key`` (exists, is a private key, mode 0600), ``known_hosts`` (has the guest's entry, looked up
as the SSH driver looks it up, with paramiko) and ``usercreds`` (the four keys are there). No check shows a
secret: key contents and usercreds values are never part of a finding.
"""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path

from ..config import TargetConfig, expand
from .report import FAIL, OK, WARN, Check, sim_unprovisioned, skipped_for_sim

__all__ = ["check_ssh_key", "check_known_hosts", "check_usercreds"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def check_ssh_key(target: TargetConfig) -> Check:
    """The private key exists, is readable, looks like a private key, and is not group/world accessible."""
    name = "ssh_key"
    if sim_unprovisioned(target):
        return skipped_for_sim(name, "its own key")
    path = Path(expand(target.ssh.key))
    q = shlex.quote(str(path))
    if not path.exists():
        return Check(name, FAIL, f"SSH key {path} does not exist",
                     f"create it (ssh-keygen -t ed25519 -f {q}) and add {q}.pub to the guest's "
                     "~/.ssh/authorized_keys, or set [ssh] key")
    if not path.is_file():
        return Check(name, FAIL, f"SSH key {path} is not a file", "set [ssh] key to the private key file")
    mode = _mode(path)
    try:
        with path.open("rb") as fh:
            first = fh.readline(200)
    except PermissionError:
        return Check(name, FAIL, f"SSH key {path} is not readable by this user (mode {mode:04o})",
                     f"chown it to this user and chmod 600 {q}")
    if mode & 0o077:
        return Check(name, FAIL,
                     f"SSH key {path} is accessible by group/others (mode {mode:04o}); ssh refuses such keys "
                     "(UNPROTECTED PRIVATE KEY FILE)", f"chmod 600 {q}", {"mode": mode})
    if b"PRIVATE KEY" not in first:
        return Check(name, WARN, f"{path} does not start like a private key (no PRIVATE KEY header)",
                     "[ssh] key names the private key, not the .pub", {"mode": mode})
    return Check(name, OK, f"{path} is a private key, mode {mode:04o}", "", {"mode": mode})


def check_known_hosts(target: TargetConfig) -> Check:
    """known_hosts has a key for ``[host]:port`` (``host`` on port 22), as the SSH driver (paramiko) looks it up."""
    name = "known_hosts"
    if sim_unprovisioned(target):
        return skipped_for_sim(name, "its own known_hosts")
    cfg = target.ssh
    entry = cfg.host if cfg.port == 22 else f"[{cfg.host}]:{cfg.port}"
    path = Path(expand(cfg.known_hosts))
    q = shlex.quote(str(path))
    add = (f"connect once with `ssh -p {cfg.port} {cfg.user}@{cfg.host}` and verify the fingerprint, or "
           f"`ssh-keyscan -p {cfg.port} {cfg.host} >> {q}` on a trusted machine, or set [ssh] trust_on_first_use = true")
    tofu = cfg.trust_on_first_use
    if not path.exists():
        if tofu:
            return Check(name, WARN, f"{path} does not exist; trust_on_first_use will create it on first connect",
                         add)
        return Check(name, FAIL, f"{path} does not exist, so the guest's host key ({entry}) is unknown", add)
    import paramiko  # only now: loading the file is the one step that needs it (paramiko takes ~0.3 s to import)
    from paramiko.hostkeys import InvalidHostKey

    keys = paramiko.HostKeys()
    try:
        keys.load(str(path))
    except InvalidHostKey as exc:  # bad base64: paramiko (and so the SSH driver) cannot load the file at all
        line = str(getattr(exc, "line", "")).strip()[:80]
        return Check(name, FAIL, f"{path} has a malformed line paramiko cannot load: {line!r}",
                     f"fix or remove that line in {q}")
    except (OSError, UnicodeDecodeError, paramiko.SSHException) as exc:
        return Check(name, FAIL, f"cannot read {path}: {exc}", f"fix or remove the broken line in {q}")
    found = keys.lookup(entry)
    if found:
        return Check(name, OK, f"{path} has a {', '.join(sorted(found.keys()))} key for {entry}")
    if tofu:
        return Check(name, WARN, f"{path} has no entry for {entry}; trust_on_first_use will record it on first connect",
                     add)
    return Check(name, FAIL, f"{path} has no entry for {entry}; the SSH driver rejects unknown host keys", add)


def check_usercreds(usercreds: str | os.PathLike[str] | None) -> Check:
    """A local copy of ``.env.usercreds`` has the four keys (values are never shown). The real file lives
    in the guest; without ``--usercreds`` it is checked there at session start."""
    name = "usercreds"
    if usercreds is None:
        return Check(name, OK, "checked in the guest at session start (pass --usercreds FILE to check a local copy)")
    from ..usercreds import KNOWN, UsercredsError, parse_usercreds

    path = Path(expand(str(usercreds)))
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return Check(name, FAIL, f"{path} does not exist", "pass the path of a copy of the guest's ~/helix/.env.usercreds")
    except (OSError, UnicodeDecodeError) as exc:
        return Check(name, FAIL, f"cannot read {path}: {getattr(exc, 'strerror', None) or type(exc).__name__}",
                     "check the file")
    try:
        creds = parse_usercreds(text, source=str(path))  # registers the API key for redaction
    except UsercredsError as exc:
        return Check(name, FAIL, exc.message, exc.hint or "")
    q = shlex.quote(str(path))
    if not creds.agent:
        return Check(name, WARN, f"{path} has HELIX_API_KEY, HELIX_URL, HELIX_PROJECT but no HELIX_UBUNTU_AGENT",
                     "add HELIX_UBUNTU_AGENT=app_… (spectask start runs without --agent otherwise)")
    if _mode(path) & 0o077:
        return Check(name, WARN, f"{path} has {', '.join(KNOWN)} but is readable by group/others (it holds an API key)",
                     f"chmod 600 {q}")
    return Check(name, OK, f"{path} has {', '.join(KNOWN)} (values not shown)")
