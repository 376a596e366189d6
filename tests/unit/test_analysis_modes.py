"""Analysis modes (issue 15): ``live`` and ``deferred`` see the same frames and give the same verdicts;
``sampled`` decodes IDRs and every Nth frame (with the frames its decoding needs) and says which.

The fault recordings come from the sim's synthesizer with known ground truth (frozen, black, corrupt,
stalled, a replay burst). Each is replayed, with its recorded arrival times, through the capture's own
receive path (``StreamReceiver``: recording, stream core, sinks) in each mode, exactly as a live
capture hands its messages on; only the decoding moment differs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.analysis.modes import ANALYSIS_MODES, FrameSampler, content_from_recording, default_mode
from harness.analysis.sinks import CaptureSinks
from harness.config import TargetConfig, StreamConfig
from harness.drivers.capture import CaptureResult, StreamReceiver
from harness.errors import ConfigError
from harness.protocols.recording import KIND_TEXT, RecordingReader
from harness.record import StreamRecord
from harness.verdict import checks
from helix_sim.recordings import GroundTruth, synthesize_recording

FPS = 30
SECONDS = 4.0
FAULTS = {
    "clean": {},
    "frozen": dict(freeze=(1.5, 1.0)),
    "black": dict(black=(1.5, 0.5)),
    "corrupt": dict(corrupt=3),
    "stall": dict(stall=(2.0, 0.6)),
    "replay_burst": dict(replay_burst=20),
}


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> dict[str, GroundTruth]:
    root = tmp_path_factory.mktemp("faults")
    return {name: synthesize_recording(root / f"{name}.hxwsrec", fps=FPS, duration_s=SECONDS, width=640, height=368,
                                       gop=30, seed=i, **kwargs)
            for i, (name, kwargs) in enumerate(FAULTS.items())}


def replay(path: Path, out: Path, analysis: str, *, sample_every: int = 300) -> CaptureResult:
    """The recording's messages, with their arrival times, through the live capture's receive path."""
    sinks = CaptureSinks(out, analysis, warmup_s=0.5, analysis=analysis, thumbnails=False, sample_every=sample_every)
    result = CaptureResult(url="replay", recording=str(sinks.recording_path), h264=str(sinks.h264_path),
                           analysis=analysis, end="duration", trailing_gap_s=0.0)
    rx = StreamReceiver(result, sinks)
    with sinks, open(path, "rb") as fh:
        for t_ns, kind, data in RecordingReader(fh).iter_raw():
            rx.message(t_ns, bytes(data).decode("utf-8") if kind == KIND_TEXT else bytes(data))
    rx.finish()
    return result


def verdicts(result: CaptureResult) -> dict:
    run = StreamRecord(session_id="ses_replay", capture=result, vkcube_running_before=True, vkcube_running_after=True)
    target = TargetConfig(stream=StreamConfig(fps_min=20, fps_max=40, duration=SECONDS, warmup=0.5))
    return {f.check: f.as_dict() for f in (checks.fps_in_band(run, target), checks.stream_errors(run), checks.vkcube(run))}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_live_and_deferred_give_identical_figures_and_verdicts(fault, recordings, tmp_path) -> None:
    truth = recordings[fault]
    live = replay(truth.path, tmp_path / "live", "live")
    deferred = replay(truth.path, tmp_path / "deferred", "deferred")
    assert live.content_skipped == 0  # the live worker kept up, so it saw every frame
    assert live.content == deferred.content
    assert live.timing == deferred.timing
    assert verdicts(live) == verdicts(deferred)
    # and the figures are the truth's (the faults really are in them)
    c = deferred.content
    assert c["black_frames"] == truth.black_frames
    assert c["decoded_frames"] == truth.frames + truth.replay_frames
    assert (c["decode_errors"] >= truth.corrupt) if truth.corrupt else c["decode_errors"] == 0
    assert len(c["freezes"]) == (1 if truth.freeze else 0)
    # the deferred pass over the capture's own recording is the same analysis as over the original
    from harness.analysis.content import ContentAnalyzer

    again = ContentAnalyzer()
    assert content_from_recording(truth.path, again) == ""
    assert again.result() == deferred.content


def test_verdicts_differ_between_faults(recordings, tmp_path) -> None:
    """The comparison above is not vacuous: the faults give their own verdicts."""
    causes = {}
    for fault in ("clean", "frozen", "black", "corrupt"):
        found = verdicts(replay(recordings[fault].path, tmp_path / fault, "deferred"))["stream_has_no_errors"]
        causes[fault] = found["cause"] if not found["ok"] else "ok"
    assert causes == {"clean": "ok", "frozen": "frozen", "black": "black", "corrupt": "corrupt_h264"}


@pytest.mark.parametrize("fault", ["clean", "frozen", "black", "replay_burst"])
def test_sampled_decodes_idrs_and_every_nth_frame_and_says_which(fault, recordings, tmp_path) -> None:
    truth = recordings[fault]
    every = 45
    result = replay(truth.path, tmp_path / "sampled", "sampled", sample_every=every)
    s = result.sampling
    assert s["every"] == every and "IDR" in s["rule"]
    assert s["live_frames"] == truth.frames
    assert 0 < s["checked_frames"] < truth.frames
    # every decoded frame had its references: sampling never makes decode errors of its own
    assert result.content["decode_errors"] == 0
    assert result.content["decoded_frames"] == s["checked_frames"] + truth.replay_frames
    checked = {i for first, last in s["checked_ranges"] for i in range(first, last + 1)}
    assert len(checked) == s["checked_frames"] == sum(b - a + 1 for a, b in s["checked_ranges"])
    idrs = set(range(0, truth.frames, 30)) if not truth.replay_frames else set()
    assert idrs <= checked  # every IDR is checked
    assert s["samples"] + s["missed_samples"] >= truth.frames // every
    if truth.black_frames:
        assert 0 < result.content["black_frames"] <= truth.black_frames


def test_frame_sampler_runs_from_the_idr_to_the_sample() -> None:
    gop, every = 10, 25
    sampler = FrameSampler(every)
    taken = [i for i in range(100) if sampler.take(idr=i % gop == 0)]
    # The first GOP's length is unknown, so it is decoded whole; then each sample's run starts at its IDR.
    assert taken[:10] == list(range(10))
    assert {20, 25} <= set(taken) and set(range(20, 26)) <= set(taken)
    assert 26 not in taken and 29 not in taken  # the run ends with the sample
    assert set(range(0, 100, gop)) <= set(taken)  # every IDR
    for sample in range(0, 100, every):
        assert sample in taken
    assert sampler.samples == 4 and sampler.missed == 0
    assert sampler.report()["checked_frames"] == len(taken)


def test_frame_sampler_counts_a_sample_it_could_not_reach() -> None:
    sampler = FrameSampler(5)
    pattern = [True] + [False] * 3 + [True] + [False] * 19 + [True]  # GOP 4, then a 20-frame GOP
    taken = [sampler.take(idr=idr) for idr in pattern]
    assert sampler.missed >= 1  # the samples inside the long GOP without a run
    assert taken[-1] is True  # the next IDR is decoded again


def test_modes_and_their_defaults() -> None:
    assert ANALYSIS_MODES == ("live", "deferred", "sampled")
    assert default_mode(sim=True) == "live" and default_mode(sim=False) == "deferred"
    assert TargetConfig().analysis_mode == "deferred"
    assert TargetConfig(sim={"fps": 40}).analysis_mode == "live"
    assert TargetConfig(sim={"fps": 40}).with_overrides({"stream.analysis": "sampled"}).analysis_mode == "sampled"
    with pytest.raises(ConfigError, match="unknown analysis 'decode-later'"):
        TargetConfig().with_overrides({"stream.analysis": "decode-later"})
    with pytest.raises(ConfigError):
        FrameSampler(0)


def test_the_nightly_run_defaults_to_deferred() -> None:
    """On the real Mac the harness must not decode while the VM streams (issue 15)."""
    workflow = Path(__file__).resolve().parents[2] / ".github" / "workflows" / "nightly-macos.yml"
    suite = [line for line in workflow.read_text().splitlines() if "make e2e" in line]
    assert suite and all("--analysis deferred" in line for line in suite)
