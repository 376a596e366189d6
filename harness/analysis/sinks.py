"""Where a live capture's messages go: the HXWSREC1 recording, the Annex-B `.h264`, and the analyzers.

The capture driver owns the socket and takes the arrival time of each message in its receive loop;
it hands every message here. Recording and timing are cheap and always run inline. The content
analysis (PyAV decode) follows the analysis mode (``analysis.modes``): ``live`` and ``sampled`` decode
on a worker thread behind a bounded queue, so it can never delay the arrival times (a full queue skips
frames for content analysis and counts them); ``deferred`` decodes from the recording in
:meth:`CaptureSinks.finish`, after the stream.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import HarnessError
from ..protocols.recording import RecordingWriter
from .modes import DEFERRED, LIVE, SAMPLE_EVERY, SAMPLED, ContentFeed, FrameSampler, check_mode, content_from_recording
from .timing import TimingAnalyzer

if TYPE_CHECKING:  # pragma: no cover
    from .content import ContentAnalyzer

log = logging.getLogger(__name__)


class ContentWorker:
    """Feeds AUs to a ContentAnalyzer on its own thread through a bounded queue."""

    def __init__(self, analyzer: ContentAnalyzer, maxsize: int = 256) -> None:
        self.analyzer = analyzer
        self.queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self.skipped = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="content-analysis", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            au, t_s, replay = item
            try:
                self.analyzer.feed(au, t_s, replay=replay)
            except Exception as exc:  # noqa: BLE001 - reported in the result, never kills capture
                self.error = exc

    def put(self, au: bytes, t_s: float, replay: bool) -> None:
        try:
            self.queue.put_nowait((au, t_s, replay))
        except queue.Full:
            self.skipped += 1

    def close(self, timeout: float) -> None:
        self.queue.put(None)
        self.thread.join(timeout=timeout)


def _content_analyzer(thumbnails: bool) -> "ContentAnalyzer":
    from .content import ContentAnalyzer  # PyAV and numpy, only when something is decoded

    return ContentAnalyzer(thumbnails=thumbnails)


class CaptureSinks:
    """The recording, the `.h264` and the analyzers of one capture (``with`` closes the files).

    ``recording_path`` and ``h264_path`` name the files; :meth:`finish` returns the analyzers' results
    (running the deferred content analysis first, in ``deferred``) and writes the thumbnails next to
    the recording. ``analysis``: ``live``, ``deferred`` or ``sampled`` (every ``sample_every`` frames);
    ``decode=False`` skips the content analysis whatever the mode."""

    def __init__(self, out_dir: Path, name: str, *, warmup_s: float, decode: bool = True,
                 thumbnails: bool = True, analysis: str = LIVE, sample_every: int = SAMPLE_EVERY) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir = out_dir
        self.name = name
        self.recording_path = out_dir / f"{name}.hxwsrec"
        self.h264_path = out_dir / f"{name}.h264"
        self._thumbnails = thumbnails
        self._rec_fh = open(self.recording_path, "wb")
        self._h264_fh = open(self.h264_path, "wb")
        self.writer = RecordingWriter(self._rec_fh)
        self.timing = TimingAnalyzer(warmup_s=warmup_s)
        self.analysis = check_mode(analysis)
        self.decode = decode
        self.sampler = FrameSampler(sample_every) if decode and analysis == SAMPLED else None
        self.content: ContentWorker | None = None
        self._feed: ContentFeed | None = None
        if decode and analysis != DEFERRED:
            self.content = ContentWorker(_content_analyzer(thumbnails))
            self._feed = ContentFeed(self.content.put, self.sampler)

    def __enter__(self) -> "CaptureSinks":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_files()

    def message(self, t_ns: int, kind: int, raw: bytes) -> None:
        """Every message, as it arrived, into the recording."""
        self.writer.write(t_ns, kind, raw)

    def video(self, t_ns: int, data: bytes, *, replay: bool, keyframe: bool, pts_us: int) -> None:
        """A video frame's access unit: into the `.h264`, the timing and (live, sampled: on the worker) the decoder."""
        self._h264_fh.write(data)
        self.timing.add(t_ns, replay=replay, keyframe=keyframe, pts_us=pts_us, size=len(data))
        if self._feed is not None:
            self._feed.video(t_ns, data, replay=replay)

    def stream_error(self, message: str) -> None:
        self.timing.add_stream_error(message)

    def close_files(self) -> None:
        self.writer.close()  # flushes and closes the recording (idempotent)
        if not self._h264_fh.closed:
            self._h264_fh.close()

    def finish(self, content_timeout: float = 30.0) -> dict[str, Any]:
        """Close everything and return ``timing``, ``content``, ``content_skipped``, ``thumbnails`` and
        ``sampling`` (``sampled``: which frames were checked, else ``None``). In ``deferred`` this is
        where the content analysis runs, from the recording."""
        self.close_files()
        out: dict[str, Any] = {"timing": self.timing.result(), "content": {}, "content_skipped": 0, "thumbnails": {},
                               "sampling": None}
        if not self.decode:
            return out
        if self.content is not None:
            self.content.close(timeout=content_timeout)
            analyzer = self.content.analyzer
            out["content"] = analyzer.result()
            out["content_skipped"] = self.content.skipped
            if self.content.error is not None:
                out["content"]["analysis_error"] = f"{type(self.content.error).__name__}: {self.content.error}"
        else:  # deferred: the same frames, from the recording, now that the stream is over
            analyzer = _content_analyzer(self._thumbnails)
            try:
                ended = content_from_recording(self.recording_path, analyzer)
                error = f"recording: {ended}" if ended else ""
            except Exception as exc:  # noqa: BLE001 - as on the live worker: reported, never kills the capture
                error = f"{type(exc).__name__}: {exc}"
            out["content"] = analyzer.result()
            if error:
                out["content"]["analysis_error"] = error
        if self.sampler is not None:
            out["sampling"] = self.sampler.report()
        if self._thumbnails:
            try:
                for label, jpeg in analyzer.thumbnails().items():
                    path = self.out_dir / f"{self.name}-{label}.jpg"
                    path.write_bytes(jpeg)
                    out["thumbnails"][label] = str(path)
            except (HarnessError, OSError) as exc:  # artifacts never change a verdict
                log.warning("thumbnails unavailable: %s", exc)
        return out
