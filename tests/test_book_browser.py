"""The built book as a reader's browser shows it: every page, in headless Chromium.

Each page of ``_toc.yml`` is opened from the session's smoke build (``smoke_book``), served
over HTTP on this machine with every request that leaves it refused (the book must read
offline), at a desktop and a phone width, and checked for:

* no JavaScript errors (uncaught exceptions, console errors) and no request to the network;
* math typeset by the MathJax the build ships: every ``span.math``/``div.math`` holds a
  MathJax container, and no literal ``$...$``, ``\\(`` or ``\\[`` is left in the text;
* every image loaded, and every figure a cell drew has alt text and a caption;
* no code line overflowing its block (long lines wrap);
* on chapters: every solution folded until its toggle is clicked and shown after the click;
  the Colab launch button and the download button present.

The page is inspected after its solutions were opened, so their code and figures are checked
too. Full-page screenshots (JPEG, solutions open) of every page at both widths are written to
``_build/browser-check/`` for a person to look at. The browser is Debian's ``chromium``
(``/usr/bin/chromium``, or ``ADVCORE_CHROMIUM``), driven by Playwright: no browser is downloaded.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("ADVCORE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
SCREENSHOTS = ROOT / "_build" / "browser-check"
PAGES_AT_ONCE = 3  # Chromium renders each page in its own process: a few at a time use the cores
LITERAL_MATH = re.compile(r"\$[^$\s][^$\n]{0,80}?\$|\\\(|\\\[")

pytestmark = [pytest.mark.browser, pytest.mark.book]

# What the page looks like, measured in the page: one call returns every finding.
INSPECT = """() => {
  const article = document.querySelector('article.bd-article') || document.body;
  const shown = (el) => el.offsetParent !== null && el.getClientRects().length > 0;
  const untypeset = [...article.querySelectorAll('span.math, div.math')]
    .filter((n) => !n.querySelector('mjx-container')).map((n) => n.textContent.slice(0, 60));
  const clone = article.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, textarea, mjx-container').forEach((n) => n.remove());
  const images = [...article.querySelectorAll('img')];
  const broken = images.filter((i) => !(i.complete && i.naturalWidth > 0)).map((i) => i.getAttribute('src'));
  const drawn = images.filter((i) => i.closest('.cell_output'));
  const noAlt = drawn.filter((i) => !(i.getAttribute('alt') || '').trim()).map((i) => i.getAttribute('src'));
  const noCaption = drawn.filter((i) => {
    const figure = i.closest('figure');
    return !figure || !(figure.querySelector('figcaption')?.textContent || '').trim();
  }).map((i) => i.getAttribute('src'));
  const overflowing = [...article.querySelectorAll('pre')].filter(shown)
    .filter((p) => p.scrollWidth > p.clientWidth + 1)
    .map((p) => `${p.scrollWidth}px in ${p.clientWidth}px: ` + p.textContent.split('\\n')
      .reduce((a, b) => (b.length > a.length ? b : a), '').slice(0, 100));
  return {text: clone.textContent, untypeset, broken, noAlt, noCaption, overflowing,
          drawn: drawn.length, mathjax: !!document.querySelector('script[src*="mathjax"]')};
}"""

LOAD_IMAGES = """async () => {
  const images = [...document.querySelectorAll('img')];
  images.forEach((i) => { i.loading = 'eager'; });
  await Promise.all(images.map((i) => i.decode().catch(() => null)));
}"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep the test output to findings
        pass


@pytest.fixture(scope="module")
def served_book(smoke_book) -> Iterator[str]:
    """The smoke build's HTML over HTTP on 127.0.0.1 (as a reader's browser fetches it)."""
    assert (smoke_book.html / "index.html").is_file(), f"the book did not build:\n{smoke_book.log[-4000:]}"
    handler = functools.partial(_QuietHandler, directory=str(smoke_book.html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def async_playwright():
    """Playwright's asyncio driver (the pages of one width are checked a few at a time)."""
    if not CHROMIUM.is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's package (`apt-get install -y chromium`) "
                    "or set ADVCORE_CHROMIUM to a Chromium binary")
    return pytest.importorskip("playwright.async_api", reason="pip install playwright (the `test` extra)").async_playwright


def _repository() -> tuple[str, str]:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    return config["url"].removeprefix("https://github.com/").rstrip("/"), config.get("branch", "main")


async def _page_problems(page, base: str, entry: str, width_name: str) -> list[str]:
    """Everything wrong with one page at one width (an empty list when it reads well)."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"JavaScript error: {error}"))
    page.on("console", lambda message: errors.append(f"console error: {message.text}")
            if message.type == "error" else None)
    await page.goto(base + entry + ".html", wait_until="load")
    if await page.evaluate("() => !!document.querySelector('script[src*=\"mathjax\"]')"):
        await page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
        await page.evaluate("() => MathJax.startup.promise")
    problems = await _chapter_problems(page, entry) if entry.startswith("notebooks/") else []
    await page.evaluate(LOAD_IMAGES)
    found = await page.evaluate(INSPECT)
    problems += [f"math not typeset: {text!r}" for text in found["untypeset"][:3]]
    problems += [f"math left as text: {text!r}" for text in LITERAL_MATH.findall(found["text"])[:3]]
    problems += [f"image not loaded: {src}" for src in found["broken"]]
    problems += [f"figure without alt text: {src}" for src in found["noAlt"]]
    problems += [f"figure without a caption: {src}" for src in found["noCaption"]]
    problems += [f"code line overflows its block ({line})" for line in found["overflowing"][:3]]
    shot = SCREENSHOTS / width_name / (entry.replace("/", "__") + ".jpg")
    shot.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(shot), full_page=True, type="jpeg", quality=60)
    return [f"{entry} ({width_name}): {problem}" for problem in errors + problems]  # errors: to the end


async def _chapter_problems(page, entry: str) -> list[str]:
    """A chapter's folded solutions, its Colab launch button and its download button."""
    problems = []
    repository, branch = _repository()
    colab = f"https://colab.research.google.com/github/{repository}/blob/{branch}/{entry}.ipynb"
    if await page.locator(f'a[href="{colab}"]').count() == 0:
        problems.append(f"no Colab launch button ({colab})")
    if await page.locator('.dropdown-download-buttons a[href$=".ipynb"]').count() == 0:
        problems.append("no button to download the notebook")
    solutions = page.locator("div.solution.dropdown")
    if await solutions.count() == 0:
        problems.append("no folded solution")
    for index in range(await solutions.count()):
        solution = solutions.nth(index)
        body = solution.locator(":scope > section").first
        name = await solution.get_attribute("id")
        if await body.is_visible():
            problems.append(f"solution {name} is shown before its toggle is clicked")
            continue
        await solution.locator("button.toggle-button").first.click()
        try:
            await body.wait_for(state="visible", timeout=3000)
        except Exception:  # playwright's TimeoutError: report it with the others
            problems.append(f"solution {name} stays hidden after its toggle is clicked")
    return problems


async def _check_pages(async_playwright, base: str, entries: list[str], width_name: str) -> list[str]:
    """Every page at one width, a few at a time, with every request off this machine refused."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport=VIEWPORTS[width_name])
        outside: list[str] = []

        async def offline(route) -> None:
            if route.request.url.startswith(base):
                await route.continue_()
            else:
                outside.append(route.request.url)
                await route.abort()

        await context.route("**/*", offline)
        slots = asyncio.Semaphore(PAGES_AT_ONCE)

        async def check(entry: str) -> list[str]:
            async with slots:
                page = await context.new_page()
                try:
                    return await _page_problems(page, base, entry, width_name)
                finally:
                    await page.close()

        try:
            found = await asyncio.gather(*(check(entry) for entry in entries))
        finally:
            await browser.close()
    problems = [problem for page_problems in found for problem in page_problems]
    return problems + [f"requested from the network (the book must read offline): {url}"
                       for url in sorted(set(outside))]


@pytest.mark.parametrize("width_name", list(VIEWPORTS))
def test_every_page_reads_well_in_a_browser(async_playwright, served_book, toc_pages, width_name) -> None:
    problems = asyncio.run(_check_pages(async_playwright, served_book, toc_pages, width_name))
    assert not problems, f"{len(problems)} problems; screenshots in {SCREENSHOTS}:\n" + "\n".join(problems)
