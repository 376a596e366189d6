from pathlib import Path

from harness.analysis.logscan import PATTERNS, SEVERITIES, scan_file, scan_text

LOGS = Path(__file__).resolve().parents[2] / "fixtures" / "logs"


def test_vsockenc_nonzero_ids():
    r = scan_file(LOGS / "desktop-shm.log")
    ids = r.resource_ids
    assert ids.source == "vsockenc"
    assert (ids.nonzero, ids.zero) == (3, 0)  # the DMA-BUF line and two Sent frame lines
    assert any("resource_id=17" in s for s in ids.samples)


def test_vsockenc_zero_ids_carry_the_reason_and_the_host_error():
    r = scan_file(LOGS / "desktop-shm-zero.log")
    assert (r.resource_ids.nonzero, r.resource_ids.zero) == (0, 1)
    assert any("Buffer is not DMA-BUF backed" in z for z in r.resource_ids.zero_reasons)
    assert any("Host encoder error -2: Error: -2" in x for x in r.rejections)
    assert any(e["pattern"] == "vsockenc_error" for e in r.errors)


def test_qemu_log_versions_frames_drops_hangs_errors():
    r = scan_file(LOGS / "helix-debug-v10.log")
    assert r.versions == ["2026-02-15-v10-ipa-granule-test"]
    assert r.resource_ids.source == "frame_ready" and r.resource_ids.nonzero == 2
    assert r.drops == {"qemu_vt_drop": 12, "qemu_client_drop": 364100}
    assert [h["pattern"] for h in r.hangs] == ["blocked_reentrant_io"]
    assert any(e["pattern"] == "qemu_bind_failed" and e["severity"] == "fatal" for e in r.errors)
    assert r.rejections and "resource_id=0 not supported" in r.rejections[0]


def test_garbage_and_binary_input_is_counted_not_fatal():
    r = scan_text(b"\xff\xfe\x00garbage\n[FRAME_READY] #1 scanout=1 resource=0 has_subscriber=YES\n\xc3")
    assert r.undecodable_lines == 2
    assert r.resource_ids.zero == 1


def test_pattern_table_is_well_formed():
    names = [p.name for p in PATTERNS]
    assert len(names) == len(set(names))
    assert all(p.severity in SEVERITIES for p in PATTERNS)


# ---------------------------------------------------------------- bounded time and memory

import re  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

from harness.analysis import logscan  # noqa: E402
from harness.deadline import Deadline  # noqa: E402


def _literal_prefix(pattern: logscan.Pattern) -> str:
    """The pattern's leading literal text (what a hostile line repeats to create many candidates)."""
    return re.sub(r"\\(.)", r"\1", re.split(r"(?<!\\)[(\[\\]d|(?<!\\)\(|\\[dsSw]", pattern.regex.pattern)[0])


def test_every_pattern_is_linear_on_its_own_repeated_prefix():
    """A 1 MiB line made of a pattern's needle or prefix, repeated, with or without digits after it."""
    size = 1 << 20
    for pat in PATTERNS:
        for unit in {*pat.needles, _literal_prefix(pat), _literal_prefix(pat) + "1", _literal_prefix(pat) + " "}:
            if not unit:
                continue
            line = (unit * (size // len(unit) + 1))[:size]
            start = time.perf_counter()
            pat.search(line)
            elapsed = time.perf_counter() - start
            assert elapsed < 0.5, f"{pat.name} took {elapsed:.2f}s on {unit!r} repeated: not linear"


def test_no_pattern_has_unbounded_repetition_before_more_pattern():
    """The construct behind the 21 s scan: `.*` (or `.+`) followed by more pattern, in one regex."""
    for pat in PATTERNS:
        for regex in filter(None, (pat.regex, pat.tail)):
            for m in re.finditer(r"\.[*+]", regex.pattern):
                rest = regex.pattern[m.end():]
                assert rest in ("", ")"), f"{pat.name}: `{m.group()}` followed by {rest!r}"
        assert pat.needles, f"{pat.name} has no needle: every line would run its regex"


def test_needles_never_hide_a_match():
    for line in (LOGS / "reference-formats.log").read_text().splitlines():
        for pat in PATTERNS:
            if pat.regex.search(line) and (pat.tail is None or pat.tail.search(line)):
                assert any(n in line for n in pat.needles), (pat.name, line)


def test_a_scan_that_runs_out_of_time_says_so():
    text = "[FRAME_READY] #1 scanout=1 resource=17 has_subscriber=YES\n" * 10_000
    r = scan_text(text, deadline=Deadline(0))
    assert r.timed_out and r.lines == 0 and r.as_dict()["timed_out"] is True
    full = scan_text(text, deadline=30)
    assert not full.timed_out and full.lines == 10_000
    with pytest.raises(ValueError):
        scan_text(text, deadline=float("nan"))


def test_lists_are_capped_and_the_rest_is_counted():
    lines = [f"[HELIX] VERSION: v{i}" for i in range(200)] + [f"QEMU error: e{i}" for i in range(300)]
    r = scan_text("\n".join(lines))
    assert r.versions == [f"v{i}" for i in range(logscan.MAX_LIST)]
    assert r.omitted == {"versions": 200 - logscan.MAX_LIST, "errors": 300 - logscan.MAX_EVENTS}
    assert r.as_dict()["omitted"] == r.omitted


def test_over_long_lines_are_cut_and_counted():
    line = b"x" * (logscan.MAX_LINE * 2 + 10) + b"\n[HELIX] VERSION: after\n"
    r = scan_text(line)
    assert r.cut_lines == 2 and r.lines == 4 and r.versions == ["after"]
    chunks = [line[i : i + 4096] for i in range(0, len(line), 4096)]
    pieces = list(logscan.iter_lines(chunks))
    assert [len(p) for p in pieces] == [logscan.MAX_LINE, logscan.MAX_LINE, 10, len("[HELIX] VERSION: after")]
