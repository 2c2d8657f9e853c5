"""The app in a real browser: `streamlit run app.py` on a free port, every page opened in Chromium.

* Every page (the URL paths of st.navigation) cold (first visit after the server started) and
  warm (a new session), then every other step of every lesson (a lesson page shows its first
  step; the steps run on a server of their own, so a lesson's second step is its first visit
  there and carries the lesson's loading): no exception element, no KaTeX error,
  no raw ``$...$`` in rendered text, no chart, equation or metric wider than the main column.
* Changing a control (a widget re-run) on a lesson step with a live chart.
* Classroom mode at 1280x720 (lessons 1 and 4, every slide; all lessons with
  ``MECHINTERP_EDU_BROWSER_ALL=1``): sidebar collapsed, body text >= 24 px, every slide fits the
  screen, PageDown / Left keys move.

Timings (page load until the script has finished and the page is still, warm / cold / widget)
go to ``artifacts/browser-timings.json`` and are printed (``-s``). Targets (issue #16, this
2-core machine): warm <= 1.5 s, cold <= 10 s, widget re-run <= 2 s. The ASSERTED bounds below
are sanity bounds, much looser (WARM_BOUND_S etc.): the report holds the real figures, which
the closing notes quote against the targets. Screenshots go to ``artifacts/screenshots/``
(gitignored): a classroom slide that does not fit, and with ``MECHINTERP_EDU_SCREENSHOTS=1``
every page and step (full page) and every slide.

Playwright drives the system Chromium through ``executable_path`` (never ``playwright
install``). Where Chromium or Playwright is missing the tests skip and say why; CI
installs Chromium (``.ci/run``), so there they run.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-default-apps", "--disable-extensions"]
SERVER_START_S = 90
PAGE_IDLE_S = 300          # a cold page may load a model and run sympy on a busy 2-core machine
STABLE_S = 0.4            # the page must stay finished (charts drawn) this long; not counted in the timings
# Screenshots of every page, step and slide, for looking at (artifacts/screenshots): on when
# MECHINTERP_EDU_SCREENSHOTS=1; otherwise only a slide that fails its check is shot.
ALL_SCREENSHOTS = os.environ.get("MECHINTERP_EDU_SCREENSHOTS", "") not in ("", "0")
MAX_SCREENSHOT_HEIGHT = 20_000
TARGETS_S = {"warm": 1.5, "cold": 10.0, "widget": 2.0}
# The asserted bounds are sanity bounds, far LOOSER than the targets on purpose: under `make test`
# this test shares the 2 cores with the other xdist worker, so its times are noisy, and speed
# targets are judged from the report (and `bench`), not by failing the suite. The bounds catch a
# pathological regression only: 5 x the target, times the load per core (load average / cores, at
# least 2 because the other worker runs beside this one, at most 8), written to the report.
LOAD_FACTOR = min(8.0, max(2.0, os.getloadavg()[0] / (os.cpu_count() or 1)))
WARM_BOUND_S, COLD_BOUND_S, WIDGET_BOUND_S = (5 * TARGETS_S[k] * LOAD_FACTOR for k in ("warm", "cold", "widget"))
TIMINGS = ROOT / "artifacts" / "browser-timings.json"
WIDTH_SLACK_PX = 2

# Two xdist groups, so that `make test` runs them on its two workers, each with its own server and
# Chromium: every step of every lesson in one, the pages, widgets and classroom slides in the other.
pytestmark = [pytest.mark.browser, pytest.mark.slow]
STEPS_GROUP, VIEWS_GROUP = pytest.mark.xdist_group("browser-steps"), pytest.mark.xdist_group("browser-views")


def find_chromium() -> str | None:
    candidates = [os.environ.get("MECHINTERP_EDU_CHROMIUM"), "/usr/bin/chromium",
                  shutil.which("chromium"), shutil.which("chromium-browser"), shutil.which("google-chrome")]
    return next((c for c in candidates if c and Path(c).exists() and os.access(c, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chromium() -> str:
    pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    path = find_chromium()
    if path is None:
        pytest.skip("Chromium is not installed here (looked for $MECHINTERP_EDU_CHROMIUM, /usr/bin/chromium, "
                    "chromium, chromium-browser, google-chrome); CI installs it in .ci/run")
    return path


def _seeded_progress(path: Path) -> Path:
    """A progress store with one graded run (through the grader's own write API), so the home
    page shows real progress; an empty store when the grader's progress module is absent."""
    try:
        from mechinterp_edu.grader.grade import ExerciseResult, FileReport
        from mechinterp_edu.grader.progress import record_report
    except ImportError:
        return path
    report = FileReport("exercises/01_tensor_products.py", 1, 2, 4, results=[
        ExerciseResult("kron_apply", True, 2, 2, ""),
        ExerciseResult("attention_patterns", False, 0, 2, "shape: expected [4, 8, 8], got [8, 8]")])
    record_report(report, path=path)
    return path


@pytest.fixture(scope="module")
def server(chromium, tmp_path_factory):
    """`streamlit run app.py` on a free localhost port; yields the base URL; killed afterwards."""
    port = free_port()
    logdir = tmp_path_factory.mktemp("streamlit")
    env = dict(os.environ, MECHINTERP_EDU_PROGRESS=str(_seeded_progress(logdir / "progress.json")))
    log = open(logdir / "server.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer on {url} within {SERVER_START_S} s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


@pytest.fixture(scope="module")
def browser(chromium):
    """One Chromium and ONE browser context for the module: like a learner's browser, it keeps
    Streamlit's static files in its HTTP cache after the first page (each page is still a new
    Streamlit session). So "cold" below means cold on the server (first visit since it started)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        context = b.new_context()
        try:
            yield context
        finally:
            context.close()
            b.close()


# (script finished, something still loading or a chart not yet drawn, main block has content)
IDLE_STATE = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    const loading = document.querySelector('[data-testid="stStatusWidget"], [data-testid="stAppSkeleton"], '
                                           + '[data-testid="stSkeleton"], [data-testid="stSpinner"]') !== null;
    const undrawn = [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')]
                    .some(c => c.getBoundingClientRect().width > 0 && !c.querySelector('canvas, svg'));
    const content = document.querySelector('[data-testid="stMainBlockContainer"] [data-testid="stElementContainer"]') !== null;
    return [app !== null && app.getAttribute('data-test-script-state') === 'notRunning', loading || undrawn, content];
}"""

# Everything in the main column that must fit it, and math or errors left unrendered.
LAYOUT_PROBLEMS = """(slack) => {
    const main = document.querySelector('[data-testid="stMainBlockContainer"]');
    if (!main) return {main: 0, wide: [], katex: [], raw: []};
    const cs = getComputedStyle(main), box = main.getBoundingClientRect();
    const left = box.left + parseFloat(cs.paddingLeft) - slack, right = box.right - parseFloat(cs.paddingRight) + slack;
    const wide = [];
    const check = (sel, what) => document.querySelectorAll(sel).forEach(e => {
        const r = e.getBoundingClientRect();
        if (r.width === 0) return;                                     // collapsed (an expander's body)
        const over = Math.max(r.right - right, left - r.left, e.scrollWidth - e.clientWidth - slack);
        if (over > 0) wide.push(`${what} ${Math.round(r.width)} px, ${Math.round(over)} px too wide: `
                                + (e.innerText || '').slice(0, 60).replace(/\\s+/g, ' '));
    });
    check('[data-testid="stMain"] [data-testid="stVegaLiteChart"]', 'chart');
    check('[data-testid="stMain"] [data-testid="stVegaLiteChart"] canvas, [data-testid="stMain"] [data-testid="stVegaLiteChart"] svg.marks', 'chart drawing');
    check('[data-testid="stMain"] .katex-display', 'equation');
    check('[data-testid="stMain"] [data-testid="stMetricValue"]', 'metric');
    check('[data-testid="stMain"] [data-testid="stMetricValue"] *', 'metric value');
    const katex = [...document.querySelectorAll('.katex-error')].map(e => e.title || e.textContent);
    const raw = [];
    document.querySelectorAll('[data-testid="stMain"] [data-testid="stMarkdownContainer"]').forEach(e => {
        const c = e.cloneNode(true);
        c.querySelectorAll('code, pre, .katex, .katex-display').forEach(x => x.remove());
        const m = c.textContent.match(/\\$\\$?[^$\\n]+\\$\\$?/);
        if (m) raw.push(m[0].slice(0, 80));
    });
    return {main: Math.round(right - left - 2 * slack), wide, katex, raw};
}"""


def wait_until_idle(page, timeout_s: float = PAGE_IDLE_S, t0: float | None = None) -> float:
    """Until the script has finished (stApp's script state is notRunning), nothing is still
    loading (no status widget, skeleton or spinner) and every visible chart is drawn, the main
    block has content, and all of that has held for STABLE_S seconds. Returns the seconds from
    ``t0`` to the moment it became still (the STABLE_S wait is not counted)."""
    t0 = time.monotonic() if t0 is None else t0
    deadline = time.monotonic() + timeout_s
    stable_since = None
    state = (False, True, False)
    while time.monotonic() < deadline:
        state = finished, busy, content = page.evaluate(IDLE_STATE)
        if finished and not busy and content:
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since >= STABLE_S:
                return stable_since - t0
        else:
            stable_since = None
        page.wait_for_timeout(100)
    finished, busy, content = state
    why = [w for w, bad in (("the script was still running", not finished),
                            ("something was still loading or a chart was not drawn", busy),
                            ("the main block was empty", not content)) if bad]
    raise AssertionError(f"{page.url} was not idle after {timeout_s:.0f} s: {'; '.join(why)}")


def wait_for_run_start(page, timeout_s: float = 2.0) -> None:
    """After a widget changed: until its re-run has begun (script state no longer notRunning), so
    that an idle wait does not return on the page as it was. A run so quick that it began and
    ended between two looks is let through after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not page.evaluate(IDLE_STATE)[0]:
            return
        page.wait_for_timeout(20)


def page_urls() -> list[str]:
    from mechinterp_edu.app.navigation import page_urls as urls

    return list(urls())


def lesson_steps(first: bool = True) -> list[tuple[str, str]]:
    """(lesson URL path, step key) for every step of every written lesson (``first=False``: but
    each lesson's first step, which its page shows)."""
    from mechinterp_edu.app.navigation import lesson_url
    from mechinterp_edu.course import LESSONS
    from mechinterp_edu.lesson_source import load_lesson

    return [(lesson_url(l), s.key) for l in LESSONS if l.source_path.exists()
            for s in load_lesson(l.number).steps[(0 if first else 1):]]


def open_page(browser, url: str, viewport=(1400, 1000)) -> tuple[object, float]:
    page = browser.new_page()
    page.set_viewport_size({"width": viewport[0], "height": viewport[1]})
    t0 = time.monotonic()
    page.goto(url, wait_until="domcontentloaded", timeout=60_000)
    return page, wait_until_idle(page, t0=t0)


def assert_page_is_right(page, where: str) -> None:
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, f"{where}: {exceptions.all_inner_texts()}"
    body = page.locator('[data-testid="stMain"]').inner_text()
    assert "Traceback (most recent call last)" not in body, where
    found = page.evaluate(LAYOUT_PROBLEMS, WIDTH_SLACK_PX)
    assert not found["katex"], f"KaTeX could not render {len(found['katex'])} formula(s) on {where}: {found['katex'][:3]}"
    assert not found["raw"], f"math left unrendered on {where}: {found['raw'][:3]}"
    assert not found["wide"], f"wider than the main column ({found['main']} px) on {where}: {found['wide'][:4]}"


def screenshot(page, name: str, full: bool = True) -> Path:
    """The whole page: Streamlit scrolls inside its main block, so grow the viewport to fit it."""
    if full:
        height = page.evaluate("() => Math.max(...[...document.querySelectorAll("
                               "'[data-testid=\"stMain\"], [data-testid=\"stSidebarContent\"]')].map(e => e.scrollHeight), 600)")
        width = page.viewport_size["width"]
        page.set_viewport_size({"width": width, "height": min(int(height) + 40, MAX_SCREENSHOT_HEIGHT)})
        page.wait_for_timeout(800)   # let vega and KaTeX finish drawing at the new size
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full)
    return path


class Timings:
    """Collects the timings of the module's tests; written to TIMINGS and printed at the end."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, kind: str, where: str, seconds: float) -> None:
        self.rows.append({"kind": kind, "where": where, "seconds": round(seconds, 3)})

    def summary(self) -> dict:
        out = {}
        for kind in sorted({r["kind"] for r in self.rows}):
            xs = sorted(r["seconds"] for r in self.rows if r["kind"] == kind)
            target = TARGETS_S.get(kind.split()[0])
            out[kind] = {"n": len(xs), "median_s": xs[len(xs) // 2], "max_s": xs[-1],
                         "target_s": target, "over_target": [r["where"] for r in self.rows
                                                             if r["kind"] == kind and target and r["seconds"] > target]}
        return out

    def write(self) -> None:
        """Into TIMINGS; under xdist the two browser groups (two workers) add to one report of
        this run (a file from an earlier run is replaced)."""
        if not self.rows:
            return
        from filelock import FileLock

        TIMINGS.parent.mkdir(parents=True, exist_ok=True)
        run = os.environ.get("PYTEST_XDIST_TESTRUNUID", f"pid {os.getpid()}")
        with FileLock(str(TIMINGS) + ".lock"):
            try:
                earlier = json.loads(TIMINGS.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                earlier = {}
            if earlier.get("run") == run:
                self.rows = earlier.get("rows", []) + self.rows
            report = {"run": run, "cpus": os.cpu_count(), "load_average": os.getloadavg(),
                      "load_factor": LOAD_FACTOR,
                      "bounds_s": {"warm": WARM_BOUND_S, "cold": COLD_BOUND_S, "widget": WIDGET_BOUND_S},
                      "summary": self.summary(), "rows": self.rows}
            TIMINGS.write_text(json.dumps(report, indent=1), encoding="utf-8")
        print(f"\nbrowser timings (also in {TIMINGS}; targets {TARGETS_S}; load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores, bounds x{LOAD_FACTOR:.1f}):")
        for kind, s in report["summary"].items():
            print(f"  {kind:14s} n={s['n']:3d} median {s['median_s']:6.2f} s  max {s['max_s']:6.2f} s"
                  f"  over target: {len(s['over_target'])}")


@pytest.fixture(scope="module")
def timings():
    t = Timings()
    yield t
    t.write()


@VIEWS_GROUP
def test_every_page_cold_then_warm(server, browser, timings):
    """Each page twice: its first visit since the server started (cold), then a new session (warm)."""
    for url_path in page_urls():
        name = url_path or "home"
        for kind in ("cold", "warm"):
            page, seconds = open_page(browser, f"{server}/{url_path}")
            try:
                timings.add(f"{kind} page", name, seconds)
                assert_page_is_right(page, f"/{url_path} ({kind})")
                assert page.locator("h1, h2, h3").count() >= 1, f"/{url_path} has no heading"
                if url_path.startswith("lesson-"):      # the lesson's first step (the step walk skips it)
                    assert page.locator('[data-testid="stMain"] h2').first.inner_text(), \
                        f"/{url_path} shows no step heading"
                if url_path == "" and importlib.util.find_spec("mechinterp_edu.grader.progress"):   # seeded store
                    assert "No progress recorded yet" not in page.locator('[data-testid="stMain"]').inner_text()
                    assert "kron_apply" in page.content()
                if kind == "warm":
                    if ALL_SCREENSHOTS:
                        screenshot(page, name)
                    bound = WARM_BOUND_S
                else:
                    bound = COLD_BOUND_S
                assert seconds <= bound, f"/{url_path} took {seconds:.1f} s {kind} (bound {bound} s, target {TARGETS_S[kind]} s)"
            finally:
                page.close()


@STEPS_GROUP
def test_every_step_of_every_lesson(server, browser, timings):
    """Every step by its URL (?step=key): first visit of the step (its charts computed: 'cold step'),
    then again in a new session (warm). Each lesson's first step is what its page shows: the pages
    test opens it (cold and warm), so it is not opened again here."""
    steps = lesson_steps(first=False)
    if not steps:
        pytest.skip("no lesson is written yet")
    for url_path, key in steps:
        for kind in ("cold step", "warm step"):
            page, seconds = open_page(browser, f"{server}/{url_path}?step={key}")
            try:
                timings.add(kind, f"{url_path}?step={key}", seconds)
                assert_page_is_right(page, f"/{url_path}?step={key}")
                heading = page.locator('[data-testid="stMain"] h2').first.inner_text()
                assert heading, f"/{url_path}?step={key} shows no step heading"
                if kind == "warm step":
                    assert seconds <= WARM_BOUND_S, f"/{url_path}?step={key} took {seconds:.1f} s warm"
                    if ALL_SCREENSHOTS:
                        screenshot(page, f"{url_path}-{key}")
            finally:
                page.close()


def _change_first_control(page) -> str:
    """Change the sidebar's first slider (arrow key), else number input (+), else toggle."""
    sidebar = page.locator('[data-testid="stSidebar"]')
    slider = sidebar.locator('[data-testid="stSlider"] input[type="range"], [data-testid="stSlider"] [role="slider"]')
    if slider.count():
        slider.first.focus()
        page.keyboard.press("ArrowRight")
        return "slider"
    for button in ('[data-testid="stNumberInputStepUp"]', '[data-testid="stNumberInputStepDown"]'):
        enabled = sidebar.locator(f"{button}:not([disabled])")
        if enabled.count():
            enabled.first.click()
            return "number input"
    toggle = sidebar.locator('[data-testid="stCheckbox"] label, [data-testid="stToggle"] label')
    if toggle.count():
        toggle.first.click()
        return "toggle"
    return ""


@VIEWS_GROUP
def test_widget_rerun_on_a_step_with_a_live_chart(server, browser, timings):
    """On each lesson's first step with a live chart: change a control, time the re-run."""
    from mechinterp_edu.app.navigation import lesson_url
    from mechinterp_edu.course import LESSONS
    from mechinterp_edu.lesson_source import load_lesson

    done = 0
    for lesson in LESSONS:
        if not lesson.source_path.exists():
            continue
        step = next((s for s in load_lesson(lesson.number).steps if s.refs("chart")), None)
        if step is None:
            continue
        page, _ = open_page(browser, f"{server}/{lesson_url(lesson)}?step={step.key}")
        try:
            for _ in range(2):          # the first change may compute a new ctx cold; the second too
                t0 = time.monotonic()
                what = _change_first_control(page)
                if not what:
                    break
                wait_for_run_start(page)
                seconds = wait_until_idle(page, t0=t0)
                timings.add("widget re-run", f"{lesson_url(lesson)}?step={step.key} ({what})", seconds)
                assert_page_is_right(page, f"/{lesson_url(lesson)}?step={step.key} after changing a {what}")
                assert seconds <= WIDGET_BOUND_S, f"changing a {what} took {seconds:.1f} s (target {TARGETS_S['widget']} s)"
                done += 1
        finally:
            page.close()
    if not done:
        pytest.skip("no lesson step has a live chart and a control")


# Where classroom mode stands: the step list's shown value and the "part k/n" label.
POSITION = """() => {
    const main = document.querySelector('[data-testid="stMain"]');
    if (!main) return '';
    const select = main.querySelector('[data-testid="stSelectbox"]');
    const part = [...main.querySelectorAll('span')].map(e => e.textContent).find(t => /^part \\d+\\/\\d+$/.test(t));
    return (select ? select.innerText : '') + ' | ' + (part || '');
}"""


def wait_for_move(page, before: str, what: str, timeout_s: float = 60) -> None:
    """Until the shown step or part differs from ``before``."""
    deadline = time.monotonic() + timeout_s
    while page.evaluate(POSITION) == before:
        assert time.monotonic() < deadline, f"{what} did not move from {before!r} within {timeout_s:.0f} s"
        page.wait_for_timeout(50)


def _classroom_lessons() -> list[int]:
    from mechinterp_edu.course import LESSONS

    wanted = [l.number for l in LESSONS] if os.environ.get("MECHINTERP_EDU_BROWSER_ALL") else [1, 4]
    return [l.number for l in LESSONS if l.number in wanted and l.source_path.exists()]


@VIEWS_GROUP
@pytest.mark.parametrize("lesson", _classroom_lessons())
def test_classroom_mode_fits_a_projector(server, browser, lesson):
    """1280x720, sidebar collapsed, 24 px text; PageDown through every slide: each fits the screen
    (nothing to scroll), nothing too wide; the Left arrow goes back."""
    page, _ = open_page(browser, f"{server}/classroom?lesson={lesson}", viewport=(1280, 720))
    try:
        assert page.locator('[data-testid="stSidebar"][aria-expanded="true"]').count() == 0, "sidebar is open"
        sizes = page.evaluate("""() => [...document.querySelectorAll('[data-testid="stMain"] [data-testid="stMarkdownContainer"] p')]
                                 .map(p => parseFloat(getComputedStyle(p).fontSize))""")
        assert sizes and min(sizes) >= 24, f"classroom body text is {min(sizes or [0])} px"
        main = page.locator('[data-testid="stMain"]')
        for k in range(400):
            where = f"classroom lesson {lesson}, slide {k + 1}"
            assert_page_is_right(page, where)
            scroll, client = main.evaluate("m => [m.scrollHeight, m.clientHeight]")
            fits = scroll <= client + 4
            shot = screenshot(page, f"classroom-{lesson}-{k + 1:02d}", full=False) if ALL_SCREENSHOTS or not fits else None
            assert fits, f"{where} does not fit 1280x720 ({scroll} px tall): see {shot}"
            if page.get_by_role("button", name="Next", exact=True).is_disabled():
                break
            before = page.evaluate(POSITION)
            page.keyboard.press("PageDown")
            wait_for_move(page, before, f"{where}: PageDown")
            wait_until_idle(page)
        assert k > 0, "classroom mode showed one slide only"
        before = page.evaluate(POSITION)
        page.keyboard.press("ArrowLeft")
        wait_for_move(page, before, f"classroom lesson {lesson}: ArrowLeft")
        wait_until_idle(page)
        assert not page.get_by_role("button", name="Next", exact=True).is_disabled(), "Left did not go back"
    finally:
        page.close()
