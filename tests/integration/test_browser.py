"""The web UI in a real browser: Debian's Chromium driven by Playwright against the running server.

The front page shows a published repo (its `DIB_MLNX_OFED_REPO` and copy button), a build page follows a
running build's log as it grows, and the cancel button, sent with the login cookie's token, cancels it. The
front page's screenshot is written to test-artifacts/front-page.png for people to look at.
"""

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from tests.conftest import RunningServer, start_server, stop_server
from tests.support.synthetic_bundle import BundleSpec, make_kernel_sources

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "ui-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUICK_KERNEL = "4.18.0-372.19.1.el8_6.x86_64"
SLOW_KERNEL = "4.18.0-372.41.1.el8_6.x86_64"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium: `make test` installs Debian's")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, bundle_tgz: Path) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("browser")
    make_kernel_sources(root / "kernels", QUICK_KERNEL)
    make_kernel_sources(root / "kernels", SLOW_KERNEL, build_seconds=60)
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


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    yield context.new_page()
    context.close()


def test_the_front_page_shows_the_published_repo(server: RunningServer, page: Page) -> None:
    page.goto(server.url + "/")
    row = page.locator("#repos tbody tr", has_text=QUICK_KERNEL)
    expect(row).to_contain_text("published")
    latest = f"{server.url}/repos/{BundleSpec().name}/{QUICK_KERNEL}/latest"
    expect(row.locator("code")).to_have_text(latest)
    row.locator("button[data-copy]").click()  # headless Chromium may refuse the clipboard: then it selects
    expect(row.locator("button[data-copy]")).not_to_have_text("copy")
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    page.screenshot(path=str(artifacts / "front-page.png"), full_page=True)

    row.locator("a", has_text=QUICK_KERNEL).click()
    expect(page.locator("h1")).to_have_text(QUICK_KERNEL)
    expect(page.locator("#dib-shell")).to_contain_text(f"DIB_MLNX_OFED_REPO='{latest}'")
    expect(page.locator("#repo-file")).to_contain_text("repo_gpgcheck=1")


def test_a_narrow_screen_needs_no_sideways_scrolling(server: RunningServer, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 360, "height": 780})
    narrow = context.new_page()
    for path in ("/", "/ui/builds", "/ui/bundles", "/ui/images"):
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
    images = page.goto(f"{server.url}/ui/images")
    assert images is not None and images.status == 200
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

    page.route("**/*", only_the_service)
    page.goto(server.url + "/docs")
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/repos").first).to_be_visible(timeout=20_000)
    assert refused == []
    page.goto(server.url + "/ui/feeds")  # the feeds page, with the kept kernel sources, needs no other host either
    expect(page.locator("h2", has_text="Kept kernel sources")).to_be_visible()
    assert refused == []
