"""The doctor: a verdict per Mach-O fixture, version comparisons, port/key/known_hosts/usercreds checks,
and `helix-e2e doctor` exit codes and JSON shape."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import paramiko
import pytest

from harness import doctor
from harness.cli import main
from harness.config import ENV_OVERRIDES, TARGET_ENV, TargetConfig, parse_target
from harness.doctor import (
    CHECK_NAMES,
    FAIL,
    OK,
    WARN,
    Check,
    DoctorError,
    DoctorReport,
    binary_versions,
    check_disk,
    check_dylib_paths,
    check_frame_export_port,
    check_hvf,
    check_known_hosts,
    check_memory,
    check_qemu_fresh,
    check_qemu_version,
    check_runtime_version,
    check_ssh_key,
    check_usercreds,
    check_utmctl,
    classify_install_name,
    default_qemu_binary,
    framework_install_name,
    run_doctor,
    source_version,
)
from harness.doctor import host as doctor_host
from harness.protocols.macho import build_fat, build_macho
from harness.protocols.utmctl import NO_GUI_MESSAGE, VmEntry, format_list

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "macho"
V10 = "2026-02-15-v10-ipa-granule-test"
V7 = "2026-02-08-v7-gpu-blit"
SYSROOT = "/Users/luke/pm/UTM/sysroot-macOS-arm64/lib"
QEMU_ID = "@rpath/qemu-aarch64-softmmu.framework/Versions/A/qemu-aarch64-softmmu"
VM_UUID = "17DC4F96-F1A9-4B51-962B-03D85998E0E7"


# -- dylib_paths -------------------------------------------------------------------------------------------
def _change(old: str, new: str, binary: Path) -> str:
    return f"install_name_tool -change {old} {new} {binary}"


def test_fixture_sysroot_fails_with_every_path_and_fix():
    binary = FIXTURES / "qemu-sysroot"
    check = check_dylib_paths(binary)
    assert check.status == FAIL
    for path in (f"{SYSROOT}/libjpeg.62.dylib", f"{SYSROOT}/libpixman-1.0.dylib",
                 f"{SYSROOT}/libqemu-aarch64-softmmu.dylib"):
        assert path in check.finding
    lines = check.fix.splitlines()
    assert "fix-qemu-paths.sh" in lines[0]
    assert lines[1:] == [
        f"install_name_tool -id {QEMU_ID} {binary}",
        _change(f"{SYSROOT}/libjpeg.62.dylib", "@rpath/jpeg.62.framework/Versions/A/jpeg.62", binary),
        _change(f"{SYSROOT}/libpixman-1.0.dylib", "@rpath/pixman-1.0.framework/Versions/A/pixman-1.0", binary),
    ]
    assert len(check.data["offending"]) == 3


def test_fixture_users_path_fails_weak_import():
    binary = FIXTURES / "qemu-users"
    check = check_dylib_paths(binary)
    old = "/Users/luke/pm/qemu-utm/build/subprojects/libslirp.0.dylib"
    assert check.status == FAIL
    assert f"LC_LOAD_WEAK_DYLIB {old}" in check.finding
    assert check.fix.splitlines()[1:] == [_change(old, "@rpath/slirp.0.framework/Versions/A/slirp.0", binary)]


def test_fixture_fat_fails_only_in_the_bad_slice():
    binary = FIXTURES / "qemu-fat"
    check = check_dylib_paths(binary)
    old = f"{SYSROOT}/libpng16.16.dylib"
    assert check.status == FAIL
    assert f"LC_LOAD_DYLIB {old} [x86_64]" in check.finding
    assert "[arm64]" not in check.finding
    assert check.data["arches"] == ["arm64", "x86_64"]
    assert check.fix.splitlines()[1:] == [_change(old, "@rpath/png16.16.framework/Versions/A/png16.16", binary)]


def test_fixture_32bit_header_is_read():
    binary = FIXTURES / "qemu-32bit"
    check = check_dylib_paths(binary)
    assert check.status == FAIL
    assert "LC_REEXPORT_DYLIB /Users/luke/lib/libzstd.1.dylib" in check.finding
    assert check.fix.splitlines()[1:] == [
        _change("/Users/luke/lib/libzstd.1.dylib", "@rpath/zstd.1.framework/Versions/A/zstd.1", binary)]


def test_fixture_clean_warns_on_homebrew_only():
    check = check_dylib_paths(FIXTURES / "qemu-clean", system="Linux")
    assert check.status == WARN
    assert "/opt/homebrew/opt/gnutls/lib/libgnutls.30.dylib" in check.finding
    assert "install_name_tool" not in check.fix
    assert not check.data["offending"]


def test_homebrew_library_missing_on_a_mac_fails():
    check = check_dylib_paths(FIXTURES / "qemu-clean", system="Darwin")
    assert not Path("/opt/homebrew/opt/gnutls/lib/libgnutls.30.dylib").exists()
    assert check.status == FAIL
    assert "not installed" in check.finding and "brew install" in check.fix


@pytest.mark.parametrize("name", ["qemu-ok", "qemu-stale"])
def test_fixture_clean_paths_pass(name):
    check = check_dylib_paths(FIXTURES / name)
    assert check.status == OK, check.finding
    assert check.fix == ""


def test_build_machine_rpath_warns_with_delete_rpath(tmp_path):
    binary = tmp_path / "q"
    binary.write_bytes(build_macho(["/usr/lib/libSystem.B.dylib"], id_dylib=QEMU_ID, rpaths=[f"{SYSROOT}"]))
    check = check_dylib_paths(binary)
    assert check.status == WARN
    assert f"install_name_tool -delete_rpath {SYSROOT} {binary}" in check.fix.splitlines()


def test_missing_binary(tmp_path):
    missing = tmp_path / "nope"
    assert check_dylib_paths(missing, explicit=True, system="Linux").status == FAIL
    off_mac = check_dylib_paths(missing, explicit=False, system="Linux")
    assert off_mac.status == WARN and "not macOS" in off_mac.finding and "--qemu-binary" in off_mac.fix
    on_mac = check_dylib_paths(missing, explicit=False, system="Darwin")
    assert on_mac.status == FAIL and "not found" in on_mac.finding


def test_not_a_macho_fails(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x7fELF" + bytes(60))
    check = check_dylib_paths(junk)
    assert check.status == FAIL and "not a Mach-O" in check.finding


@pytest.mark.parametrize(
    "path,verdict",
    [
        ("@rpath/glib-2.0.0.framework/Versions/A/glib-2.0.0", OK),
        ("@executable_path/libqemu-aarch64-softmmu.dylib", OK),
        ("@loader_path/../Frameworks/x", OK),
        ("/System/Library/Frameworks/Metal.framework/Versions/A/Metal", OK),
        ("/usr/lib/libSystem.B.dylib", OK),
        ("/opt/homebrew/opt/capstone/lib/libcapstone.5.dylib", WARN),
        ("/usr/local/lib/libfoo.dylib", WARN),
        ("/Users/luke/anything.dylib", FAIL),
        ("/tmp/sysroot-macOS-arm64/lib/libz.1.dylib", FAIL),
        ("@rpath/../sysroot/lib/libz.dylib", FAIL),
    ],
)
def test_classify_install_name(path, verdict):
    assert classify_install_name(path) == verdict


@pytest.mark.parametrize(
    "old,new",
    [
        (f"{SYSROOT}/libpixman-1.0.dylib", "@rpath/pixman-1.0.framework/Versions/A/pixman-1.0"),
        (f"{SYSROOT}/libqemu-aarch64-softmmu.dylib", QEMU_ID),
        ("@rpath/libgio-2.0.0.dylib", "@rpath/gio-2.0.0.framework/Versions/A/gio-2.0.0"),
        ("/Users/x/Foo.framework/Versions/A/Foo", "@rpath/Foo.framework/Versions/A/Foo"),
    ],
)
def test_framework_install_name(old, new):
    assert framework_install_name(old) == new


def test_default_binary_follows_the_targets_utm_app():
    assert default_qemu_binary(TargetConfig()) == doctor.UTM_QEMU_BINARY
    cfg = parse_target({"vm": {"utmctl": "/x/UTM.app/Contents/MacOS/utmctl"}})
    assert default_qemu_binary(cfg) == f"/x/UTM.app/{doctor.QEMU_FRAMEWORK_IN_APP}"


# -- qemu_version / qemu_fresh / runtime ----------------------------------------------------------------
def _source(tmp_path: Path, line: str) -> Path:
    src = tmp_path / "qemu-utm"
    path = src / "hw" / "display" / "helix" / "helix-frame-export.m"
    path.parent.mkdir(parents=True)
    path.write_text(
        "int helix_frame_export_init(void *virtio_gpu, int vsock_port)\n{\n"
        '    helix_log("========================================");\n'
        f"    {line}\n"
        '    helix_log("[HELIX] BUILD: Multi-client, per-scanout auto-encode, assert(isv) restored");\n}\n'
    )
    return src


def test_binary_versions_from_fixtures():
    assert binary_versions(FIXTURES / "qemu-ok") == [V10]
    assert binary_versions(FIXTURES / "qemu-fat") == [V10]  # both slices carry the same string
    assert binary_versions(FIXTURES / "qemu-stale") == [V7]


@pytest.mark.parametrize(
    "line,expected",
    [
        (f'helix_log("[HELIX] VERSION: {V10}");', V10),
        (f'error_report("[HELIX] VERSION: {V7}");', V7),
        (f'helix_log( "[HELIX] VERSION: {V10}\\n" );', V10),
    ],
)
def test_source_literal_parsing(tmp_path, line, expected):
    assert source_version(_source(tmp_path, line)) == expected


def test_source_without_literal_or_file(tmp_path):
    with pytest.raises(DoctorError, match="does not exist"):
        source_version(tmp_path)
    with pytest.raises(DoctorError, match="no helix_log"):
        source_version(_source(tmp_path, 'helix_log("hello");'))


def test_version_matches_source(tmp_path):
    src = _source(tmp_path, f'helix_log("[HELIX] VERSION: {V10}");')
    check = check_qemu_version(FIXTURES / "qemu-ok", qemu_source=src)
    assert check.status == OK and V10 in check.finding
    assert check.data["binary_version"] == V10


def test_stale_binary_against_source_fails(tmp_path):
    src = _source(tmp_path, f'helix_log("[HELIX] VERSION: {V10}");')
    check = check_qemu_version(FIXTURES / "qemu-stale", qemu_source=src)
    assert check.status == FAIL
    assert "installed QEMU is stale" in check.finding and V7 in check.finding and V10 in check.finding
    assert "fix-qemu-paths.sh" in check.fix and "restart the VM" in check.fix


def test_expect_version(tmp_path):
    assert check_qemu_version(FIXTURES / "qemu-ok", expect_version=V10).status == OK
    stale = check_qemu_version(FIXTURES / "qemu-stale", expect_version=V10)
    assert stale.status == FAIL and "installed QEMU is stale" in stale.finding


def test_version_without_expectation_reports_it():
    check = check_qemu_version(FIXTURES / "qemu-ok")
    assert check.status == OK and V10 in check.finding and "--qemu-source" in check.finding


def test_binary_without_helix_is_not_a_helix_build(tmp_path):
    binary = tmp_path / "stock"
    binary.write_bytes(build_macho(["/usr/lib/libSystem.B.dylib"], strings=(b"QEMU emulator",)))
    check = check_qemu_version(binary, expect_version=V10)
    assert check.status == FAIL and "not a Helix QEMU build" in check.finding


def test_fat_slices_with_different_versions(tmp_path):
    binary = tmp_path / "fat"
    binary.write_bytes(build_fat([
        build_macho([], strings=(f"[HELIX] VERSION: {V10}".encode(),)),
        build_macho([], cputype="x86_64", strings=(f"[HELIX] VERSION: {V7}".encode(),)),
    ]))
    assert binary_versions(binary) == [V10, V7]
    assert check_qemu_version(binary).status == WARN
    assert check_qemu_version(binary, expect_version=V10).status == FAIL


def test_unknown_source_dir_fails(tmp_path):
    check = check_qemu_version(FIXTURES / "qemu-ok", qemu_source=tmp_path)
    assert check.status == FAIL and "source version is unknown" in check.finding


def test_runtime_version_comparison():
    log = "\n".join([
        "========================================",
        f"helix: [HELIX] VERSION: {V10}",
        "[HELIX] BUILD: Multi-client",
        f"[HELIX] VERSION: {V7}",  # only the first line after VM start counts
    ])
    ok = check_runtime_version(V10, log)
    assert ok.name == "qemu_runtime_version" and ok.status == OK
    stale = check_runtime_version(V7, log)
    assert stale.status == FAIL and "stale" in stale.finding and "restart the VM" in stale.fix
    assert check_runtime_version(V10, "[HELIX] Waiting for client connection...\n").status == WARN
    assert check_runtime_version(None, log).status == OK
    assert check_runtime_version(V10, log.encode()).status == OK  # HostArtifacts.new_log_bytes() output


def test_format_string_versions_are_not_compared(tmp_path):
    binary = tmp_path / "q"
    binary.write_bytes(build_macho([], strings=(b"[HELIX] VERSION: %s",)))
    assert check_qemu_version(binary, expect_version=V10).status == WARN


def test_qemu_fresh(tmp_path):
    binary = tmp_path / "q"
    binary.write_bytes(b"x")
    os.utime(binary, (1_000_000, 1_000_000))
    older = check_qemu_fresh(binary, tmp_path, commit_time=lambda _dir: 2_000_000.0)
    assert older.status == WARN and "older than the last commit" in older.finding
    newer = check_qemu_fresh(binary, tmp_path, commit_time=lambda _dir: 500_000.0)
    assert newer.status == OK
    skipped = check_qemu_fresh(binary, None)
    assert skipped.status == OK and "skipped" in skipped.finding


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_qemu_fresh_outside_a_checkout_warns(tmp_path):
    binary = tmp_path / "q"
    binary.write_bytes(b"x")
    plain = tmp_path / "not-a-repo"
    plain.mkdir()
    check = check_qemu_fresh(binary, plain)
    assert check.status == WARN and "cannot compare" in check.finding


# -- utmctl / hvf --------------------------------------------------------------------------------------------
def _fake_utmctl(tmp_path: Path, *, stdout: str = "", stderr: str = "", mode: int = 0o755) -> Path:
    out, err = tmp_path / "list.out", tmp_path / "list.err"
    out.write_text(stdout)
    err.write_text(stderr)
    script = tmp_path / "utmctl"
    script.write_text(f"#!/bin/sh\ncat '{out}'\ncat '{err}' >&2\nexit 0\n")
    script.chmod(mode)
    return script


def _utm_target(utmctl: Path, vm_id: str = VM_UUID) -> TargetConfig:
    return parse_target({"vm": {"id": vm_id, "utmctl": str(utmctl)}})


LISTING = format_list([VmEntry(VM_UUID, "stopped", "Helix"), VmEntry("01CECE09-0000-4000-8000-000000000000",
                                                                     "started", "Other")])


def test_utmctl_lists_the_vm(tmp_path):
    utmctl = _fake_utmctl(tmp_path, stdout=LISTING)
    check = check_utmctl(_utm_target(utmctl), system="Darwin", environ={})
    assert check.status == OK and "Helix" in check.finding and "stopped" in check.finding
    assert check.data["vm_status"] == "stopped"
    by_name = check_utmctl(_utm_target(utmctl, "Other"), system="Darwin", environ={})
    assert by_name.status == OK and by_name.data["vm_status"] == "started"


def test_utmctl_vm_missing_or_unset(tmp_path):
    utmctl = _fake_utmctl(tmp_path, stdout=LISTING)
    missing = check_utmctl(_utm_target(utmctl, "11111111-2222-4333-8444-555555555555"), system="Darwin", environ={})
    assert missing.status == FAIL and "not in `utmctl list`" in missing.finding and "Helix" in missing.finding
    unset = check_utmctl(_utm_target(utmctl, ""), system="Darwin", environ={})
    assert unset.status == FAIL and "no [vm] id" in unset.finding and VM_UUID in unset.finding


def test_utmctl_without_gui_login_fails(tmp_path):
    utmctl = _fake_utmctl(tmp_path, stderr=NO_GUI_MESSAGE + "\n")
    check = check_utmctl(_utm_target(utmctl), system="Darwin", environ={"SSH_CONNECTION": "10.0.0.2 5 10.0.0.1 22"})
    assert check.status == FAIL
    assert "-1743" in check.finding and "-600" in check.finding and "SSH session" in check.finding
    assert "GUI session" in check.fix


def test_utmctl_over_ssh_warns_even_when_it_works(tmp_path):
    utmctl = _fake_utmctl(tmp_path, stdout=LISTING)
    check = check_utmctl(_utm_target(utmctl), system="Darwin", environ={"SSH_TTY": "/dev/ttys001"})
    assert check.status == WARN and "-1743" in check.finding
    # on Linux an SSH session says nothing about Apple Events
    assert check_utmctl(_utm_target(utmctl), system="Linux", environ={"SSH_TTY": "/dev/pts/1"}).status == OK


def test_utmctl_missing_or_not_executable(tmp_path):
    absent = _utm_target(tmp_path / "nope")
    assert check_utmctl(absent, system="Darwin", environ={}).status == FAIL
    linux = check_utmctl(absent, system="Linux", environ={})
    assert linux.status == WARN and "not macOS" in linux.finding
    plain = _fake_utmctl(tmp_path, stdout=LISTING, mode=0o644)
    check = check_utmctl(_utm_target(plain), system="Darwin", environ={})
    assert check.status == FAIL and "chmod +x" in check.fix


def test_hvf():
    assert check_hvf(system="Linux") == Check("hvf", OK, "skipped: not macOS")
    assert check_hvf(system="Darwin", sysctl=lambda: "1").status == OK
    zero = check_hvf(system="Darwin", sysctl=lambda: "0")
    assert zero.status == FAIL and "kern.hv_support = 0" in zero.finding

    def missing() -> str:
        raise DoctorError("sysctl kern.hv_support: unknown oid 'kern.hv_support'")

    assert check_hvf(system="Darwin", sysctl=missing).status == FAIL
    assert check_hvf(system="Darwin", sim=True).status == OK


# -- frame_export_port --------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_port_held_by_another_process_fails_naming_it():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        check = check_frame_export_port("127.0.0.1", port)
    assert check.status == FAIL
    assert f"pid {os.getpid()}" in check.finding
    import psutil

    assert f"({psutil.Process().name()})" in check.finding  # the holder's process name
    assert f"Failed to bind TCP socket on port {port}" in check.finding
    assert f"kill {os.getpid()}" in check.fix


def test_free_port_is_ok_and_warns_when_the_vm_runs():
    port = _free_port()
    assert check_frame_export_port("127.0.0.1", port).status == OK
    assert check_frame_export_port("127.0.0.1", port, vm_status="started").status == WARN


def test_port_held_by_qemu():
    qemu = lambda _port: [(4242, "QEMULauncher", "/Applications/UTM.app/…/QEMULauncher")]  # noqa: E731
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        running = check_frame_export_port("127.0.0.1", port, vm_status="started", listeners=qemu)
        stale = check_frame_export_port("127.0.0.1", port, vm_status="stopped", listeners=qemu)
        sim = check_frame_export_port("127.0.0.1", port, sim=True,
                                      listeners=lambda _p: [(7, "python3", "python -m helix_sim up --json")])
        hidden = check_frame_export_port("127.0.0.1", port, listeners=lambda _p: [])
    assert running.status == OK and "pid 4242 (QEMULauncher)" in running.finding
    assert stale.status == FAIL and "stale QEMU" in stale.finding and "kill 4242" in stale.fix
    assert sim.status == OK
    assert hidden.status == FAIL and "lsof" in hidden.fix


# -- ssh_key / known_hosts / usercreds ---------------------------------------------------------------------
def _key(tmp_path: Path, mode: int, text: str = "-----BEGIN OPENSSH PRIVATE KEY-----\nxxx\n") -> Path:
    path = tmp_path / "id_test"
    path.write_text(text)
    path.chmod(mode)
    return path


def _ssh_target(key: Path, known_hosts: Path | None = None, *, tofu: bool = False, port: int = 2222) -> TargetConfig:
    ssh = {"key": str(key), "port": port, "trust_on_first_use": tofu}
    if known_hosts is not None:
        ssh["known_hosts"] = str(known_hosts)
    return parse_target({"ssh": ssh})


def test_ssh_key_permissions(tmp_path):
    key = _key(tmp_path, 0o600)
    assert check_ssh_key(_ssh_target(key)).status == OK
    key.chmod(0o644)
    loose = check_ssh_key(_ssh_target(key))
    assert loose.status == FAIL and "0644" in loose.finding and loose.fix == f"chmod 600 {key}"
    key.chmod(0o640)
    assert check_ssh_key(_ssh_target(key)).status == FAIL
    missing = check_ssh_key(_ssh_target(tmp_path / "absent"))
    assert missing.status == FAIL and "ssh-keygen" in missing.fix
    pub = _key(tmp_path, 0o600, "ssh-ed25519 AAAAC3Nza... me@host\n")
    assert check_ssh_key(_ssh_target(pub)).status == WARN


def _host_key_line(name: str) -> str:
    key = paramiko.ECDSAKey.generate()
    return f"{name} {key.get_name()} {key.get_base64()}\n"


def test_known_hosts_entries(tmp_path):
    key = _key(tmp_path, 0o600)
    kh = tmp_path / "known_hosts"
    kh.write_text(_host_key_line("[127.0.0.1]:2222"))
    ok = check_known_hosts(_ssh_target(key, kh))
    assert ok.status == OK and "[127.0.0.1]:2222" in ok.finding
    other_port = check_known_hosts(_ssh_target(key, kh, port=2223))
    assert other_port.status == FAIL and "[127.0.0.1]:2223" in other_port.finding
    assert "ssh-keyscan -p 2223" in other_port.fix
    assert check_known_hosts(_ssh_target(key, kh, port=2223, tofu=True)).status == WARN
    kh.write_text(_host_key_line(paramiko.HostKeys.hash_host("[127.0.0.1]:2223")))
    assert check_known_hosts(_ssh_target(key, kh, port=2223)).status == OK  # hashed entry
    kh.write_text(_host_key_line("127.0.0.1"))
    assert check_known_hosts(_ssh_target(key, kh, port=22)).status == OK  # port 22: plain host name
    kh.write_text("[127.0.0.1]:2222 ssh-ed25519 !!!not-base64\n")
    broken = check_known_hosts(_ssh_target(key, kh))
    assert broken.status == FAIL and "malformed line" in broken.finding
    absent = tmp_path / "absent"
    assert check_known_hosts(_ssh_target(key, absent)).status == FAIL
    assert check_known_hosts(_ssh_target(key, absent, tofu=True)).status == WARN


SECRET = "hl-doctor-test-secret-value-123"


def _creds(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / ".env.usercreds"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_usercreds(tmp_path):
    default = check_usercreds(None)
    assert default.status == OK and "checked in the guest at session start" in default.finding
    full = (f"HELIX_API_KEY={SECRET}\nHELIX_URL=http://localhost:8080\n"
            "HELIX_PROJECT=prj_123\nHELIX_UBUNTU_AGENT=app_456\n")
    ok = check_usercreds(_creds(tmp_path, full))
    assert ok.status == OK
    for key in ("HELIX_API_KEY", "HELIX_URL", "HELIX_PROJECT", "HELIX_UBUNTU_AGENT"):
        assert key in ok.finding
    assert SECRET not in json.dumps(ok.as_dict()) and "prj_123" not in ok.finding
    loose = check_usercreds(_creds(tmp_path, full, 0o644))
    assert loose.status == WARN and "chmod 600" in loose.fix
    no_agent = check_usercreds(_creds(tmp_path, full.replace("HELIX_UBUNTU_AGENT=app_456\n", "")))
    assert no_agent.status == WARN and "HELIX_UBUNTU_AGENT" in no_agent.finding
    no_key = check_usercreds(_creds(tmp_path, "HELIX_URL=http://x\nHELIX_PROJECT=prj_1\n"))
    assert no_key.status == FAIL and "HELIX_API_KEY" in no_key.finding
    runner = check_usercreds(_creds(tmp_path, full.replace(SECRET, "oh-hallo-insecure-token")))
    assert runner.status == FAIL and "oh-hallo-insecure-token" not in runner.finding + runner.fix
    assert check_usercreds(tmp_path / "absent").status == FAIL


# -- disk / memory --------------------------------------------------------------------------------------------
def test_disk_thresholds(tmp_path, monkeypatch):
    def usage(free: int):
        return lambda _path: shutil._ntuple_diskusage(100 * doctor.GIB, 100 * doctor.GIB - free, free)

    target = tmp_path / "reports" / "latest"  # need not exist yet
    monkeypatch.setattr(doctor_host.shutil, "disk_usage", usage(1 * doctor.GIB))
    assert check_disk(target).status == FAIL
    monkeypatch.setattr(doctor_host.shutil, "disk_usage", usage(3 * doctor.GIB))
    assert check_disk(target).status == WARN
    monkeypatch.setattr(doctor_host.shutil, "disk_usage", usage(50 * doctor.GIB))
    ok = check_disk(target)
    assert ok.status == OK and "50.0 GiB free" in ok.finding


def test_memory_thresholds():
    assert check_memory(available=512 << 20).status == FAIL
    assert check_memory(available=2 * doctor.GIB).status == WARN
    assert check_memory(available=16 * doctor.GIB).status == OK


# -- report / run_doctor -----------------------------------------------------------------------------------------
def test_report_shape_and_rendering():
    report = DoctorReport([
        Check("a", OK, "fine"),
        Check("b", WARN, "meh", "do x"),
        Check("c", FAIL, "broken\nacross lines", "step 1\nstep 2"),
    ], target="t")
    assert [c.name for c in report.failed] == ["c"]
    assert report.get("b").fix == "do x" and report.get("zzz") is None
    assert report.as_dict() == {"checks": [
        {"name": "a", "status": "ok", "finding": "fine", "fix": ""},
        {"name": "b", "status": "warn", "finding": "meh", "fix": "do x"},
        {"name": "c", "status": "fail", "finding": "broken across lines", "fix": "step 1\nstep 2"},
    ]}
    text = report.render_text()
    assert "FAIL  c  broken across lines" in text and "fix: step 1" in text and "  step 2" in text
    assert "1 ok, 1 warning(s), 1 failed" in text
    assert report.summary().startswith("doctor: 1 check(s) failed: c: broken across lines")
    assert not DoctorReport([Check("a", OK, "fine")]).failed
    with pytest.raises(DoctorError):
        Check("x", "bad", "y")


def test_a_crashing_check_becomes_a_failure():
    def boom() -> Check:
        raise RuntimeError("kaput")

    check = doctor._guarded("x", boom)
    assert check.status == FAIL and "RuntimeError: kaput" in check.finding


def test_unstarted_sim_target_skips_what_the_simulator_provides(tmp_path):
    target = parse_target({"sim": {"fps": 40}}, source="sim.toml")
    report = run_doctor(target, reports_dir=tmp_path, system="Linux", environ={})
    assert tuple(c.name for c in report.checks) == CHECK_NAMES
    for name in ("dylib_paths", "qemu_version", "utmctl", "frame_export_port", "ssh_key", "known_hosts"):
        check = report.get(name)
        assert check.status == OK and "skipped" in check.finding


# -- the CLI -----------------------------------------------------------------------------------------------------
@pytest.fixture
def healthy_target(tmp_path, monkeypatch) -> Path:
    """A target whose every host-side check passes on Linux: fake utmctl, key, known_hosts, free port."""
    for name in (*ENV_OVERRIDES, TARGET_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(doctor_host, "MEMORY_FAIL_BYTES", 0)
    monkeypatch.setattr(doctor_host, "DISK_FAIL_BYTES", 0)
    monkeypatch.setattr(doctor_host, "_sysctl_hv_support", lambda: "1")  # a Mac CI runner may lack hvf
    utmctl = _fake_utmctl(tmp_path, stdout=LISTING)
    key = _key(tmp_path, 0o600)
    kh = tmp_path / "known_hosts"
    kh.write_text(_host_key_line("[127.0.0.1]:2222"))
    target = tmp_path / "target.toml"
    target.write_text(
        f'name = "test-mac"\n[vm]\nid = "{VM_UUID}"\nutmctl = "{utmctl}"\n'
        f'[ssh]\nkey = "{key}"\nknown_hosts = "{kh}"\nport = 2222\n'
        f"[frame_export]\nport = {_free_port()}\n"
    )
    return target


def _run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_cli_json_and_exit_codes(healthy_target, tmp_path, capsys):
    base = ["doctor", "--target", str(healthy_target), "--report-dir", str(tmp_path / "reports")]
    code, out = _run_cli(capsys, *base, "--qemu-binary", str(FIXTURES / "qemu-ok"), "--expect-version", V10, "--json")
    data = json.loads(out)
    assert set(data) == {"checks"}
    assert [c["name"] for c in data["checks"]] == list(CHECK_NAMES)
    for c in data["checks"]:
        assert set(c) == {"name", "status", "finding", "fix"} and c["status"] in (OK, WARN)
    assert code == 0

    code, out = _run_cli(capsys, *base, "--qemu-binary", str(FIXTURES / "qemu-sysroot"), "--json")
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert code == 1 and checks["dylib_paths"]["status"] == FAIL
    assert "install_name_tool -change" in checks["dylib_paths"]["fix"]

    code, out = _run_cli(capsys, *base, "--qemu-binary", str(FIXTURES / "qemu-stale"), "--expect-version", V10)
    assert code == 1
    assert "FAIL  qemu_version" in out and "installed QEMU is stale" in out


def test_cli_bad_target_is_a_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(TARGET_ENV, raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["doctor", "--target", str(tmp_path / "missing.toml")])
    assert exc.value.code == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_never_prints_usercreds_values(healthy_target, tmp_path, capsys):
    creds = _creds(tmp_path, f"HELIX_API_KEY={SECRET}\nHELIX_URL=http://x\nHELIX_PROJECT=prj_9\n"
                             "HELIX_UBUNTU_AGENT=app_9\n")
    code, out = _run_cli(capsys, "doctor", "--target", str(healthy_target), "--usercreds", str(creds),
                         "--qemu-binary", str(FIXTURES / "qemu-ok"), "--report-dir", str(tmp_path))
    assert code == 0, out
    assert SECRET not in out and "ok    usercreds" in out


def test_run_doctor_checks_the_binary_in_a_fake_utm_app(tmp_path):
    """The simulator's layout: utmctl inside <UTM.app>/Contents/MacOS, QEMU in its Frameworks."""
    app = tmp_path / "UTM.app"
    binary = app / doctor.QEMU_FRAMEWORK_IN_APP
    binary.parent.mkdir(parents=True)
    binary.write_bytes((FIXTURES / "qemu-sysroot").read_bytes())
    utmctl_dir = app / "Contents" / "MacOS"
    utmctl_dir.mkdir(parents=True)
    utmctl = _fake_utmctl(tmp_path, stdout=LISTING)
    shutil.copy(utmctl, utmctl_dir / "utmctl")
    target = _utm_target(utmctl_dir / "utmctl")
    report = run_doctor(target, expect_version=V10, reports_dir=tmp_path, system="Linux", environ={})
    assert report.get("dylib_paths").status == FAIL and str(binary) in report.get("dylib_paths").finding
    assert report.get("qemu_version").status == OK
    assert report.get("utmctl").status == OK
    assert "dylib_paths" in report.summary()
