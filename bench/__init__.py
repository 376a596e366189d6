"""Benchmarks of the stream analysis (``python -m bench [--quick]``, or ``make bench``).

Every figure is measured in the same run as its reference, and printed as one table: metric,
measured, reference, ratio/goal, PASS/FAIL. These are measurements, not timed tests: nothing here
runs under pytest (a smoke test may run ``--quick`` and check that the table is complete).

* FPS accuracy: recordings made by the sim (``helix_sim.recordings``) with known ground truth; the
  error of the analyzer's arrival FPS against it, per case (goal: max(0.5 fps, 1 %)); the pixel
  counters read back must name the first and last live frames.
* Decode + analysis of a 1080p recording against ``ffmpeg -f h264 -i same.h264 -f null -`` on the
  same stream: the frame-rate ratio on wall time and on CPU time (goal >= 0.9x). ffmpeg's own start-up
  (measured on a one-frame file) is subtracted, so the reference is its decode alone.
* Timing-only analysis (``analyze_recording(decode=False)``, the ``--no-decode`` path): frames/s
  (goal >= 200,000).
* Memory: the RSS growth of ``StreamAnalyzer`` (decoding, and timing only) between 10 s and 120 s of
  a 60 fps stream, measured with psutil in a child process (goal <= 10 MB).

``--quick`` runs every section smaller (shorter streams, fewer frames; memory 10 s -> 40 s).
"""
