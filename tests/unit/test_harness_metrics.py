"""The harness's own footprint reaches metrics.json and JUnit, and the strategy hands the capture its mode."""

from __future__ import annotations

from dataclasses import replace

from harness.config import TargetConfig
from harness.drivers.capture import CaptureResult
from harness.record import RunRecord, StreamRecord
from harness.report.metrics import build_metrics, junit_properties
from harness.strategy import Status, Strategy
from harness.timeline import Timeline

from .fakes import Calls, fake_drivers, fake_target

#: metrics.json["harness"]: a public interface (issue 15).
PUBLIC = ("analysis", "stream_cpu_s", "stream_cpu_percent_of_core", "peak_rss_mb", "bytes_written")
FOOTPRINT = {"analysis": "deferred", "stream_cpu_s": 0.42, "stream_cpu_percent_of_core": 1.4, "peak_rss_mb": 88.5,
             "bytes_written": 123456, "stream_s": 30.1, "processes": 1, "analysis_cpu_s": 5.2, "sampled": None}


def _record(footprint: dict) -> RunRecord:
    record = RunRecord()
    cap = CaptureResult(url="ws://x", recording="r", h264="h", end="duration", analysis="deferred",
                        timing={"fps": 59.9, "frames": 1797}, footprint=footprint)
    record.streams.append(StreamRecord(session_id="ses_1", capture=cap))
    return record


def test_metrics_and_junit_carry_the_harness_footprint() -> None:
    record = _record(dict(FOOTPRINT))
    m = build_metrics(record, TargetConfig(), Timeline())
    assert tuple(m["harness"])[: len(PUBLIC)] == PUBLIC
    assert m["harness"] == FOOTPRINT
    props = junit_properties(record, Timeline())
    assert {k: props[f"harness_{k}"] for k in PUBLIC} == {k: FOOTPRINT[k] for k in PUBLIC}


def test_no_footprint_no_harness_key() -> None:
    record = _record({})
    assert "harness" not in build_metrics(record, TargetConfig(), Timeline())
    assert not any(k.startswith("harness_") for k in junit_properties(record, Timeline()))


def test_the_strategy_hands_the_capture_the_targets_mode() -> None:
    for target, mode in ((fake_target(), "deferred"),  # a real Mac: deferred by default
                         (replace(fake_target(), sim={"fps": 40}), "live"),  # the simulator: live
                         (fake_target().with_overrides({"stream.analysis": "sampled"}), "sampled")):
        s = Strategy(target=target, drivers=fake_drivers(Calls()))
        s.transition(Status.streaming)
        assert s.record.stream.capture.analysis == mode
