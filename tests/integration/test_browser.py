"""The web UI in a real browser: Debian's Chromium driven by Playwright against the running server.

The front page shows a published repo (its `DIB_MLNX_OFED_REPO` and copy button), a build page follows a
running build's log as it grows, and the cancel button, sent with the login cookie's token, cancels it. Every
page's screenshot is kept for people to look at: in the session's temporary directory, or in the directory
``OFEDREPO_TEST_ARTIFACTS`` names.
"""

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from synthetic.bundle import BundleSpec, make_kernel_sources
from tests.conftest import RunningServer, start_server, stop_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "ui-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUICK_KERNEL = "4.18.0-372.19.1.el8_6.x86_64"
SLOW_KERNEL = "4.18.0-372.41.1.el8_6.x86_64"
UNTOUCHED_KERNEL = "4.18.0-372.46.1.el8_6.x86_64"  # a slow build no one logged in may cancel

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium: `make test` installs Debian's")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, bundle_tgz: Path) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("browser")
    make_kernel_sources(root / "kernels", QUICK_KERNEL)
    make_kernel_sources(root / "kernels", SLOW_KERNEL, build_seconds=60)
    make_kernel_sources(root / "kernels", UNTOUCHED_KERNEL, build_seconds=60)
    environment = {
        "OFEDREPO_API_TOKENS": TOKEN,
        "OFEDREPO_KERNEL_SOURCES_ROOT": str(root / "kernels"),
        "OFEDREPO_QUEUE_POLL_INTERVAL": "0.2",
    }
    running = start_server(root / "var", root / "serve.log", environment, worker=True)
    try:
        with bundle_tgz.open("rb") as stream:
            added = httpx.post(f"{running.url}/api/v1/bundles", files={"file": stream}, headers=AUTH, timeout=300)
        assert added.status_code == 201, added.text
        build_id = httpx.post(f"{running.url}/api/v1/repos", json={"kernel": QUICK_KERNEL}, headers=AUTH).json()
        deadline = time.monotonic() + 120
        while httpx.get(f"{running.url}/api/v1/builds/{build_id['build']['id']}").json()["state"] != "succeeded":
            assert time.monotonic() < deadline, "the quick build did not succeed"
            time.sleep(0.3)
        yield running
    finally:
        stop_server(running)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: never into the repository."""
    named = os.environ.get("OFEDREPO_TEST_ARTIFACTS")
    directory = Path(named) if named else tmp_path_factory.mktemp("screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    yield context.new_page()
    context.close()


def test_the_front_page_shows_the_published_repo(server: RunningServer, page: Page, artifacts: Path) -> None:
    page.goto(server.url + "/")
    row = page.locator("#repos tbody tr", has_text=QUICK_KERNEL)
    expect(row).to_contain_text("published")
    latest = f"{server.url}/repos/{BundleSpec().name}/{QUICK_KERNEL}/latest"
    expect(row.locator("code")).to_have_text(latest)
    row.locator("button[data-copy]").click()  # headless Chromium may refuse the clipboard: then it selects
    expect(row.locator("button[data-copy]")).not_to_have_text("copy")
    page.screenshot(path=str(artifacts / "front-page.png"), full_page=True)

    row.locator("a", has_text=QUICK_KERNEL).click()
    expect(page.locator("h1")).to_have_text(QUICK_KERNEL)
    expect(page.locator("#dib-shell")).to_contain_text(f"DIB_MLNX_OFED_REPO='{latest}'")
    expect(page.locator("#repo-file")).to_contain_text("repo_gpgcheck=1")


def test_a_narrow_screen_needs_no_sideways_scrolling(server: RunningServer, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 360, "height": 780})
    narrow = context.new_page()
    for path in ("/", "/ui/builds", "/ui/bundles", "/ui/bundles/1", "/ui/images", "/ui/kernels", "/ui/status"):
        narrow.goto(server.url + path)
        assert narrow.evaluate("document.documentElement.scrollWidth") <= 360 + 1, path
    context.close()


def test_the_build_page_follows_the_log_and_cancels_from_the_ui(server: RunningServer, page: Page) -> None:
    answer = httpx.post(f"{server.url}/api/v1/repos", json={"kernel": SLOW_KERNEL}, headers=AUTH, timeout=30)
    build_id = answer.json()["build"]["id"]
    page.goto(f"{server.url}/ui/login")
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/")

    page.goto(f"{server.url}/ui/builds/{build_id}")
    log = page.locator("#log")
    expect(log).to_contain_text("compiling kernel modules", timeout=30_000)
    before = len(log.inner_text())
    expect(log).to_contain_text("(4/60", timeout=30_000)  # the page appended what the worker wrote since
    assert len(log.inner_text()) > before

    page.click("#cancel")
    expect(page.locator("#build-state")).to_contain_text("cancelled", timeout=20_000)
    assert httpx.get(f"{server.url}/api/v1/builds/{build_id}").json()["state"] == "cancelled"


def test_ui_actions_without_logging_in_say_so(server: RunningServer, page: Page) -> None:
    """A cancel sent without a token is refused, and the page says to log in; the build goes on."""
    answer = httpx.post(f"{server.url}/api/v1/repos", json={"kernel": UNTOUCHED_KERNEL}, headers=AUTH, timeout=30)
    build_id = answer.json()["build"]["id"]
    try:
        page.goto(f"{server.url}/ui/builds/{build_id}")
        page.click("#cancel")
        expect(page.locator("#action-error")).to_contain_text("log in first")
        assert httpx.get(f"{server.url}/api/v1/builds/{build_id}").json()["state"] in ("queued", "running")
    finally:
        httpx.post(f"{server.url}/api/v1/builds/{build_id}/cancel", headers=AUTH, timeout=30)
    page.goto(f"{server.url}/ui/login")
    page.fill("#token", "not-the-token")
    page.click("button[type=submit]")
    expect(page.locator("[role=alert]")).to_contain_text("not one of this service's tokens")


def test_the_api_docs_render_with_no_other_host_reachable(server: RunningServer, page: Page) -> None:
    """Every request the page makes to another host is refused: Swagger UI still lists the operations."""
    refused: list[str] = []

    def only_the_service(route: Route) -> None:
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_service)  # sees every request that would leave the browser
    page.goto(server.url + "/docs")
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/repos").first).to_be_visible(timeout=20_000)
    assert refused == []
    page.goto(server.url + "/redoc")  # its sidebar's logo came from cdn.redoc.ly
    expect(page.locator("h1", has_text="ofedrepo")).to_be_visible(timeout=20_000)
    expect(page.get_by_text("/api/v1/repos", exact=False).first).to_be_attached()
    assert refused == []
    page.goto(server.url + "/ui/feeds")  # the feeds page, with the kept kernel sources, needs no other host either
    expect(page.locator("h2", has_text="Kept kernel sources")).to_be_visible()
    assert refused == []


PAGES = {
    "repos": "/", "kernels": "/ui/kernels", "builds": "/ui/builds", "builds-succeeded": "/ui/builds?state=succeeded",
    "bundles": "/ui/bundles", "bundle": "/ui/bundles/1", "images": "/ui/images", "feeds": "/ui/feeds",
    "status": "/ui/status",
}  # fmt: skip


def test_every_page_renders_and_is_kept_as_a_screenshot(server: RunningServer, page: Page, artifacts: Path) -> None:
    for name, path in PAGES.items():
        answer = page.goto(server.url + path)
        assert answer is not None and answer.status == 200, path
        page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)
    page.goto(server.url + "/ui/kernels")  # the kernel built for the bundle: published, linked to its repo
    row = page.locator("#kernels tbody tr", has_text=QUICK_KERNEL)
    expect(row.locator("td").first).to_contain_text("published")
    expect(row.locator("td a").first).to_have_attribute("href", re.compile(r"^/ui/repos/[0-9]+$"))
    expect(row.locator("th")).to_contain_text("request")  # asked for by a person, and by nothing else
    page.goto(server.url + "/ui/kernels?page=2")  # one page holds every kernel here: the next one says so
    expect(page.locator("main")).to_contain_text("No kernels on this page")
    page.goto(server.url + "/ui/status")
    expect(page.locator("#workers")).to_contain_text("x86_64")
    expect(page.locator("#workers")).to_contain_text(re.compile(r"idle|#[0-9]+"))  # what each worker builds
    page.goto(server.url + "/ui/builds?state=succeeded")
    expect(page.locator("#builds tbody")).to_contain_text(BundleSpec().name)
    expect(page.locator("#state-filter strong")).to_have_text("succeeded")  # the filter shown is the one chosen
    assert "Macro" not in page.content()
    page.goto(server.url + "/ui/builds?state=failed&page=2")  # a page past the end still links back, filtered
    expect(page.locator("#pages a")).to_have_attribute("href", "/ui/builds?page=1&state=failed")
    page.goto(server.url + "/ui/bundles/1")
    expect(page.locator("#bundle-repos")).to_contain_text(QUICK_KERNEL)
