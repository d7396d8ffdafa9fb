"""The web console in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by
Selenium), against a real nats-server and every real UPM service, in secure mode (an access file:
roles and visibility enforced by the services and the projector), issue 25.

People (tenant acme): alice requester, bob and carol approvers (members of ``platform-owners``,
the group prod changes ask for two of), audrey auditor; tenant globex: gina requester. Each signs
in with a token. Screenshots of every page go to ``tests/artifacts/console/`` (ignored by git).

Selenium blocks, so every browser call runs in a worker thread while the services and the console
keep running in the test's event loop.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import pytest
from console_world import World, token

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts" / "console"
ConsoleAt = Callable[..., Awaitable[int]]  # the console fixture (tests/conftest.py)
T = TypeVar("T")


def chromium() -> tuple[str, str]:
    """Debian's chromium and its driver; skip (saying how to get them) only when they are not installed."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("Chromium is not installed and could not be: run ./upm.sh as root (it runs `apt-get install -y "
                    "chromium chromium-driver` when chromium is missing)")
    return browser, driver


class Browser:
    """One headless Chromium (synchronous: call its methods through :func:`run`)."""

    def __init__(self, base: str) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        browser, driver = chromium()
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1400"):
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(driver), options=options)
        self.base = base

    def open(self, path: str) -> str:
        self.driver.get(self.base + path)
        return str(self.driver.page_source)

    def sign_in(self, who: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.delete_all_cookies()
        self.open("/signin")
        self.driver.find_element(By.NAME, "token").send_keys(token(who))
        self.driver.find_element(By.ID, "signin").click()  # returns before the next page has loaded
        self.wait_for("#whoami", 10)
        assert self.driver.find_element(By.ID, "whoami").text == who

    def wait_for(self, css: str, within: float) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.driver, within, poll_frequency=0.05).until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))

    def count(self, css: str) -> int:
        from selenium.webdriver.common.by import By

        return len(self.driver.find_elements(By.CSS_SELECTOR, css))

    def click(self, element_id: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.ID, element_id).click()

    def text(self, element_id: str) -> str:
        from selenium.webdriver.common.by import By

        return str(self.driver.find_element(By.ID, element_id).text)

    def post(self, path: str, fields: dict[str, str]) -> dict[str, Any]:
        """A POST from this page's own origin and cookies (what a forged form would be): status and text."""
        script = ("const done = arguments[arguments.length - 1];"
                  "fetch(arguments[0], {method: 'POST', body: new URLSearchParams(arguments[1]), redirect: 'follow', "
                  "headers: {Accept: 'text/html'}})"
                  ".then(r => r.text().then(t => done({status: r.status, text: t})))"
                  ".catch(e => done({status: 0, text: String(e)}));")
        result: dict[str, Any] = self.driver.execute_async_script(script, path, fields)
        return result

    def csrf(self) -> str:
        from selenium.webdriver.common.by import By

        return str(self.driver.find_element(By.NAME, "csrf").get_attribute("value"))

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        height = self.driver.execute_script("return document.body.scrollHeight")
        self.driver.set_window_size(1280, min(max(int(height), 600), 6000))
        self.driver.save_screenshot(str(path))
        self.driver.set_window_size(1280, 1400)
        print(f"screenshot: {path}")
        return path

    def close(self) -> None:
        self.driver.quit()


async def run(func: Callable[..., T], *args: Any) -> T:
    return await anyio.to_thread.run_sync(functools.partial(func, *args))


@pytest.fixture
def browser(world: World) -> Iterator[Browser]:
    chromium()
    b = Browser(world.base)
    yield b
    b.close()


async def test_the_list_follows_new_changes_and_an_approver_releases_a_waiting_prod_change(
        world: World, browser: Browser) -> None:
    """The list shows a change submitted elsewhere within 2 s without a reload; on a waiting prod change
    the initiator gets no Approve button and a forged POST is refused (no or a wrong CSRF token, or one
    of hers: pre-flight refuses the initiator exactly as for `upm approve`); bob and carol approve it
    from its page and it runs to `succeeded`."""
    await run(browser.sign_in, "bob")
    await run(browser.open, "/changes")
    await run(browser.wait_for, "#live.on", 5)
    first = await world.submit("alice", f"Create directory {world.tmp / 'listed'}")
    # pushed over server-sent events, no reload: within 2 s on a machine that is not overloaded (the suite
    # shares two cores between two workers; the bound stretches with the load per core, never below 2 s)
    await run(browser.wait_for, f'tr[data-change="{first}"]', 2.0 * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1)))
    await run(browser.shot, "changes-list")

    prod = await world.submit("alice", f"Create directory {world.tmp / 'prod-app'}", environment="prod")
    waiting = await world.until(prod, lambda s: s.state == "awaiting-approval")
    assert waiting.tenant == "acme"

    await run(browser.sign_in, "alice")
    page = await run(browser.open, f"/changes/{prod}")
    assert await run(browser.count, "#approve") == 0 and "you initiated this change" in page
    await run(browser.shot, "change-initiator")
    csrf = await run(browser.csrf)  # the sign-out form's: alice's real session token
    no_token = await run(browser.post, f"/changes/{prod}/approve", {"reason": "mine"})
    wrong = await run(browser.post, f"/changes/{prod}/approve", {"reason": "mine", "csrf": "0" * 43})
    assert (no_token["status"], wrong["status"]) == (403, 403) and "CSRF" in no_token["text"]
    hers = await run(browser.post, f"/changes/{prod}/approve", {"reason": "mine", "csrf": csrf})
    assert hers["status"] == 200 and "approve refused" in hers["text"]  # the refusal, shown as a message
    assert (await world.status("alice", prod)).state == "awaiting-approval"

    await run(browser.sign_in, "audrey")  # an auditor sees it, may not approve it
    page = await run(browser.open, f"/changes/{prod}")
    assert await run(browser.count, "#approve") == 0 and "no approver role" in page
    audrey_csrf = await run(browser.csrf)
    refused = await run(browser.post, f"/changes/{prod}/approve", {"csrf": audrey_csrf})
    assert "approve refused (rbac)" in refused["text"]

    for approver in ("bob", "carol"):
        await run(browser.sign_in, approver)
        await run(browser.open, f"/changes/{prod}")
        assert await run(browser.count, "#approve") == 1
        await run(browser.shot, f"change-awaiting-{approver}")
        await run(browser.click, "approve")
        await run(browser.wait_for, ".flash.good", 5)
        assert "approve recorded" in await run(lambda: browser.driver.page_source)
    done = await world.until(prod, lambda s: s.state == "closed")
    assert done.outcome == "succeeded" and (world.tmp / "prod-app").is_dir()

    await run(browser.sign_in, "bob")
    await run(browser.open, "/approvals")
    assert await run(browser.count, f'tr[data-change="{prod}"]') == 0
    await run(browser.shot, "approvals")
    page = await run(browser.open, f"/changes/{prod}")
    assert "succeeded" in page and 'class="dag"' in page and "approved" in page
    await run(browser.shot, "change-succeeded")


async def test_private_changes_do_not_exist_for_another_tenant_and_the_kpi_page_draws_ten_charts(
        world: World, browser: Browser) -> None:
    """A requester of another tenant gets 404 for a private change and its evidence (as for a missing
    one); its initiator sees it, downloads its pack and the page shows it verified; the KPI page draws
    the ten charts and the score row; the drift page lists the managed resources."""
    private = await world.submit("alice", f"Create directory {world.tmp / 'secret'}", visibility="private")
    await world.until(private, lambda s: s.state == "closed")

    await run(browser.sign_in, "gina")
    page = await run(browser.open, f"/changes/{private}")
    assert "404" in page and "secret" not in page
    await run(browser.shot, "change-404-other-tenant")
    await run(browser.open, f"/changes/{private}/evidence")
    assert "404" in await run(lambda: browser.driver.title)
    await run(browser.open, "/changes")
    assert await run(browser.count, f'tr[data-change="{private}"]') == 0

    await run(browser.sign_in, "alice")
    for _ in range(100):  # the witness publishes the pack right after the close
        page = await run(browser.open, f"/changes/{private}")
        if "evidence-download" in page:
            break
        await anyio.sleep(0.2)
    assert "verified:" in await run(browser.text, "evidence-verify")
    await run(browser.shot, "change-evidence")

    await run(browser.open, "/kpi")
    assert await run(browser.count, "svg.chart") == 10
    assert await run(browser.count, "svg.chart circle.pt") >= 1  # at least one figure has points
    assert "Overall" in await run(lambda: browser.driver.page_source) or await run(browser.count, "#score") == 1
    await run(browser.shot, "kpi")
    await run(browser.open, "/drift")
    assert await run(browser.count, "table#drift tbody tr") >= 1
    await run(browser.shot, "drift")
