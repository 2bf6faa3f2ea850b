"""The study report at /explore: served from the bundle's verified files, 404 (saying
why) for a bundle without one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from treesurv.inference import bundle as bundle_mod

PAGE = b'<!doctype html><title>report</title><img src="explore-km-species.png">'
FIGURE = b"\x89PNG\r\n\x1a\n figure bytes"
NUMBERS = b'{"title": "report", "sections": []}'


@pytest.fixture(scope="module")
def with_report(tmp_path_factory: pytest.TempPathFactory, bundle_v1: Path) -> Path:
    """bundle_v1 with a study report added, written and verified like any bundle."""
    old = bundle_mod.read_bundle(bundle_v1)
    report = {"explore.html": PAGE, "explore.json": NUMBERS, "explore-km-species.png": FIGURE}
    extra = {k: v for k, v in old.manifest.items() if k not in bundle_mod.MANIFEST_KEYS}
    dest = tmp_path_factory.mktemp("bundles") / "with-report"
    bundle_mod.write_bundle(
        dest,
        {**old.files, **report},
        name=old.name,
        version="1.1.0",
        extra={**extra, "explore": bundle_mod.explore_entry(report)},
    )
    return dest


def test_report_is_served_from_the_bundle(
    make_client: Callable[..., Any], with_report: Path
) -> None:
    client = make_client(with_report)
    page = client.get("/explore")
    assert page.status_code == 200 and page.content == PAGE
    assert page.headers["content-type"].startswith("text/html")
    # The page's figures are files of the service ('self'), which its CSP allows.
    assert "img-src 'self'" in page.headers["content-security-policy"]
    figure = client.get("/explore-km-species.png")
    assert figure.status_code == 200 and figure.content == FIGURE
    assert figure.headers["content-type"] == "image/png"
    numbers = client.get("/explore.json")
    assert numbers.status_code == 200 and numbers.json()["title"] == "report"
    missing = client.get("/explore-nothing.png")
    assert missing.status_code == 404 and "no file 'explore-nothing.png'" in missing.text
    # Only the report's own files: nothing else of the bundle is reachable this way.
    assert client.get("/explore-../manifest.json").status_code == 404


def test_a_bundle_without_a_report_answers_404_saying_why(
    make_client: Callable[..., Any], bundle_v1: Path
) -> None:
    client = make_client(bundle_v1)
    for path in ("/explore", "/explore.json", "/explore-km-species.png"):
        answer = client.get(path)
        assert answer.status_code == 404, path
        assert "has no study report" in answer.json()["detail"], path


def test_the_web_page_links_the_report(make_client: Callable[..., Any], bundle_v1: Path) -> None:
    assert 'href="/explore"' in make_client(bundle_v1).get("/").text
