"""One run in a real browser: headless Chromium uploads a file, sets the budget, presses Run, finds both
answers and the five figures on the page, downloads the run's JSON and opens its offline HTML report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason="the app's packages are not installed (e.g. on the GPU image)")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test drives Chromium through Playwright")
app = pytest.importorskip("app")

from test_app import DOCUMENT, QUESTION, free_port  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")  # Debian's; .ci/setup installs it, Playwright never downloads one
FIGURE_TITLES = ("1 · How often Adamas selected", "2 · Selection density", "3 · Layer", "Decode latency", "Recall")


@pytest.fixture
def served(default_model):
    model, tokenizer = default_model
    demo = app.build_app(app.Studio(model, tokenizer, context=1024, examples=[]))
    _, url, _ = app.launch(demo, port=free_port(), block=False)
    yield url
    demo.close()


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}")
def test_upload_set_the_budget_run_and_see_both_answers_and_the_figures(served, tmp_path):
    document = tmp_path / "launch.txt"
    document.write_text(DOCUMENT)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(served)
            page.locator("#document-file input[type=file]").set_input_files(str(document))
            sync_api.expect(page.locator("#document-file")).to_contain_text("launch.txt")
            page.locator("#question textarea").fill(QUESTION)
            budget = page.locator("#budget input[type=number]")
            budget.fill("40")
            budget.press("Enter")
            page.locator("#advanced").get_by_text("Advanced").click()
            new_tokens = page.locator("#max-new input[type=number]")
            new_tokens.fill("6")
            new_tokens.press("Enter")
            page.locator("#run").click()

            sync_api.expect(page.locator("#status")).to_contain_text("Done", timeout=300_000)
            sync_api.expect(page.locator(".js-plotly-plot")).to_have_count(5, timeout=60_000)
            page.screenshot(path=tmp_path / "app.png", full_page=True)
            for answer in ("#adamas-answer textarea", "#full-answer textarea"):
                assert page.locator(answer).input_value().strip()
            summary = page.locator("#summary").inner_text()
            assert re.search(r"Budget 48 of \d+ context tokens", summary), summary
            titles = " ".join(page.locator(".js-plotly-plot .gtitle").all_text_contents())
            for title in FIGURE_TITLES:
                assert title in titles, f"no figure titled {title!r} in {titles!r}"
            assert page.locator("#document-plot .js-plotly-plot .heatmaplayer").count() == 1

            with page.expect_download() as download:
                page.locator("#run-file").click()
            run = json.loads(Path(download.value.path()).read_text())
            assert run["question"] == QUESTION and run["settings"]["budget"] == 48
            with page.expect_download() as download:
                page.locator("#report-file").click()
            report = tmp_path / "report.html"
            download.value.save_as(report)
            offline = browser.new_page(viewport={"width": 1280, "height": 900})
            offline.route("http*://**", lambda route: route.abort())  # the report must need no network
            offline.goto(report.as_uri())
            sync_api.expect(offline.locator(".js-plotly-plot")).to_have_count(5, timeout=60_000)
            assert QUESTION in offline.locator("table").inner_text()
        finally:
            browser.close()
