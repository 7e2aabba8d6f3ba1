"""Every page the service serves renders with nothing but the service.

Debian's Chromium opens each one with every request to another host aborted and recorded.

A page fails on any such request, on a console error about a load (a failed resource, a
load the Content-Security-Policy refused), on an uncaught script error, or when what it
should show is not there (Redoc's and Swagger UI's rendered title: a page whose script did
not run is blank). Chromium comes from Debian (``.ci/run`` installs it); Playwright drives
it and never downloads a browser of its own.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.reliability.conftest import RedisServer, ServiceProcess, running_service

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOAD_ERRORS = ("Failed to load resource", "net::ERR_", "Refused to", "Content Security Policy")


@dataclass(frozen=True)
class Page:
    """A page and what must be visible once it has rendered (a CSS selector and its text)."""

    path: str
    selector: str | None
    text: str | None = None
    script_errors_expected: bool = False  # the OAuth2 redirect page needs an opener


# Every page the service serves. A new page (the console) is one more line here.
PAGES = [
    Page("/schema", "h1", "riskscore"),
    Page("/schema/redoc", "h1", "riskscore"),
    Page("/schema/swagger", ".swagger-ui .info .title", "riskscore"),
    Page("/schema/oauth2-redirect.html", None, script_errors_expected=True),
    Page("/schema/no-such-page", "h1", "Error 404"),  # the HTML error page
    Page("/no-such-path", "body", "not found"),  # the JSON error answer
    Page("/schema/openapi.json", "body", "riskscore"),
    Page("/console/sign-in", "h1", "Sign in"),
]


@dataclass
class Visit:
    blocked: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    script_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def service(redis_server: RedisServer, evidence_dir: Path) -> Iterator[ServiceProcess]:
    with running_service(redis_server.url, evidence_dir) as service:
        yield service


@pytest.fixture
def browser_context() -> Iterator[object]:
    """Debian's Chromium with a fresh profile: nothing cached from another page."""
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed: `make test` installs it (apt-get)")
    from playwright import sync_api

    with (
        tempfile.TemporaryDirectory(prefix="riskscore-chromium-") as profile,
        sync_api.sync_playwright() as playwright,
    ):
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            yield context
        finally:
            context.close()


def visit(context: object, base_url: str, page_spec: Page) -> tuple[Visit, str]:
    """Open one page with every request elsewhere aborted; what happened and the text shown."""
    origin = urlsplit(base_url)
    seen = Visit()

    def route(route: object) -> None:
        url = route.request.url  # type: ignore[attr-defined]
        parts = urlsplit(url)
        local = (parts.scheme, parts.netloc) == (origin.scheme, origin.netloc)
        if local or parts.scheme in ("data", "blob"):
            route.continue_()  # type: ignore[attr-defined]
        else:
            seen.blocked.append(url)
            route.abort("blockedbyclient")  # type: ignore[attr-defined]

    page = context.new_page()  # type: ignore[attr-defined]
    page.route("**/*", route)
    page.on("request", lambda request: seen.requests.append(request.url))
    page.on(
        "console",
        lambda message: (
            seen.console.append(message.text) if message.type in ("error", "warning") else None
        ),
    )
    page.on("pageerror", lambda error: seen.script_errors.append(str(error)))
    try:
        page.goto(base_url + page_spec.path, wait_until="load", timeout=30_000)
        text = ""
        if page_spec.selector is not None:
            locator = page.locator(page_spec.selector).first
            locator.wait_for(state="visible", timeout=20_000)
            text = locator.inner_text()
        page.wait_for_load_state("networkidle", timeout=10_000)
        page.wait_for_timeout(500)  # late loads: fonts, images made by scripts
        return seen, text
    finally:
        page.close()


@pytest.mark.parametrize("page_spec", PAGES, ids=[p.path for p in PAGES])
def test_page_renders_with_nothing_but_the_service(
    service: ServiceProcess, browser_context: object, page_spec: Page
) -> None:
    seen, text = visit(browser_context, service.base_url, page_spec)
    assert seen.blocked == [], f"{page_spec.path} reached for other hosts: {seen.blocked}"
    load_errors = [m for m in seen.console if any(e in m for e in LOAD_ERRORS)]
    if page_spec.path.startswith("/no-such") or page_spec.path.endswith("no-such-page"):
        # the page itself is a 404, which Chromium reports once as a failed load
        load_errors = [m for m in load_errors if "404" not in m]
    assert load_errors == [], f"{page_spec.path}: {load_errors}"
    if not page_spec.script_errors_expected:
        assert seen.script_errors == [], f"{page_spec.path}: {seen.script_errors}"
    if page_spec.text is not None:
        assert page_spec.text.lower() in text.lower(), f"{page_spec.path} shows {text[:200]!r}"
    assert all(urlsplit(u).scheme in ("http", "data", "blob") for u in seen.requests)


def test_the_pages_load_their_files_from_the_service(
    service: ServiceProcess, browser_context: object
) -> None:
    """Not vacuous: the UIs do load scripts and a stylesheet, and those come from /assets."""
    loaded: list[str] = []
    for page_spec in PAGES[:3]:
        seen, _ = visit(browser_context, service.base_url, page_spec)
        loaded += seen.requests
    paths = {urlsplit(u).path for u in loaded if u.startswith(service.base_url)}
    assert {
        "/assets/redoc/redoc.standalone.js",
        "/assets/swagger-ui/swagger-ui-bundle.js",
        "/assets/swagger-ui/swagger-ui.css",
        "/assets/riskscore.svg",
    } <= paths
