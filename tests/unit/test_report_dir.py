"""The report folder: nothing that is not ours is emptied, one run at a time, a bounded number of copies."""

from __future__ import annotations

import json

import pytest

from harness.plugin.session import MARKER, ReportDirError, lock_reports, prepare_report_dir, publish_dated_copy


def test_a_symlinked_latest_is_refused_and_its_target_untouched(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "important.txt").write_text("keep me")
    (tmp_path / "latest").symlink_to(other)
    with pytest.raises(ReportDirError, match="symlink"):
        prepare_report_dir(tmp_path / "latest")
    assert (other / "important.txt").read_text() == "keep me"


def test_a_folder_we_did_not_make_is_refused(tmp_path):
    latest = tmp_path / "latest"
    latest.mkdir()
    (latest / "thesis.tex").write_text("years of work")
    with pytest.raises(ReportDirError, match="did not write"):
        prepare_report_dir(latest)
    assert (latest / "thesis.tex").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(ReportDirError, match="not a folder"):
        prepare_report_dir(tmp_path / "file")


def test_our_folder_is_emptied_but_for_what_this_run_writes(tmp_path):
    latest = tmp_path / "latest"
    prepare_report_dir(latest)
    assert (latest / MARKER).exists()
    (latest / "stream.hxwsrec").write_bytes(b"old")
    (latest / "artifacts").mkdir()
    (latest / "junit.xml").write_text("<x/>")
    prepare_report_dir(latest, keep=("junit.xml",))
    assert sorted(p.name for p in latest.iterdir()) == [MARKER, "junit.xml"]
    # A folder from before the marker is ours when its metrics.json is.
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "metrics.json").write_text(json.dumps({"schema": "helix-e2e/metrics/1"}))
    prepare_report_dir(legacy)
    assert sorted(p.name for p in legacy.iterdir()) == [MARKER]


def test_one_run_at_a_time(tmp_path):
    first = lock_reports(tmp_path)
    try:
        with pytest.raises(ReportDirError, match="another helix-e2e run"):
            lock_reports(tmp_path)
    finally:
        first.release()
    lock_reports(tmp_path).release()


def test_dated_copies_are_bounded(tmp_path):
    latest = tmp_path / "latest"
    prepare_report_dir(latest)
    (latest / "metrics.json").write_text("{}")
    for i in range(5):  # older copies, as earlier runs left them
        old = tmp_path / f"2026010{i}-000000"
        old.mkdir()
        (old / MARKER).write_text("")
    (tmp_path / "20250101-000000").mkdir()  # not ours (no marker): never pruned
    dated = publish_dated_copy(latest, keep=3)
    assert dated is not None and (dated / "metrics.json").exists()
    ours = sorted(p.name for p in tmp_path.iterdir() if (p / MARKER).exists() and p.name != "latest")
    assert len(ours) == 3 and dated.name in ours
    assert (tmp_path / "20250101-000000").exists()
