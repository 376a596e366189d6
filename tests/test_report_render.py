"""The streaming report as QA sees it: rendered by a real browser, not read as a file.

pytest-html builds its results table in JavaScript from a JSON blob, so the artifacts only exist
once a browser has run the page. This runs the streaming suite on the simulator in a child pytest
(4 s of stream, artifacts kept for passing tests), renders ``report.html`` in headless Chromium
(``--dump-dom`` and a ``--screenshot``), and checks that the rendered DOM holds the FPS plot (an
SVG with one ``window`` bar per second of metrics.json), the thumbnails (JPEG data URIs), the MP4
clip (a ``<video>`` whose data URI demuxes to frames) and the phase timeline table. Skipped with a
reason when Chromium is not installed.

Every process started here runs in its own session and is killed by process group at its deadline.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from childrun import REPO, child_env, pytest_argv

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM = next((p for p in map(shutil.which, BROWSERS) if p), None)
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)
CHILD_TIMEOUT_S = 90
BROWSER_TIMEOUT_S = 30
# HTML void elements never get an end tag, so they never enter the ancestor stack (Chromium serialises
# SVG elements with end tags).
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium)")


def _run(argv: list[str], *, timeout: float, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a command in its own session; at the deadline kill that whole process group and fail."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{Path(argv[0]).name} did not finish within {timeout:.0f}s:\n"
                    f"{out.decode(errors='replace')[-3000:]}\n{err.decode(errors='replace')[-2000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


class Element:
    __slots__ = ("tag", "attrs", "ancestors", "text")

    def __init__(self, tag: str, attrs: dict[str, str], ancestors: tuple["Element", ...]) -> None:
        self.tag, self.attrs, self.ancestors, self.text = tag, attrs, ancestors, []

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def visible(self) -> bool:
        """Not inside a <template> and no ancestor (or itself) hidden by class."""
        return not any(a.tag == "template" or "hidden" in a.classes for a in (*self.ancestors, self))


class Dom(HTMLParser):
    """Every element of a page with its attributes and ancestors, and the text directly inside it."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self._stack: list[Element] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs}, tuple(self._stack))
        self.elements.append(element)
        if tag not in VOID:
            self._stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, {k: v or "" for k, v in attrs}, tuple(self._stack)))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i].tag == tag:
                del self._stack[i:]
                return

    def handle_data(self, data: str) -> None:
        if self._stack:
            self._stack[-1].text.append(data)

    def find(self, tag: str, cls: str | None = None) -> list[Element]:
        return [e for e in self.elements if e.tag == tag and (cls is None or cls in e.classes) and e.visible()]

    def inside(self, parent: Element, tag: str, cls: str | None = None) -> list[Element]:
        return [e for e in self.find(tag, cls) if parent in e.ancestors]


def _text(dom: Dom, parent: Element) -> str:
    pieces = ("".join(e.text).strip() for e in dom.elements if e is parent or parent in e.ancestors)
    return " ".join(p for p in pieces if p)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """(rendered DOM, metrics.json, screenshot path) of a fresh streaming run on the simulator."""
    base = tmp_path_factory.mktemp("report-render")
    reports, tmp = base / "reports", base / "tmp"
    tmp.mkdir()
    child = _run(pytest_argv("--keep-artifacts", "always", "-q", report_dir=reports, stream_duration=4),
                 timeout=CHILD_TIMEOUT_S, cwd=REPO, env=child_env(tmp=tmp))
    output = child.stdout.decode(errors="replace") + child.stderr.decode(errors="replace")
    assert child.returncode == 0, f"the streaming suite failed on the simulator:\n{output[-4000:]}"
    report = reports / "latest" / "report.html"
    assert report.is_file(), output[-2000:]

    profile = base / "chromium-profile"
    browser = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    dump = _run([*browser, "--dump-dom", report.as_uri()], timeout=BROWSER_TIMEOUT_S, cwd=base)
    assert dump.returncode == 0, dump.stderr.decode(errors="replace")[-2000:]
    shot = base / "report.png"
    snap = _run([*browser, "--hide-scrollbars", "--window-size=1280,2400", f"--screenshot={shot}", report.as_uri()],
                timeout=BROWSER_TIMEOUT_S, cwd=base)
    assert snap.returncode == 0, snap.stderr.decode(errors="replace")[-2000:]
    metrics = json.loads((reports / "latest" / "metrics.json").read_text())
    return Dom(dump.stdout.decode("utf-8", "replace")), metrics, shot


def test_the_page_was_rendered_by_javascript(rendered) -> None:
    dom, metrics, _ = rendered
    rows = dom.find("tbody", "results-table-row")
    assert len(rows) >= len(metrics["tests"]) >= 9, "pytest-html did not build its results table"
    names = " ".join(_text(dom, r) for r in rows)
    assert "test_stream_fps_in_band" in names and "test_vm_boots_without_crash" in names


def test_fps_plot_has_one_bar_per_window(rendered) -> None:
    dom, metrics, _ = rendered
    plots = [svg for svg in dom.find("svg") if any("e2e-fps" in a.classes for a in svg.ancestors)]
    assert plots, "no FPS plot (svg in div.e2e-fps) in the rendered report"
    windows = metrics["fps_windows"]
    assert windows, "metrics.json has no fps windows"
    for svg in plots:
        bars = dom.inside(svg, "rect", "window")
        assert len(bars) == len(windows)
        heights = [float(b.attrs["height"]) for b in bars]
        assert all(h > 0 for h in heights), heights
        assert [f"{i}–{i + 1}s: {v} frames" for i, v in enumerate(windows)] == [_text(dom, b) for b in bars]


def test_thumbnails_are_jpeg_images(rendered) -> None:
    dom, _, _ = rendered
    images = [img for img in dom.find("img") if img.attrs.get("src", "").startswith("data:image/jpeg;base64,")]
    assert images, "no thumbnail (img with a data:image/jpeg URI) in the rendered report"
    labels = {img.attrs.get("title") for img in images}
    assert {"first_idr", "last"} <= labels, labels
    for img in images:
        data = base64.b64decode(img.attrs["src"].split(",", 1)[1])
        assert data[:3] == b"\xff\xd8\xff" and len(data) > 500


def test_clip_is_a_playable_mp4(rendered) -> None:
    import av

    dom, _, _ = rendered
    sources = [s for s in dom.find("source") if s.attrs.get("src", "").startswith("data:video/mp4;base64,")]
    assert sources, "no MP4 clip (video source with a data:video/mp4 URI) in the rendered report"
    for source in sources:
        assert source.ancestors and source.ancestors[-1].tag == "video"
        data = base64.b64decode(source.attrs["src"].split(",", 1)[1])
        with av.open(io.BytesIO(data), format="mp4") as clip:
            frames = sum(1 for _ in clip.decode(video=0))
        assert frames >= 30, f"the clip decodes to only {frames} frames"


def test_phase_timeline_table(rendered) -> None:
    dom, metrics, _ = rendered
    tables = dom.find("table", "e2e-timeline")
    assert tables, "no phase timeline table in the rendered report"
    phases = {p["name"] for p in metrics["phase_timeline"]}
    shown = set()
    for table in tables:
        for row in dom.inside(table, "tr"):
            cells = dom.inside(row, "td")
            if cells:
                shown.add(_text(dom, cells[0]).strip())
    assert {"boot", "ssh", "stack", "session", "stream"} <= shown <= phases, (shown, phases)


def test_screenshot_is_not_blank(rendered) -> None:
    import av

    _, _, shot = rendered
    assert shot.is_file() and shot.stat().st_size > 10_000
    with av.open(str(shot)) as png:
        frame = next(png.decode(video=0))
    pixels = frame.to_ndarray(format="gray")
    assert pixels.shape == (2400, 1280)
    assert pixels.std() > 10, "the screenshot is a blank page"
