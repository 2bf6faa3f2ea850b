"""The web page in a real browser: headless Chromium (Debian's chromium and
chromium-driver, installed by `make browser`, which `make test` runs first) drives
the page served by a real server process on 127.0.0.1.

It fills the form, submits, checks the probability against the API and that the
survival curve is drawn, runs a what-if, triggers validation errors and checks
they appear next to their field, opens the link of an answer in a fresh page (the
inputs live in the URL), runs axe-core at phone and desktop widths, on load and
with an answer shown, and saves screenshots under test-output/.

The spreadsheet upload (`POST /ui/score`) is tested here too, on the same server:
its API with `requests` (the answer is what `treesurv predict --on-error skip`
writes for the same file, row for row; bad rows, files too large and junk get a
clear 4xx), and the page's upload in the browser (a real study file, a file with
bad rows and their table, the download's bytes, the progress and status).
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

from tests.helpers import BIN, ROOT, free_port, request, running
from treesurv.core import schema
from treesurv.core.files import XLSX_MEDIA_TYPE
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
# The upload's limit on this server: above 200 rows of the study, below the whole file.
UPLOAD_LIMIT = 200_000


@pytest.fixture(scope="module")
def server(bundle_four: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    cmd = [str(BIN / "treesurv"), "serve", "--port", str(port), "--model", str(bundle_four)]
    cwd = tmp_path_factory.mktemp("web-server")
    env = {"TREESURV_WATCH_INTERVAL": "0", "TREESURV_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT)}
    with running(cmd, env, port, cwd, "/readyz") as base:
        yield base


@pytest.fixture(scope="module")
def study_files(real_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files a user would upload, from the study's first 200 rows: as they are (CSV and
    XLSX), with two bad rows, and a planting plan (the design columns only)."""
    folder = tmp_path_factory.mktemp("uploads")
    lines = real_csv.read_text().splitlines(keepends=True)
    good = folder / "seedlings.csv"
    good.write_text("".join(lines[:201]))
    frame = pd.read_csv(good, dtype=str, keep_default_na=False)
    bad = frame.copy()
    bad.loc[10, "Species"] = "Pinus strobus"  # file line 12
    bad.loc[150, "Light_ISF"] = "bright"  # file line 152
    files = {
        "csv": good,
        "bad": folder / "with-bad-rows.csv",
        "xlsx": folder / "seedlings.xlsx",
        "plan": folder / "planting-plan.csv",
    }
    bad.to_csv(files["bad"], index=False)
    pd.read_csv(good).to_excel(files["xlsx"], index=False)
    frame[list(schema.DESIGN)].to_csv(files["plan"], index=False)
    assert real_csv.stat().st_size > UPLOAD_LIMIT > good.stat().st_size
    return files


@pytest.fixture(scope="module")
def predicted(
    study_files: dict[str, Path], bundle_four: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """What `treesurv predict --on-error skip` writes for each file (run side by side)."""
    folder = tmp_path_factory.mktemp("predicted")
    outputs = {k: folder / f"{p.stem}.scored{p.suffix}" for k, p in study_files.items()}
    options = ["--model", str(bundle_four), "--on-error", "skip", "-q"]
    procs = [
        subprocess.Popen(
            [str(BIN / "treesurv"), "predict", str(study_files[k]), "-o", str(out), *options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for k, out in outputs.items()
    ]
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr.decode()[-2000:]
    return outputs


def upload(server: str, path: Path, content_type: str | None = None) -> requests.Response:
    """The file's bytes as the body, as the page sends them."""
    kind = content_type or (XLSX_MEDIA_TYPE if path.suffix == ".xlsx" else "text/csv")
    return requests.post(
        f"{server}/ui/score",
        params={"filename": path.name},
        data=path.read_bytes(),
        headers={"Content-Type": kind},
        timeout=60,
    )


def scored_bytes(answer: dict[str, Any]) -> bytes:
    return base64.b64decode(answer["content_base64"])


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


# ------------------------------------------------------------------ the upload


def test_upload_answers_what_predict_writes(
    server: str, study_files: dict[str, Path], predicted: dict[str, Path]
) -> None:
    # A study file as it is: every row scored by the full model, the file byte for byte.
    r = upload(server, study_files["csv"])
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["filename"] == "seedlings.scored.csv"
    assert answer["media_type"] == "text/csv"
    assert (answer["rows"], answer["scored"], answer["rejected"]) == (200, 200, 0)
    assert answer["model"] == "full" and answer["issues"] == []
    assert scored_bytes(answer) == predicted["csv"].read_bytes()

    # Two bad rows: reported as the command line reports them, the others still scored.
    r = upload(server, study_files["bad"])
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["rows"], answer["scored"], answer["rejected"]) == (200, 198, 2)
    assert answer["on_error"] == "skip"
    assert answer["summary"] == "with-bad-rows.csv: 2 problem(s) in 2 row(s) of 200"
    assert [(i["line"], i["column"], i["value"]) for i in answer["issues"]] == [
        (12, "Species", "Pinus strobus"),
        (152, "Light_ISF", "bright"),
    ]
    assert answer["issues"][1]["rule"] == "must be a number"
    rejects = pd.read_csv(predicted["bad"].with_name("with-bad-rows.scored.rejects.csv"))
    assert rejects["line"].tolist() == [i["line"] for i in answer["issues"]]
    assert rejects["reasons"].tolist() == [
        f"{i['column']}={i['value']}: {i['rule']}" for i in answer["issues"]
    ]
    assert scored_bytes(answer) == predicted["bad"].read_bytes()

    # A planting plan (no trait columns): the planning model, as the command line does.
    r = upload(server, study_files["plan"])
    assert r.status_code == 200 and r.json()["model"] == "planning"
    assert scored_bytes(r.json()) == predicted["plan"].read_bytes()

    # XLSX in, XLSX out: the same sheet as the command line's (a workbook's bytes
    # carry its creation time, so the cells are compared).
    r = upload(server, study_files["xlsx"])
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["filename"] == "seedlings.scored.xlsx"
    assert answer["media_type"] == XLSX_MEDIA_TYPE
    got = pd.read_excel(io.BytesIO(scored_bytes(answer)))
    pd.testing.assert_frame_equal(got, pd.read_excel(predicted["xlsx"]))
    csv = pd.read_csv(predicted["csv"])
    assert list(got.columns) == list(csv.columns)
    pd.testing.assert_series_equal(got["death_probability"], csv["death_probability"])


def test_upload_refuses_what_it_cannot_score(
    server: str, real_csv: Path, study_files: dict[str, Path], tmp_path: Path
) -> None:
    def problem(r: requests.Response, status: int) -> str:
        assert r.status_code == status, r.text
        return str(r.json()["detail"][0]["msg"])

    # Over the limit: 413 naming the limit and the file's size.
    size = real_csv.stat().st_size
    msg = problem(upload(server, real_csv), 413)
    assert f"file too large: {size} bytes" in msg and f"the limit is {UPLOAD_LIMIT} bytes" in msg
    junk = tmp_path / "junk.csv"
    junk.write_bytes(bytes(range(256)) * 40)
    assert "not a CSV file" in problem(upload(server, junk), 400)
    fake = tmp_path / "fake.xlsx"
    fake.write_bytes(b"just some text, not a workbook\n")
    assert "not an XLSX file" in problem(upload(server, fake), 400)
    # An XLSX workbook sent as CSV, and the old binary Excel format.
    assert "an XLSX workbook" in problem(upload(server, study_files["xlsx"], "text/csv"), 400)
    old = tmp_path / "old.xls"
    old.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500))
    assert ".xls" in problem(upload(server, old, "application/vnd.ms-excel"), 415)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert "the file is empty" in problem(upload(server, empty), 400)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("name,height\noak,3\n")
    assert "missing required column(s)" in problem(upload(server, wrong), 422)
    header = tmp_path / "header.csv"
    header.write_text(study_files["csv"].read_text().splitlines()[0] + "\n")
    assert "no data rows" in problem(upload(server, header), 422)
    assert "cannot score a file" in problem(upload(server, wrong, "application/json"), 415)
    assert request(f"{server}/readyz")[0] == 200  # nothing crashed


def test_upload_on_the_page(
    server: str,
    browser: Any,
    real_csv: Path,
    study_files: dict[str, Path],
    predicted: dict[str, Path],
    tmp_path: Path,
) -> None:
    d = browser
    d.set_script_timeout(30)
    d.set_window_size(*PHONE)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    d.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    d.get(server + "/")
    wait(d, lambda x: x.find_element("tag name", "body").get_attribute("data-ready") == "true")
    assert f"{UPLOAD_LIMIT / 1024:.1f} KiB" in text_of(d, "upload-limit")
    chooser = d.find_element("id", "upload-file")
    label = d.find_element("css selector", "label[for=upload-file]")
    assert label.text == "Choose a CSV or XLSX file" and chooser.get_attribute("type") == "file"
    status = d.find_element("id", "upload-status")
    assert status.get_attribute("role") == "status"

    def score(path: Path) -> None:
        # Every text the progress label and the status show, in order.
        d.execute_script(
            "window.seen = [];"
            "const note = () => window.seen.push("
            "  document.getElementById('upload-progress-label').textContent + ' | ' +"
            "  document.getElementById('upload-status').textContent);"
            "window.watch?.disconnect();"
            "window.watch = new MutationObserver(note);"
            "for (const id of ['upload-progress-label', 'upload-status'])"
            "  window.watch.observe(document.getElementById(id),"
            "    {childList: true, characterData: true, subtree: true});"
        )
        chooser.send_keys(str(path))
        wait(d, lambda x: x.find_element("id", "batch").get_attribute("data-state") == "done")

    def downloaded(name: str) -> bytes:
        link = d.find_element("id", "upload-download")
        assert link.get_attribute("download") == name and link.is_displayed()
        link.click()
        target = downloads / name
        wait(d, lambda _: target.exists() and not list(downloads.glob("*.crdownload")))
        data = target.read_bytes()
        target.unlink()
        return data

    # A study file: every row scored; the download is what `treesurv predict` writes.
    score(study_files["csv"])
    assert text_of(d, "upload-status").startswith("Scored 200 of 200 rows with model 3.0.0")
    seen = d.execute_script("return window.seen")
    assert any(s.startswith("Uploading seedlings.csv") for s in seen), seen
    assert any(s.startswith("Scoring seedlings.csv") for s in seen), seen
    assert not d.find_element("id", "upload-issues").is_displayed()
    assert not d.find_element("id", "upload-progress-box").is_displayed()
    assert downloaded("seedlings.scored.csv") == predicted["csv"].read_bytes()

    # Bad rows: a table of row, column, value and problem; the other rows scored.
    score(study_files["bad"])
    assert "Scored 198 of 200 rows" in text_of(d, "upload-status")
    assert "2 rejected" in text_of(d, "upload-status")
    caption = text_of(d, "upload-issues-caption")
    assert "with-bad-rows.csv: 2 problem(s) in 2 row(s) of 200" in caption
    headers = [th.text for th in d.find_elements("css selector", "#upload-issues th")]
    assert headers == ["Row", "Column", "Value", "Problem"]
    cells = [
        [td.text for td in tr.find_elements("tag name", "td")]
        for tr in d.find_elements("css selector", "#upload-issues-body tr")
    ]
    assert [c[:3] for c in cells] == [
        ["12", "Species", "Pinus strobus"],
        ["152", "Light_ISF", "bright"],
    ]
    assert cells[1][3] == "must be a number"
    assert "--on-error skip" in text_of(d, "batch")  # the page says what happens to them
    assert serious_accessibility_problems(d) == []  # on a phone, a file scored
    phone_shot = screenshot(d, "web-upload-phone.png")
    assert downloaded("with-bad-rows.scored.csv") == predicted["bad"].read_bytes()

    # A workbook comes back as a workbook.
    score(study_files["xlsx"])
    got = pd.read_excel(io.BytesIO(downloaded("seedlings.scored.xlsx")))
    pd.testing.assert_frame_equal(got, pd.read_excel(predicted["xlsx"]))
    d.set_window_size(*DESKTOP)
    score(study_files["bad"])
    assert serious_accessibility_problems(d) == []  # on a desktop, a file scored
    desktop_shot = screenshot(d, "web-upload-desktop.png")

    # Too large: the page says so at once, with the server's numbers, sending nothing.
    _, before = request(f"{server}/metrics")
    start = time.monotonic()
    chooser.send_keys(str(real_csv))
    wait(d, lambda x: x.find_element("id", "batch").get_attribute("data-state") == "error")
    message = text_of(d, "upload-error")
    assert f"file too large: {real_csv.stat().st_size} bytes" in message
    assert f"the limit is {UPLOAD_LIMIT} bytes" in message
    assert time.monotonic() - start < 5
    _, after = request(f"{server}/metrics")
    # (a 413 answered by the body limit has no route: every POST is counted)
    sent = re.compile(r'^treesurv_http_requests_total\{method="POST"[^}]*\} (\S+)', re.M)
    assert sum(map(float, sent.findall(after))) == sum(map(float, sent.findall(before)))
    assert not d.find_element("id", "upload-result").is_displayed()
    for shot in (phone_shot, desktop_shot):
        assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000
