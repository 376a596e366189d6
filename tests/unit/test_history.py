"""`helix-e2e history`: every run under a reports directory on one page, regressions by a stated rule."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.report.history import (
    MEASURES, REGRESSION_MIN_BASELINE, REGRESSION_RULE, Run, collect_runs, history_html, regressions, write_history,
)
from report_samples import T0, Tags, metrics, write_nights


def _run(i: int, value: float, verdict: str = "PASS", key: str = "fps") -> Run:
    return Run(when=T0 + i, target="sim", verdict=verdict, values={key: value}, key=(str(i), "sim"))


def test_ten_nights_two_failed_one_point_per_run_per_chart(tmp_path):
    write_nights(tmp_path / "reports", 10, failures={3: "low_fps", 7: "frozen"})
    out = tmp_path / "reports" / "history.html"
    assert main(["history", str(tmp_path / "reports"), "--html", str(out)]) == 0
    page = Tags(out.read_text())
    charts = [a for t, a in page.tags if t == "svg" and "e2e-trend-chart" in a.get("class", "")]
    assert {c["data-measure"] for c in charts} == {"fps", "fps_min_window", "first_frame_s", "boot_s", "stack_s",
                                                    "session_s"}  # QEMU RSS was measured in no run
    assert page.count("circle", "point") == 10 * len(charts)
    assert page.count("path", "fail") == 2 * len(charts) and page.count("rect", "pass") == 8 * len(charts)
    rows = [a for t, a in page.tags if t == "tr" and "data-run" in a]
    assert [r["class"] for r in rows].count("fail") == 2 and len(rows) == 10
    text = " ".join(page.text)
    assert "stream / low fps" in text and "stream / frozen" in text
    assert "Not measured in any run: QEMU resident memory (soak)" in text
    assert REGRESSION_RULE in text
    links = [a["href"] for t, a in page.tags if t == "a" and "report-link" in a.get("class", "")]
    assert len(links) == 10 and all((out.parent / link).is_file() for link in links)
    assert "<title>helix-e2e history: 10 runs of sim, 2026-11-01" in out.read_text()


def test_the_same_run_counts_once(tmp_path):
    """latest/ and its dated copy, and the run's history.jsonl line, are one run; a history line whose
    folder was cleaned away is still a run (without a report link)."""
    root = tmp_path / "reports"
    nights = write_nights(root, 3, failures={})
    dated = sorted(p for p in root.iterdir() if p.is_dir())
    shutil.copytree(dated[-1], root / "latest")
    shutil.rmtree(dated[0])
    runs = collect_runs(root)
    assert len(runs) == 3
    assert runs[0].report is None and runs[0].source.name == "history.jsonl"
    assert runs[-1].report is not None and "latest" not in runs[-1].report.parts  # the dated copy is linked
    assert runs[-1].values["fps"] == nights[-1]["fps"]


def test_xdist_merged_metrics_give_one_run_per_target(tmp_path):
    root = tmp_path / "reports" / "latest"
    root.mkdir(parents=True)
    merged = {"schema": "helix-e2e/metrics/1", "tests": {},
              "targets": {"sim@gw0": metrics(target="sim@gw0"), "sim@gw1": metrics(target="sim@gw1", fps=41.0)}}
    (root / "metrics.json").write_text(json.dumps(merged))
    for wid in ("gw0", "gw1"):  # the workers' own copies
        (root / wid).mkdir()
        (root / wid / "metrics.json").write_text(json.dumps(merged["targets"][f"sim@{wid}"]))
    runs = collect_runs(tmp_path / "reports")
    assert sorted((r.target, r.values["fps"]) for r in runs) == [("sim@gw0", 40.0), ("sim@gw1", 41.0)]


def test_soak_qemu_rss_is_charted_where_measured(tmp_path):
    root = tmp_path / "reports"
    write_nights(root, 2, failures={})
    night = sorted(p for p in root.iterdir() if p.is_dir())[1]
    (night / "soak.json").write_text(json.dumps({"iterations": [{"qemu_rss_mb": 812.5}, {"qemu_rss_mb": 845.0}]}))
    runs = collect_runs(root)
    assert [r.values["qemu_rss_mb"] for r in runs] == [None, 845.0]
    page = Tags(history_html(runs, out_dir=root))
    assert any(a.get("data-measure") == "qemu_rss_mb" for t, a in page.tags if t == "svg")


def test_regression_rule_flags_a_move_beyond_the_usual_spread():
    steady = [40.0, 40.3, 39.8, 40.1, 40.2, 39.9]
    runs = [_run(i, v) for i, v in enumerate(steady)] + [_run(6, 36.0), _run(7, 40.0), _run(8, 39.7)]
    flagged = regressions(runs)
    assert list(flagged) == [(6, "fps")]
    reg = flagged[(6, "fps")]
    assert reg.median == pytest.approx(40.05) and reg.baseline == 6
    assert "FPS" in reg.text() and "36.0" in reg.text()


def test_regression_needs_a_baseline_and_a_real_change():
    # too few earlier runs: no judgement
    runs = [_run(i, 40.0) for i in range(REGRESSION_MIN_BASELINE - 1)] + [_run(9, 10.0)]
    assert regressions(runs) == {}
    # a perfectly steady measure (spread 0) moving by less than 10 % is noise, not a regression
    runs = [_run(i, 40.0) for i in range(8)] + [_run(8, 37.0)]
    assert regressions(runs) == {}
    # better is never a regression; failed runs do not form the baseline
    runs = [_run(i, 40.0 + i % 2) for i in range(8)] + [_run(8, 60.0)]
    assert regressions(runs) == {}
    runs = [_run(i, 20.0, "FAIL") for i in range(8)] + [_run(8, 20.0)]
    assert regressions(runs) == {}
    # times: higher is worse
    runs = [_run(i, 2.0 + (i % 2) * 0.1, key="stack_s") for i in range(8)] + [_run(8, 6.0, key="stack_s")]
    assert list(regressions(runs)) == [(8, "stack_s")]


def test_a_slow_night_is_marked_on_the_page(tmp_path):
    root = tmp_path / "reports"
    write_nights(root, 10, failures={}, slow_stack=8)
    out, runs, flagged = write_history(root, tmp_path / "out" / "history.html")
    assert flagged == 1
    page = Tags(out.read_text())
    assert page.count("circle", "regression") == 1 and page.count("td", "regression") == 1
    assert re.search(r"stack phase 5\.40 s vs a median of 1\.8\d", " ".join(page.text))
    links = [a["href"] for t, a in page.tags if t == "a" and "report-link" in a.get("class", "")]
    assert all(link.startswith("../reports/") and (out.parent / link).is_file() for link in links)


def test_every_value_is_escaped(tmp_path):
    evil = "<img src=x onerror=alert(1)>"
    root = tmp_path / "reports"
    m = metrics(target=evil, failure="low_fps")
    m["triage"]["hint"] = "<script>alert(2)</script>"
    m["provenance"]["ci_run_url"] = "javascript:alert(3)"
    (root / "a").mkdir(parents=True)
    (root / "a" / "metrics.json").write_text(json.dumps(m))
    out, _, _ = write_history(root, root / "history.html")
    text = out.read_text()
    assert "<img" not in text and "<script" not in text and "javascript:" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text


def test_no_runs_is_an_error_with_a_hint(tmp_path, capsys):
    with pytest.raises(HarnessError, match="no metrics.json or history.jsonl"):
        write_history(tmp_path, tmp_path / "h.html")
    with pytest.raises(SystemExit) as exc:
        main(["history", str(tmp_path / "missing")])
    assert exc.value.code == 2 and "hint:" in capsys.readouterr().err


def test_every_measure_has_a_direction():
    assert len({m.key for m in MEASURES}) == len(MEASURES)
    assert {m.key for m in MEASURES if m.higher_is_better} == {"fps", "fps_min_window"}


def test_default_output_is_in_the_reports_dir(tmp_path, capsys):
    write_nights(tmp_path, 2, failures={1: "frozen"})
    assert main(["history", str(tmp_path)]) == 0
    assert (tmp_path / "history.html").is_file()
    assert "2 runs (1 failed), 0 regression(s)" in capsys.readouterr().out


def test_the_harness_cost_is_kept_beside_the_fps_and_charted(tmp_path):
    """metrics.json "harness" reaches history.jsonl and the history page, from either source."""
    root = tmp_path / "reports"
    nights = write_nights(root, 3, failures={})
    for i, m in enumerate(nights):
        m["harness"] = {"analysis": "deferred", "stream_cpu_s": 0.3, "stream_cpu_percent_of_core": 3.0 + i,
                        "peak_rss_mb": 90.0, "bytes_written": 1000}
        folder = sorted(p for p in root.iterdir() if p.is_dir())[i]
        (folder / "metrics.json").write_text(json.dumps(m))
    lines = root / "lines.jsonl"
    for m in nights:
        from harness.report.summary import append_history

        append_history(lines, m)
    entry = json.loads(lines.read_text().splitlines()[0])
    assert entry["harness"] == {"analysis": "deferred", "stream_cpu_s": 0.3, "stream_cpu_percent_of_core": 3.0,
                                "peak_rss_mb": 90.0}
    runs = collect_runs(root)
    assert [r.values["harness_cpu_percent"] for r in runs] == [3.0, 4.0, 5.0]
    page = Tags(history_html(runs, out_dir=root))
    assert any(a.get("data-measure") == "harness_cpu_percent" for t, a in page.tags if t == "svg")
    # a night known only from its history line keeps the figure too
    shutil.rmtree(sorted(p for p in root.iterdir() if p.is_dir())[0])
    (root / "history.jsonl").write_text(lines.read_text())
    assert sorted(r.values["harness_cpu_percent"] for r in collect_runs(root)) == [3.0, 4.0, 5.0]
