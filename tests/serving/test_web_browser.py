"""The web page in a real browser: headless Chromium (Debian's chromium and
chromium-driver, installed by `make browser`, which `make test` runs first) drives
the page served by a real server process on 127.0.0.1.

It fills the form, submits, checks the probability against the API and that the
survival curve is drawn, runs a what-if, triggers validation errors and checks
they appear next to their field, opens the link of an answer in a fresh page (the
inputs live in the URL), runs axe-core at phone and desktop widths, on load and
with an answer shown, and saves screenshots under test-output/.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import BIN, ROOT, free_port, request, running
from treesurv.core import schema
from treesurv.serving.schemas import DESIGN_EXAMPLE

pytestmark = pytest.mark.slow

# Debian's chromium first; a Chrome with its driver (e.g. on GitHub's runners) also does.
CHROMIUM = next(
    filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
)
DRIVER = shutil.which("chromedriver") or shutil.which(
    "chromedriver", path=os.environ.get("CHROMEWEBDRIVER", "")
)
OUTPUT = ROOT / "test-output"
PHONE = (412, 915)  # the page must work on a phone-sized screen


@pytest.fixture(scope="module")
def server(bundle_four: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    cmd = [str(BIN / "treesurv"), "serve", "--port", str(port), "--model", str(bundle_four)]
    cwd = tmp_path_factory.mktemp("web-server")
    with running(cmd, {"TREESURV_WATCH_INTERVAL": "0"}, port, cwd, "/readyz") as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None or DRIVER is None:
        reason = (
            "chromium and chromium-driver (Debian packages) are not installed; "
            "`make browser` installs them and `make test` runs it first"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={PHONE[0]},{PHONE[1]}")
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, condition: Any, timeout: float = 20) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def text_of(driver: Any, element_id: str) -> str:
    return str(driver.find_element("id", element_id).text)


def choose(driver: Any, element_id: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", element_id)).select_by_value(value)


def type_into(driver: Any, element_id: str, value: Any) -> None:
    box = driver.find_element("id", element_id)
    box.clear()
    if value != "":
        box.send_keys(str(value))


def screenshot(driver: Any, name: str) -> Path:
    """The whole page (beyond the viewport), as PNG."""
    OUTPUT.mkdir(exist_ok=True)
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
    )
    path = OUTPUT / name
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
DESKTOP = (1280, 900)


def serious_accessibility_problems(driver: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not AXE.is_file():
        pytest.fail(f"{AXE} is missing; `make browser` installs axe-core (npm ci)")
    if not driver.execute_script("return typeof axe !== 'undefined'"):
        driver.execute_script(AXE.read_text())
    found = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then((r) => done("
        "r.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.map((n) => n.target.join(' '))}))));"
    )
    return [v for v in found if v["impact"] in ("serious", "critical")]


def percent(p: float) -> str:
    return f"{100 * p:.1f} %"


def shown_probability(driver: Any, previous: str | None = None) -> str:
    def ready(d: Any) -> str | bool:
        t = text_of(d, "probability")
        return t if re.fullmatch(r"\d+\.\d %", t) and t != previous else False

    return str(wait(driver, ready))


def test_the_page_in_a_real_browser(server: str, browser: Any) -> None:
    d = browser
    d.set_script_timeout(30)
    d.get(server + "/")
    wait(d, lambda x: x.find_element("tag name", "body").get_attribute("data-ready") == "true")
    assert serious_accessibility_problems(d) == []  # on a phone, as loaded
    # The form comes from the schema: every category of every categorical field.
    for feature in schema.FEATURES:
        node = d.find_element("id", feature.name)
        if feature.kind == "categorical":
            options = [o.get_attribute("value") for o in node.find_elements("tag name", "option")]
            assert options == list(feature.categories)
        else:
            assert float(node.get_attribute("max")) == feature.maximum
    # The optional field plot: elsewhere (nothing sent) or one of the study's plots.
    node = d.find_element("id", schema.SITE.name)
    options = [o.get_attribute("value") for o in node.find_elements("tag name", "option")]
    assert options == ["", *map(str, schema.PLOTS)]

    # Before planting: no traits, so the planning model answers.
    choose(d, "Species", "Quercus alba")
    choose(d, "Soil", "Quercus alba")
    assert d.find_element("id", "Conspecific").get_attribute("value") == "Conspecific"
    assert not d.find_element("id", "AMF").is_enabled()
    d.find_element("id", "predict").click()
    instance = {**DESIGN_EXAMPLE, "Species": "Quercus alba", "Soil": "Quercus alba"}
    instance["Conspecific"] = "Conspecific"
    status, api = request(f"{server}/v1/predictions", {"instances": [instance]})
    assert status == 200 and api["model"] == "planning"
    shown = shown_probability(d)
    assert shown == percent(api["predictions"][0]["death_probability"])
    assert "planning model" in text_of(d, "answer-by")
    curve = wait(d, lambda x: x.find_elements("css selector", "#survival-svg path.curve"))
    assert re.match(r"M[\d.]+,[\d.]+ H", curve[0].get_attribute("d"))
    _, surv = request(f"{server}/v1/survival", {"instances": [instance]})
    dots = d.find_elements("css selector", "#survival-svg circle")
    assert len(dots) == len(surv["predictions"][0]["survival"])
    assert serious_accessibility_problems(d) == []  # with an answer shown

    # What-if over the soils: one bar per category, the best one highlighted.
    choose(d, "vary", "Soil")
    d.find_element("id", "compare").click()
    bars = wait(d, lambda x: x.find_elements("css selector", "#compare-svg rect.bar"))
    assert len(bars) == len(schema.SOIL_SOURCES)
    _, cmp = request(f"{server}/v1/compare", {"instance": instance, "vary": "Soil"})
    assert len(d.find_elements("css selector", "#compare-svg rect.best")) == 1
    assert f"Soil = {cmp['best']}" in text_of(d, "best")
    planning_shot = screenshot(d, "web-planning.png")

    # A horizon beyond the study: the API's message appears next to that field.
    type_into(d, "horizon", 500)
    d.find_element("id", "predict").click()
    message = wait(d, lambda x: text_of(x, "err-horizon_days"))
    assert "beyond the study's follow-up" in message
    assert "invalid" in d.find_element("id", "horizon").get_attribute("class")

    # All traits known: the full model answers, by day 60.
    d.find_element("id", "traits-known").click()
    assert d.find_element("id", "AMF").is_enabled()
    full = {**schema.EXAMPLE, "Species": "Quercus alba", "Soil": "Quercus alba"}
    full["Conspecific"] = "Conspecific"
    for trait in schema.TRAITS:
        type_into(d, trait, full[trait])
    # ...in plot 5 of the study, whose site effect the survival model knows.
    choose(d, schema.SITE.name, "5")
    full[schema.SITE.name] = 5
    type_into(d, "horizon", 60)
    d.find_element("id", "predict").click()
    body = {"instances": [full], "horizon_days": 60}
    status, api = request(f"{server}/v1/predictions", body)
    assert status == 200 and api["model"] == "full"
    assert shown_probability(d, shown) == percent(api["predictions"][0]["death_probability"])
    assert "by day 60" in text_of(d, "answer-by") and "full model" in text_of(d, "answer-by")
    assert text_of(d, "err-horizon_days") == ""

    # The chart marks the chosen day with the survival model's value on it.
    alive = percent(1 - api["predictions"][0]["death_probability"])
    assert text_of(d, "survival-at") == f"day 60: {alive} alive"
    dots = d.find_elements("css selector", "#survival-svg circle:not(.mark)")
    days = [dot.find_element("tag name", "title").get_attribute("textContent") for dot in dots]
    assert f"day 60: {alive} alive" in days  # the chosen day is a point of the curve
    full_shot = screenshot(d, "web-full.png")

    # The inputs are in the URL: the link reproduces the answer in a fresh page.
    link = d.current_url
    assert "traits=1" in link and "horizon=60" in link and f"{schema.SITE.name}=5" in link
    d.get(server + "/")
    wait(d, lambda x: x.find_element("tag name", "body").get_attribute("data-ready") == "true")
    assert not d.find_element("id", "result").is_displayed()  # no inputs, no answer
    d.set_window_size(*DESKTOP)
    assert serious_accessibility_problems(d) == []  # on a desktop, as loaded
    d.get(link)
    wait(d, lambda x: x.find_element("tag name", "body").get_attribute("data-ready") == "true")
    assert text_of(d, "probability") == percent(api["predictions"][0]["death_probability"])
    for name in (*schema.FEATURE_NAMES, schema.SITE.name):
        if full.get(name) is not None:
            value = d.find_element("id", name).get_attribute("value")
            assert value == str(full[name]) or float(value) == full[name], name
    assert text_of(d, "survival-at") == f"day 60: {alive} alive"
    assert serious_accessibility_problems(d) == []  # on a desktop, with the answer
    shared_shot = screenshot(d, "web-shared-desktop.png")
    d.set_window_size(*PHONE)

    # A trait out of range: the message is shown beside that trait.
    type_into(d, "Lignin", 150)
    d.find_element("id", "predict").click()
    assert "out of range" in wait(d, lambda x: text_of(x, "err-Lignin"))
    assert not d.find_element("id", "result").is_displayed()  # no stale answer beside it
    error_shot = screenshot(d, "web-error.png")
    for shot in (planning_shot, full_shot, shared_shot, error_shot):
        assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000
