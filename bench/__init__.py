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

* The harness's own cost (issue 15; ``bench.capture``): the capture client against a loopback sender
  (``bench.ws_sender``) at 1080p60 and 4K60, 40 Mb/s: messages/s against the offered rate (goal >= 4x
  real time, 0 drops), the arrival-timestamp error against the sender's send times (goal p99 < 1 ms),
  the harness's CPU per stream second in each analysis mode (``deferred`` during the stream: goal
  <= 5 % of one core, beside ffmpeg's CPU to decode the same stream), and the deferred analysis of
  30 s of 1080p60 as a whole command (``helix-e2e analyze``) against ``ffmpeg -f null`` (goal >= 0.9x).
* The observer effect (``bench.observer``): the sim streams 4K60 vkcube while the harness captures it
  with ``live`` and with ``deferred`` analysis, and a bare client (no harness) as the reference; the
  frame rate the sim's encoder managed in each (live - deferred reported; deferred within the noise of
  no harness).
* Cold start of each console command (``bench.startup``) against ``python -c pass`` and the import of
  PyAV + numpy (goal: ``doctor --json`` <= 0.3 s; no PyAV/numpy for analyze --no-decode, doctor,
  probe-frame-export, scan-logs).

``--quick`` runs every section smaller (shorter streams, fewer frames; memory 10 s -> 40 s; the
observer effect at 640x368 for 2 s per turn, a smoke run of the path only).
"""
