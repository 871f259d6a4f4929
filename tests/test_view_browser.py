"""The rejected table in a real browser: headless Chromium (Debian's chromium + chromium-driver) driven
by selenium opens the page Datasette serves and finds the facets rendered; it saves a screenshot.

Set VIEW_SCREENSHOT=FILE to keep a copy of the screenshot (docs/view-rejected.png was made so, from a
run of the embedded model: VIEW_RUN_DIR=outputs/demo)."""

import os
import shutil
from pathlib import Path

import pytest
from test_cli import free_port
from test_view import Viewer, generate, wait_until

from self_instruct.store import read_jsonl

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM and CHROMEDRIVER),
        reason="needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver",
    ),
]


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def run_dir(tmp_path) -> Path:
    given = os.environ.get("VIEW_RUN_DIR")
    return Path(given).resolve() if given else generate(tmp_path / "runs", "demo", 1)


def test_rejected_table_renders_its_facets(browser, run_dir, tmp_path):
    from selenium.webdriver.common.by import By

    viewer = Viewer([str(run_dir), "--db", str(tmp_path / f"{run_dir.name}.db")], tmp_path, free_port())
    try:
        url = viewer.wait_ready()
        browser.get(f"{url}/rejected")

        def facets():
            found = browser.find_elements(By.CSS_SELECTOR, ".facet-info")
            return found if len(found) >= 3 else None

        names = {f.get_attribute("data-column") for f in wait_until(facets, "the facets to render")}
        assert {"run", "stage", "reason"} <= names
        reason = browser.find_element(By.CSS_SELECTOR, '.facet-info[data-column="reason"]')
        shown = {a.text for a in reason.find_elements(By.CSS_SELECTOR, "ul li a")}
        assert shown == {r["reason"] for r in read_jsonl(run_dir / "rejected.jsonl")}
        assert browser.find_elements(By.CSS_SELECTOR, "table.rows-and-columns tbody tr")
        # The column descriptions come first: show the search box, the facets and the rows.
        browser.execute_script("document.querySelector('.facet-results').scrollIntoView(); scrollBy(0, -150)")
        shot = tmp_path / "view-rejected.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        if os.environ.get("VIEW_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["VIEW_SCREENSHOT"])
    finally:
        status = viewer.stop()
    assert status == 0, viewer.log.read_text()
