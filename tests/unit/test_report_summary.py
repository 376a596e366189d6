import json

from harness.report.extras import fps_plot_svg
from harness.report.summary import append_history, read_history, render_summary, trend_html

METRICS = {
    "target": {"name": "sim"},
    "fps": 41.234, "fps_min_window": 39, "frames": 400, "replay_frames": 12, "width": 1280, "height": 720,
    "jitter_ms": {"p99": 31.5}, "stalls": [{"start_s": 3.0, "duration_s": 0.6}], "freezes": [], "black_frames": 0,
    "decode_errors": 0, "probe_verdict": "rejected", "fps_band": [30, 60],
    "resource_ids": {"host": {"source": "frame_ready", "nonzero": 7, "zero": 0}},
    "phases": {"boot": 1.5, "stream": 10.2, "stream_down": 0.1},
    "tests": {"a::test_x": "passed", "a::test_fps": "failed"},
    "triage": {"layer": "stream", "cause": "stall", "hint": "check the encoder", "evidence": []},
    "api_key": "hl-shouldnotappear12345",
}


def test_summary_is_a_markdown_table_with_the_verdict_and_no_secret():
    md = render_summary(METRICS)
    assert md.startswith("## helix-e2e streaming check: ❌ fail")
    assert "| FPS (arrival, after warm-up) | 41.2 (band 30–60) |" in md
    assert "| stalls / freezes / black frames | 1 / 0 / 0 |" in md
    assert "**Verdict:** `stream` / stall" in md
    assert "- `test_fps`" in md
    assert "hl-" not in md


def test_history_appends_one_line_per_run_and_skips_garbage(tmp_path):
    path = tmp_path / "history.jsonl"
    append_history(path, METRICS)
    with path.open("a") as fh:
        fh.write("not json\n")
    append_history(path, {**METRICS, "fps": 20.0})
    runs = read_history(path)
    assert [r["fps"] for r in runs] == [41.234, 20.0]
    assert runs[0]["failed"] == 1 and runs[0]["triage"] == {"layer": "stream", "cause": "stall"}
    assert "hl-" not in path.read_text()
    html = trend_html(runs)
    assert "<polyline" in html and "20.0" in html


def test_fps_plot_marks_band_windows_and_stalls():
    svg = fps_plot_svg({"fps_windows": [40, 12, 41], "stalls": [{"start_s": 1.0, "duration_s": 0.5}], "fps": 31.0},
                       (30, 60), [{"start_s": 2.0, "duration_s": 1.0}])
    assert svg.count('class="window"') == 3
    assert 'fill="#c62828"><title>1–2s: 12 frames' in svg  # out-of-band window in red
    assert 'class="stall"' in svg and 'class="freeze"' in svg
    assert "FPS band 30–60" in svg
    json.dumps(svg)
