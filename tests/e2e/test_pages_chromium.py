"""The front door in a real browser: headless Chromium (Debian `chromium`, driven by Playwright) opens the home page
and the API docs served by gunicorn as the Dockerfile starts it, with no token and no network beyond loopback.

Screenshots go to var/test-output/screenshots/ (KAPFHIR_SCREENSHOT_DIR overrides), kept after the run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from service.entrypoints.pages import kapfhir_version
from tests.support.app import REPO_ROOT
from tests.support.processes import RunningService, run_dockerfile_cmd

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(os.environ.get("KAPFHIR_SCREENSHOT_DIR") or REPO_ROOT / "var" / "test-output" / "screenshots")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    workdir = tmp_path_factory.mktemp("pages")
    running = run_dockerfile_cmd(
        REPO_ROOT,
        {
            "KAPFHIR_DATABASE_URL": f"sqlite:///{workdir / 'kapfhir.db'}",
            "KAPFHIR_SIGNING_KEY_FILE": str(workdir / "signing-key.pem"),
            "KAPFHIR_WORKERS": "1",
        },
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "Chromium is missing: run `bash scripts/install-system-packages.sh`"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield launched
        launched.close()


class Watched:
    """A page with every console error, uncaught exception and failed or off-host request recorded."""

    def __init__(self, page: Page, origin: str) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(f"uncaught: {e}"))
        page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url} {r.failure}"))
        page.on(
            "request",
            lambda r: None if r.url.startswith((origin, "data:")) else self.problems.append(f"off-host: {r.url}"),
        )


@pytest.fixture
def watched(browser: Browser, service: RunningService) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield Watched(context.new_page(), service.base_url)
    context.close()


def _screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5_000, f"{path} looks empty"
    return path


def test_the_home_page_says_what_this_is_and_every_link_answers(watched: Watched, service: RunningService):
    page = watched.page
    response = page.goto(f"{service.base_url}/")
    assert response is not None and response.status == 200
    assert "kapfhir" in page.title() and kapfhir_version() in page.inner_text("h1")
    assert "FHIR R4" in page.inner_text("main")
    links: dict[str, Any] = {a.inner_text(): a.get_attribute("href") for a in page.locator("a").all()}
    for needed in ("/docs", "/openapi.yaml", "/fhir/metadata", "/.well-known/smart-configuration", "/healthz"):
        assert needed in links.values(), f"no link to {needed}: {links}"
    for href in links.values():
        answer = page.request.get(f"{service.base_url}{href}")  # no Authorization header: all public
        assert answer.status == 200, f"{href} answered {answer.status}"
    _screenshot(page, "home.png")
    assert watched.problems == []


def test_the_api_docs_render_the_openapi_document_with_a_bearer_token_box(watched: Watched, service: RunningService):
    page = watched.page
    response = page.goto(f"{service.base_url}/docs")
    assert response is not None and response.status == 200
    page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
    assert "kapfhir" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector(".opblock-tag", timeout=30_000)
    # Operations from the document are listed, e.g. opening an episode.
    assert page.locator(".opblock-summary-path", has_text="/api/v1/episodes").count() > 0
    # The bearer-token box: Authorize opens a dialog asking for the token of the `bearer` scheme.
    page.click("button.authorize")
    dialog = page.wait_for_selector(".auth-container input", timeout=10_000)
    assert dialog is not None
    dialog.fill("a-token")
    assert "bearer" in page.inner_text(".auth-container").lower()
    _screenshot(page, "docs.png")
    assert watched.problems == []
