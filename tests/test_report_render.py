"""The reports as QA sees them: rendered and laid out by a real browser, not read as files.

pytest-html builds its results table in JavaScript from a JSON blob, and the helix-e2e banner moves
itself above the environment table, so what a person sees only exists once a browser ran the page.
Headless Chromium (``tests/browser.py``) opens, at 1280×800:

- the report of a passing streaming run on the simulator (the session's shared ``passing_run``):
  the banner and verdict in the first screen, the FPS shown equal to metrics.json, the FPS plot (one
  bar per second of metrics.json), thumbnails (JPEG), a playable clip, the phase timeline as bars,
  highlighted log excerpts, provenance, every passing test collapsed, the page under 5 MB;
- the report of a failing run (``--sim-fault frozen``): its cause at the top, the failed test expanded;
- the history page of ten synthesized nights, two failed: one point per run in every chart.

A screenshot of the first screen and of the whole of each page is kept next to the page and under
``reports/browser/``. Skipped with the reason only when no Chromium is installed.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from browser import CHROMIUM, FIRST_SCREEN, SKIP_REASON, Browser
from childrun import finished_run
from report_samples import write_nights

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "reports" / "browser"
PAGE_LIMIT = 5_000_000
# HTML void elements never get an end tag, so they never enter the ancestor stack (Chromium serialises
# SVG elements with end tags).
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)
DRAWN = ("svg.e2e-trend-chart[data-measure=fps] circle.point", "svg.e2e-trend-chart[data-measure=fps] .marker",
         ".e2e-fps rect.window", ".e2e-clip video", ".e2e-thumbnails img")


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


class Look:
    """What the browser showed: the rendered DOM, element boxes and the screenshots."""

    def __init__(self, page, path: Path, name: str) -> None:
        self.path = path
        self.title = page.evaluate("document.title")
        self.dom = Dom(page.html())
        self.viewport = page.evaluate("[innerWidth, innerHeight]")
        self.boxes = {sel: page.box(sel) for sel in (
            "#e2e-banner", "#environment-header", ".e2e-verdict-word", ".e2e-fps-value", ".e2e-cause",
            "#results-table", "tbody.failed", "#title", "svg.e2e-trend-chart")}
        #: How many of these elements the browser drew with a non-empty box.
        self.drawn = {sel: page.evaluate(
            "[...document.querySelectorAll(%s)].filter(e => { const r = e.getBoundingClientRect();"
            " return r.width > 0 && r.height > 0; }).length" % json.dumps(sel)) for sel in DRAWN}
        self.first_screen = page.screenshot(path.with_name(f"{name}-first-screen.png"))
        self.full = page.screenshot(path.with_name(f"{name}-full.png"), full_page=True)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for shot in (self.first_screen, self.full):
            shutil.copy(shot, SCREENSHOTS / shot.name)

    def in_first_screen(self, selector: str) -> bool:
        box = self.boxes[selector]
        return bool(box and box["visible"] and box["height"] > 0 and box["bottom"] <= FIRST_SCREEN[1]
                    and box["right"] <= FIRST_SCREEN[0])


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with Browser(tmp_path_factory.mktemp("chromium-profile")) as b:
        yield b


def _look(browser: Browser, path: Path, name: str) -> Look:
    page = browser.open(path.as_uri())
    try:
        return Look(page, path, name)
    finally:
        page.close()


@pytest.fixture(scope="module")
def passed(passing_run, browser):
    """(what the browser showed, metrics.json) of the shared passing run's report."""
    assert passing_run.returncode == 0, passing_run.tail()
    report = passing_run.latest / "report.html"
    return _look(browser, report, "report-pass"), json.loads((passing_run.latest / "metrics.json").read_text())


@pytest.fixture(scope="module")
def failed(tmp_path_factory, browser):
    """The same for a run whose stream froze (test_stream_has_no_errors fails)."""
    run = finished_run(tmp_path_factory.mktemp("frozen"), ["--sim-fault", "frozen"])
    assert run.returncode == 1, run.tail()
    assert run.leftovers == [], run.leftovers
    return _look(browser, run.latest / "report.html", "report-fail"), json.loads((run.latest / "metrics.json").read_text())


@pytest.fixture(scope="module")
def history(tmp_path_factory, browser):
    """The history page of ten synthesized nights, two of them failed."""
    from harness.cli import main

    root = tmp_path_factory.mktemp("nights") / "reports"
    write_nights(root, 10, failures={2: "low_fps", 6: "frozen"})
    out = root / "history.html"
    assert main(["history", str(root), "--html", str(out)]) == 0
    return _look(browser, out, "history")


# -- the passing run ---------------------------------------------------------------------------------
def test_the_page_was_rendered_by_javascript(passed) -> None:
    look, metrics = passed
    rows = look.dom.find("tbody", "results-table-row")
    assert len(rows) >= len(metrics["tests"]) >= 9, "pytest-html did not build its results table"
    names = " ".join(_text(look.dom, r) for r in rows)
    assert "test_stream_fps_in_band" in names and "test_vm_boots_without_crash" in names


def test_banner_and_verdict_in_the_first_screen(passed) -> None:
    look, _ = passed
    assert look.viewport == list(FIRST_SCREEN)
    assert re.fullmatch(r"helix-e2e PASS: sim, \d{4}-\d\d-\d\d \d\d:\d\d", look.title), look.title
    assert look.in_first_screen("#e2e-banner") and look.in_first_screen(".e2e-verdict-word")
    assert look.boxes["#e2e-banner"]["bottom"] <= look.boxes["#environment-header"]["top"]
    word = look.dom.find("span", "e2e-verdict-word")
    assert [_text(look.dom, w) for w in word] == ["PASS"]


def test_the_fps_shown_equals_metrics_json(passed) -> None:
    look, metrics = passed
    assert look.in_first_screen(".e2e-fps-value")
    shown = look.dom.find("b", "e2e-fps-value")
    assert len(shown) == 1
    assert _text(look.dom, shown[0]) == f"{metrics['fps']:.1f} fps"
    assert float(shown[0].attrs["data-value"]) == metrics["fps"]
    row = [r for r in look.dom.find("tr") if r.attrs.get("data-key") == "fps"]
    assert row and f"{metrics['fps']:.1f} fps" in _text(look.dom, row[0])


def test_fps_plot_has_one_bar_per_window(passed) -> None:
    look, metrics = passed
    dom = look.dom
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
        assert "FPS band 30–60" in _text(dom, svg)


def test_thumbnails_are_jpeg_images(passed) -> None:
    dom = passed[0].dom
    images = [img for img in dom.find("img") if img.attrs.get("src", "").startswith("data:image/jpeg;base64,")]
    assert images, "no thumbnail (img with a data:image/jpeg URI) in the rendered report"
    labels = {img.attrs.get("title") for img in images}
    assert {"first_idr", "last"} <= labels, labels
    for img in images:
        data = base64.b64decode(img.attrs["src"].split(",", 1)[1])
        assert data[:3] == b"\xff\xd8\xff" and len(data) > 500


def test_clip_is_a_playable_mp4(passed) -> None:
    import av

    dom = passed[0].dom
    sources = [s for s in dom.find("source") if s.attrs.get("src", "").startswith("data:video/mp4;base64,")]
    assert sources, "no MP4 clip (video source with a data:video/mp4 URI) in the rendered report"
    for source in sources:
        assert source.ancestors and source.ancestors[-1].tag == "video"
        data = base64.b64decode(source.attrs["src"].split(",", 1)[1])
        with av.open(io.BytesIO(data), format="mp4") as clip:
            frames = sum(1 for _ in clip.decode(video=0))
        assert frames >= 30, f"the clip decodes to only {frames} frames"


def test_phase_timeline_chart_and_table(passed) -> None:
    look, metrics = passed
    dom = look.dom
    charts = dom.find("svg", "e2e-timeline-chart")
    assert len(charts) == 1, "no phase timeline chart"
    bars = dom.inside(charts[0], "rect", "phase")
    assert len(bars) == len(metrics["phase_timeline"]) and all(float(b.attrs["width"]) > 0 for b in bars)
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


def test_measurements_provenance_and_log_excerpts(passed) -> None:
    look, metrics = passed
    dom = look.dom
    rows = {r.attrs["data-key"]: _text(dom, r) for r in dom.find("tr") if r.attrs.get("data-key")}
    for key in ("fps", "fps_min_window", "first_frame_s", "frames", "resolution", "jitter_ms", "stalls", "freezes",
                "black_frames", "decode_errors", "resource_ids_host", "probe", "crash", "phase_boot", "phase_stream"):
        assert key in rows, key
    assert "rejected" in rows["probe"] and "✓" in rows["probe"]
    assert f"{metrics['width']}×{metrics['height']}" in rows["resolution"]
    assert metrics["provenance"]["helix_git_sha"] in rows["helix_git_sha"]
    assert "pytest" in rows["command_line"] and "-m streaming" in rows["command_line"]
    assert "sim.toml" in rows["target_file"]
    marks = dom.find("mark", "e2e-match")
    assert any("FRAME_READY" in _text(dom, m) for m in marks), "no highlighted FRAME_READY line"


def test_plot_thumbnails_and_clip_are_drawn(passed) -> None:
    look, metrics = passed
    assert look.drawn[".e2e-fps rect.window"] == len(metrics["fps_windows"])
    assert look.drawn[".e2e-thumbnails img"] >= 2 and look.drawn[".e2e-clip video"] == 1


def test_passing_tests_are_collapsed_and_the_page_is_small(passed) -> None:
    look, _ = passed
    bodies = look.dom.find("tbody", "results-table-row")
    assert bodies and all("passed" in b.classes for b in bodies)
    for body in bodies:
        extras = [e for e in look.dom.elements if e.tag == "tr" and "extras-row" in e.classes and body in e.ancestors]
        assert extras and "hidden" in extras[0].classes
    assert look.path.stat().st_size < PAGE_LIMIT


def test_screenshots_are_not_blank(passed) -> None:
    import av

    look, _ = passed
    for shot, height in ((look.first_screen, FIRST_SCREEN[1]), (look.full, None)):
        assert shot.is_file() and shot.stat().st_size > 10_000 and (SCREENSHOTS / shot.name).is_file()
        with av.open(str(shot)) as png:
            pixels = next(png.decode(video=0)).to_ndarray(format="gray")
        assert pixels.shape[1] == FIRST_SCREEN[0] and (height is None or pixels.shape[0] == height)
        assert pixels.std() > 10, f"{shot.name} is a blank page"


# -- the failing run ----------------------------------------------------------------------------------
def test_a_failing_run_shows_its_cause_at_the_top(failed) -> None:
    look, metrics = failed
    assert metrics["triage"]["cause"] == "frozen"
    assert look.title.startswith("helix-e2e FAIL: sim, ")
    assert look.in_first_screen("#e2e-banner") and look.in_first_screen(".e2e-cause")
    cause = _text(look.dom, look.dom.find("p", "e2e-cause")[0])
    assert "stream" in cause and "frozen" in cause and re.search(r"at \d+\.\d\d s for \d+\.\d\d s", cause), cause
    banner = _text(look.dom, [e for e in look.dom.elements if e.attrs.get("id") == "e2e-banner"][0])
    assert "What to do:" in banner and "{'" not in banner and "[{" not in banner, banner
    assert "freezes (identical content)" in banner  # the out-of-band measurement, in the banner too
    plots = [svg for svg in look.dom.find("svg") if any("e2e-fps" in a.classes for a in svg.ancestors)]
    assert any(look.dom.inside(svg, "rect", "freeze") for svg in plots), "the freeze is not shaded on the plot"


def test_the_failed_test_is_expanded(failed) -> None:
    look, _ = failed
    dom = look.dom
    bodies = dom.find("tbody", "results-table-row")
    failed_bodies = [b for b in bodies if "failed" in b.classes]
    # The freeze fails the stream check (and, over a short stream, the vkcube motion check too).
    failed_bodies = [b for b in failed_bodies if _text(dom, b).split()[1].endswith("test_stream_has_no_errors")]
    assert failed_bodies
    for body in bodies:
        extras = [e for e in dom.elements if e.tag == "tr" and "extras-row" in e.classes and body in e.ancestors][0]
        assert ("hidden" in extras.classes) is ("failed" not in body.classes), body.classes
    log = [e for e in dom.find("div", "log") if failed_bodies[0] in e.ancestors]
    assert log and "content froze" in _text(dom, log[0])
    box = look.boxes["tbody.failed"]
    assert box and box["visible"] and box["height"] > 100  # its log and extras are laid out, not hidden


# -- the history page --------------------------------------------------------------------------------
def test_the_history_page_draws_one_point_per_run(history) -> None:
    dom = history.dom
    assert history.title.startswith("helix-e2e history: 10 runs of sim")
    charts = dom.find("svg", "e2e-trend-chart")
    assert len(charts) >= 6
    for chart in charts:
        assert len(dom.inside(chart, "circle", "point")) == 10, chart.attrs["data-measure"]
        assert len(dom.inside(chart, "path", "fail")) == 2 and len(dom.inside(chart, "rect", "pass")) == 8
    fps = [c for c in charts if c.attrs["data-measure"] == "fps"][0]
    failed_points = dom.inside(fps, "circle", "fail")
    assert len(failed_points) == 2 and "19.8 fps (FAIL)" in _text(dom, failed_points[0])
    assert history.drawn["svg.e2e-trend-chart[data-measure=fps] circle.point"] == 10
    assert history.drawn["svg.e2e-trend-chart[data-measure=fps] .marker"] == 10
    rows = [r for r in dom.find("tr") if "data-run" in r.attrs]
    causes = [_text(dom, r) for r in rows if "fail" in r.classes]
    assert len(causes) == 2 and "stream / low fps" in causes[0] and "stream / frozen" in causes[1]
    for link in [a for a in dom.find("a", "report-link")]:
        assert (history.path.parent / link.attrs["href"]).is_file()
    assert history.in_first_screen("#title") and history.in_first_screen("svg.e2e-trend-chart")
    assert history.first_screen.stat().st_size > 10_000
