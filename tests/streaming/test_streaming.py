"""The Apple Silicon streaming check: boot → stack → spectask session → vkcube → stream.

Runs against the target config (the embedded simulator by default; a real UTM VM with
``--target``). Each test asserts one line of the manual checklist; the logic of each check
lives in ``harness.verdict.checks`` (shared with triage and soak), and its message says why it failed.
"""

from __future__ import annotations

import pytest

from harness.verdict import checks

pytestmark = pytest.mark.streaming


def expect(finding: checks.Finding) -> None:
    assert finding.ok, f"{finding.message}" + (f" (hint: {finding.hint})" if finding.hint else "")


@pytest.mark.e2e_artifacts("timeline", "crashes")
def test_vm_boots_without_crash(booted_vm):
    expect(checks.vm_boot(booted_vm))


def test_desktop_container_starts(helix_session):
    expect(checks.desktop_container(helix_session))


@pytest.mark.e2e_artifacts("thumbnails")
def test_vkcube_running(stream_run):
    expect(checks.vkcube(stream_run))


@pytest.mark.e2e_artifacts("fps_plot", "thumbnails", "clip")
def test_stream_fps_in_band(stream_run, target):
    expect(checks.fps_in_band(stream_run, target))


@pytest.mark.e2e_artifacts("fps_plot", "thumbnails", "clip", "logs")
def test_stream_has_no_errors(stream_run):
    expect(checks.stream_errors(stream_run))


@pytest.mark.e2e_artifacts("logs")
def test_resource_ids_nonzero(stream_run):
    expect(checks.resource_ids(stream_run))


@pytest.mark.e2e_artifacts("probe")
def test_qemu_rejects_resource_id_zero(frame_export_probe):
    expect(checks.qemu_rejects_zero(frame_export_probe))


@pytest.mark.e2e_artifacts("crashes", "logs", "timeline")
def test_no_crash_after_streaming(crash_evidence):
    expect(checks.no_crash(crash_evidence))


def test_cli_stream_agrees_with_capture(stream_run, target):
    finding = checks.cli_agrees(stream_run, target)
    if stream_run.cli_skipped:  # no helix CLI on this target (Helix.app without [vm] helix_cli)
        pytest.skip(stream_run.cli_skipped)
    expect(finding)
