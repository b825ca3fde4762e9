"""The episode page and the clinic overview, opened by their signed links in headless Chromium (Debian
``chromium``, driven by Playwright without a downloaded browser), against the service as the Dockerfile starts it
(gunicorn, 2 workers: a link issued by one worker opens in the other).

No console errors, no failed page loads, charts present; screenshots (screen and print media) are saved in
``$KAPFHIR_SCREENSHOT_DIR`` (default: a temporary directory named in the output).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from service.fixture_loader import fixture_paths, load_fixture, replay
from service.security.keys import ensure_local_signing_key
from service.security.settings import DEV_AUDIENCE, DEV_ISSUER
from service.security.tokens import TokenIssuer
from tests.support.app import REPO_ROOT
from tests.support.processes import RunningService, run_dockerfile_cmd

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    workdir = tmp_path_factory.mktemp("pages")
    running = run_dockerfile_cmd(
        REPO_ROOT,
        {
            "KAPFHIR_DATABASE_URL": f"sqlite:///{workdir / 'kapfhir.db'}",
            "KAPFHIR_SIGNING_KEY_FILE": str(workdir / "signing-key.pem"),
            "KAPFHIR_WORKERS": "2",
        },
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def http(service: RunningService) -> requests.Session:
    key = ensure_local_signing_key(service.env["KAPFHIR_SIGNING_KEY_FILE"])
    token = TokenIssuer(key, issuer=DEV_ISSUER, audience=DEV_AUDIENCE).issue(
        client_id="pages", clinic_id="demo", scope="system/*.cruds"
    )
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token.access_token}"

    def send(method: str, path: str, body: Any) -> tuple[int, Any]:
        r = session.request(method, f"{service.base_url}/api/v1{path}", json=body, timeout=30)
        return r.status_code, r.json()

    session.ids = {p.stem: replay(load_fixture(p), send) for p in fixture_paths(REPO_ROOT / "fixtures" / "episodes")}
    return session


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-system-packages.sh (Debian package chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = Path(os.environ.get("KAPFHIR_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    directory.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {directory}")
    return directory


def _visit(browser: Any, url: str) -> tuple[Any, Any, list[str]]:
    """Opens a page in a fresh context; returns the page, the main response and every problem the browser saw."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on(
        "console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
    response = page.goto(url, wait_until="load", timeout=30_000)
    return page, response, problems


def test_episode_page_opens_in_chromium_without_errors(service, http, browser, screenshots):
    episode = http.ids["a-trd-iv-ketamine"]["episode"]
    link = http.post(f"{service.base_url}/api/v1/episodes/{episode}/view-link", timeout=30).json()["url"]
    assert link.startswith(service.base_url)
    page, response, problems = _visit(browser, link)
    assert response.status == 200
    assert problems == []
    assert page.locator("svg").count() >= 3
    assert page.locator("h2", has_text="Open safety flags").count() == 1
    page.screenshot(path=str(screenshots / "episode-page.png"), full_page=True)
    page.emulate_media(media="print")
    page.screenshot(path=str(screenshots / "episode-page-print.png"), full_page=True)
    assert (screenshots / "episode-page.png").stat().st_size > 10_000
    page.context.close()


def test_overview_opens_in_chromium_without_errors(service, http, browser, screenshots):
    link = http.post(
        f"{service.base_url}/api/v1/outcomes/view-link", params={"from": "2026-01-01", "to": "2026-12-31"}, timeout=30
    ).json()["url"]
    page, response, problems = _visit(browser, link)
    assert response.status == 200
    assert problems == []
    assert page.locator("table").count() >= 3
    assert page.locator("svg").count() >= 1  # the monthly trend
    page.screenshot(path=str(screenshots / "outcomes-page.png"), full_page=True)
    page.context.close()


def test_a_tampered_link_answers_403_in_the_browser(service, http, browser):
    episode = http.ids["b-ptsd-im-ketamine"]["episode"]
    link = http.post(f"{service.base_url}/api/v1/episodes/{episode}/view-link", timeout=30).json()["url"]
    context = browser.new_context()
    page = context.new_page()
    response = page.goto(link[:-2] + ("AA" if not link.endswith("AA") else "BB"))
    assert response.status == 403
    context.close()
    audit = http.get(f"{service.base_url}/api/v1/audit-events", params={"limit": 200}, timeout=30).json()["items"]
    # The browser's opening of the episode page (previous test) is in the clinic's trail, with the client that
    # asked for the link; the tampered link names no clinic that can be believed, so it is audited without one.
    opened = [e for e in audit if e["route"] == "/episodes/<episode_id>/view"]
    assert [(e["status"], e["client_id"]) for e in opened] == [(200, "pages")]
