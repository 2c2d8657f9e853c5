"""The app in a real browser: `streamlit run app.py` on a free port, every page opened in Chromium.

For each page (the URL paths of st.navigation) the test waits until the script has finished
(no status widget, no skeleton, content in the main block, stable for a moment), asserts
that no exception element is on screen, and saves a screenshot to
``artifacts/screenshots/<page>.png`` (gitignored; CI keeps them as artifacts).

Playwright drives the system Chromium through ``executable_path`` (never ``playwright
install``). Where Chromium or Playwright is missing the tests skip and say why; CI
installs Chromium (``.ci/run``), so there they run.
"""
from __future__ import annotations

import importlib.util
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
STABLE_S = 2.0
MAX_SCREENSHOT_HEIGHT = 20_000

# One worker runs them all under `make test` (-n 2 --dist loadgroup): one server, one Chromium.
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser")]


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
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


SCRIPT_STATE = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    return app ? app.getAttribute('data-test-script-state') : null;
}"""


def wait_until_idle(page, timeout_s: float = PAGE_IDLE_S) -> None:
    """Until the script has finished (stApp's script state is notRunning), nothing is still
    loading (no status widget, skeleton or spinner), the main block has content, and all of
    that has held for STABLE_S seconds."""
    deadline = time.monotonic() + timeout_s
    stable_since = None
    while time.monotonic() < deadline:
        finished = page.evaluate(SCRIPT_STATE) == "notRunning"
        busy = page.locator('[data-testid="stStatusWidget"], [data-testid="stAppSkeleton"], '
                            '[data-testid="stSkeleton"], [data-testid="stSpinner"]').count() > 0
        content = page.locator('[data-testid="stMainBlockContainer"] [data-testid="stElementContainer"]').count() > 0
        if finished and not busy and content:
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since >= STABLE_S:
                return
        else:
            stable_since = None
        page.wait_for_timeout(250)
    raise AssertionError(f"{page.url} was still running after {timeout_s:.0f} s")


def visible_errors(page) -> list[str]:
    return [t.strip() for t in page.locator('[data-testid="stAlertContentError"]').all_inner_texts()]


def page_urls() -> list[str]:
    from mechinterp_edu.app.navigation import page_urls as urls

    return list(urls())


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url, wait_until="domcontentloaded", timeout=60_000)
    wait_until_idle(page)
    return page


def screenshot(page, name: str) -> Path:
    """The whole page: Streamlit scrolls inside its main block, so grow the viewport to fit it."""
    height = page.evaluate("() => Math.max(...[...document.querySelectorAll("
                           "'[data-testid=\"stMain\"], [data-testid=\"stSidebarContent\"]')].map(e => e.scrollHeight), 600)")
    page.set_viewport_size({"width": 1400, "height": min(int(height) + 40, MAX_SCREENSHOT_HEIGHT)})
    page.wait_for_timeout(1000)   # let vega and KaTeX finish drawing at the new size
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.mark.parametrize("url_path", page_urls(), ids=lambda u: u or "home")
def test_page_renders_in_chromium(server, browser, url_path):
    page = open_page(browser, f"{server}/{url_path}")
    try:
        exceptions = page.locator('[data-testid="stException"]')
        assert exceptions.count() == 0, exceptions.all_inner_texts()
        body = page.locator('[data-testid="stMain"]').inner_text()
        assert "Traceback (most recent call last)" not in body
        assert page.locator("h1, h2, h3").count() >= 1, "the page has no heading"
        bad_latex = page.locator(".katex-error").evaluate_all("els => els.map(e => e.title || e.textContent)")
        assert not bad_latex, f"KaTeX could not render {len(bad_latex)} formula(s) on /{url_path}: {bad_latex[:3]}"
        raw_math = [t for t in page.locator('[data-testid="stMarkdownContainer"]').all_inner_texts() if "$$" in t]
        assert not raw_math, f"display math left unrendered on /{url_path}: {raw_math[:2]}"
        if url_path == "" and importlib.util.find_spec("mechinterp_edu.grader.progress"):   # seeded store
            assert "No progress recorded yet" not in body and "kron_apply" in page.content()
        shot = screenshot(page, url_path or "home")
        assert shot.stat().st_size > 10_000
    finally:
        page.close()


def test_classroom_next_in_chromium(server, browser):
    """The presenter's view of lesson 1: Next moves to step 2 (or lesson 1 says it is not written)."""
    from mechinterp_edu.course import get_lesson
    from mechinterp_edu.lesson_source import load_lesson

    page = open_page(browser, f"{server}/classroom?lesson=1")
    try:
        assert page.locator('[data-testid="stException"]').count() == 0
        if not get_lesson(1).source_path.exists():
            assert "not written yet" in page.locator('[data-testid="stMain"]').inner_text()
            pytest.skip("lesson 1 is not written yet: nothing to step through")
        main = page.locator('[data-testid="stMain"]')
        assert "Step 1 of" in main.inner_text()
        page.get_by_role("button", name="Next").first.click()
        page.wait_for_timeout(500)
        wait_until_idle(page)
        assert "Step 2 of" in main.inner_text()
        assert page.locator('[data-testid="stException"]').count() == 0
        screenshot(page, "classroom-step-2")
        # Step on to the first step with a live chart: it is drawn, large (stretched to the page).
        steps = load_lesson(1).steps
        first_chart = next((i for i, s in enumerate(steps) if s.refs("chart")), None)
        if first_chart is not None:
            for _ in range(first_chart - 1):
                page.get_by_role("button", name="Next").first.click()
                page.wait_for_timeout(300)
                wait_until_idle(page)
            assert f"Step {first_chart + 1} of" in main.inner_text()
            chart = page.locator('[data-testid="stVegaLiteChart"]').first
            chart.wait_for(state="visible", timeout=60_000)
            assert chart.bounding_box()["width"] > 0.6 * main.bounding_box()["width"], "chart is not large"
            assert page.locator('[data-testid="stException"]').count() == 0
            screenshot(page, "classroom-first-chart")
    finally:
        page.close()
