"""The console in headless Chromium (Debian `chromium` + `chromium-driver`, driven by Selenium; nothing is
downloaded at run time) against a live PBX with SIPp phones: log in, see a phone's registration appear
(the page polls), see a call in progress and hang it up from the page, play a voicemail and delete it,
add an extension and register a SIPp phone with it without a restart.

Screenshots of each step go to `$PBX_CONSOLE_SCREENSHOTS` (default: the test's temporary directory), as
CI artifacts. Chromium runs with `--headless=new --no-sandbox` (CI runs the tests as root).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.console_pbx import ADMIN, ADMIN_PASSWORD, ConsolePbx, launch_console_pbx
from tests.e2e.test_calls_sipp import SippSet

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not (shutil.which("chromium") and shutil.which("chromedriver")),
        reason="needs Debian's chromium and chromium-driver (scripts/test installs them)",
    ),
]

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

WAIT = 15.0


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("PBX_CONSOLE_SCREENSHOTS") or tmp_path / "screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[SippSet]:
    directory = tmp_path / "sipp"
    directory.mkdir()
    group = SippSet(directory)
    yield group
    group.stop()


@pytest.fixture
def console(tmp_path: Path) -> Iterator[ConsolePbx]:
    live = launch_console_pbx(tmp_path / "pbx")
    yield live
    live.pbx.process.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never fetch a driver or a browser
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(argument)
    service = Service(
        executable_path=shutil.which("chromedriver") or "chromedriver",
        log_output=str(tmp_path / "chromedriver.log"),
    )
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def until(what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Wait for the page to show something (the console polls every 2 s); stale elements are retried."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except (StaleElementReferenceException, WebDriverException):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)  # polling the page for an event


def rows(driver: Any, selector: str) -> list[Any]:
    return driver.find_elements(By.CSS_SELECTOR, selector)


def click(driver: Any, selector: str) -> None:
    """Click the first match, again if the page swapped it meanwhile."""
    until(
        f"a clickable {selector}",
        lambda: rows(driver, selector) and (rows(driver, selector)[0].click() or True),
    )


def test_operator_journey(console: ConsolePbx, sipp: SippSet, browser: Any, screenshots: Path) -> None:
    pbx = console.pbx
    shot = lambda name: browser.save_screenshot(str(screenshots / f"{name}.png"))  # noqa: E731

    # Log in.
    browser.get(console.url + "/t/default/calls")
    until("the login form", lambda: "/login" in browser.current_url)
    browser.find_element(By.ID, "username").send_keys(ADMIN)
    browser.find_element(By.ID, "password").send_keys(ADMIN_PASSWORD)
    shot("01-login")
    browser.find_element(By.ID, "login").click()
    until("the calls page", lambda: browser.current_url.endswith("/t/default/calls"))

    # A SIPp phone registers: the registrations page shows it without a reload.
    browser.get(console.url + "/t/default/registrations")
    assert rows(browser, "tr.registration") == []
    port = sipp.register(pbx, "1002")
    until("1002's registration", lambda: rows(browser, 'tr.registration[data-extension="1002"]'))
    assert str(port) in rows(browser, 'tr.registration[data-extension="1002"]')[0].text
    shot("02-registration")

    # A call in progress, hung up from the page.
    browser.get(console.url + "/t/default/calls")
    uas = sipp.uas("uas", "call_uas.xml", "1002", port)
    csv = sipp.users_csv([("1001", "pass1001", "1002")], "held_users")
    uac = sipp.start("uac", "console_uac_held.xml", [f"127.0.0.1:{pbx.sip}", "-inf", str(csv)], timeout=40)
    until(
        "an answered call",
        lambda: [
            r
            for r in rows(browser, "tr.call")
            if "answered" in r.find_element(By.CSS_SELECTOR, ".state").text
        ],
    )
    assert "PCMU/8000" in rows(browser, "tr.call")[0].text
    shot("03-call")
    click(browser, "tr.call button.hangup")
    until("the notice", lambda: "Call hung up." in browser.page_source)
    sipp.check(pbx, uac, uas)
    until("no call", lambda: not rows(browser, "tr.call"))
    shot("04-hung-up")

    # Play the voicemail, then delete it.
    browser.get(console.url + "/t/default/voicemail")
    [message] = rows(browser, "tr.message")
    assert message.get_attribute("data-message-id") == console.message_id
    audio = message.find_element(By.TAG_NAME, "audio")
    browser.execute_script("arguments[0].play();", audio)
    played = until(
        "the message playing",
        lambda: browser.execute_script(
            "var a = arguments[0]; var on = a.currentTime > 0 || a.ended;"
            " return a.error === null && a.readyState >= 2 && on ? a.duration : null;",
            audio,
        ),
    )
    assert 0.9 <= float(played) <= 1.1  # the seeded message is one second of tone
    shot("05-voicemail-playing")
    click(browser, "tr.message button.delete")
    until("the deletion", lambda: "Message deleted." in browser.page_source)
    assert rows(browser, "tr.message") == []
    shot("06-voicemail-deleted")

    # Add an extension, then a SIPp phone registers with it: no restart.
    browser.get(console.url + "/t/default/extensions")
    browser.find_element(By.ID, "new-number").send_keys("1060")
    browser.find_element(By.ID, "new-name").send_keys("Added in the console")
    browser.find_element(By.ID, "new-password").send_keys("pass1060")
    browser.find_element(By.ID, "add").click()
    until("the new extension", lambda: rows(browser, 'tr.extension[data-number="1060"]'))
    shot("07-extension-added")
    sipp.register(pbx, "1060")
    browser.get(console.url + "/t/default/registrations")
    until("1060's registration", lambda: rows(browser, 'tr.registration[data-extension="1060"]'))
    shot("08-new-extension-registered")
