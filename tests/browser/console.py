"""The console as a user drives it in the browser: open a page, fill and submit its forms (the submit button
clicked, as a person would), read what the page shows; a screenshot of each step."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from urllib.parse import urlsplit

import requests
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

TOKEN = "console-admin-token"
WAIT = 15  # seconds for a page to load after a submit
SUBMIT = "button:not([type=button]):not([type=reset]), input[type=submit]"


class Console:
    def __init__(self, driver: WebDriver, url: str, artifacts: Path):
        self.driver, self.url, self.artifacts = driver, url, artifacts
        self.steps = 0

    # What the browser shows.

    @property
    def path(self) -> str:
        return urlsplit(self.driver.current_url).path

    def find(self, selector: str, within: WebElement | None = None) -> WebElement:
        return (within or self.driver).find_element(By.CSS_SELECTOR, selector)

    def find_all(self, selector: str, within: WebElement | None = None) -> list[WebElement]:
        return (within or self.driver).find_elements(By.CSS_SELECTOR, selector)

    def form_of(self, selector: str) -> WebElement:
        """The form the element `selector` names is in."""
        return self.find(selector).find_element(By.XPATH, "./ancestor::form")

    def text(self, selector: str) -> str:
        return self.find(selector).text.strip()

    def shot(self, step: str) -> Path:
        """The whole page as a PNG, NN-step.png in the test's artifacts folder."""
        self.steps += 1
        path = self.artifacts / f"{self.steps:02d}-{re.sub(r'[^a-z0-9]+', '-', step.lower()).strip('-')}.png"
        try:
            size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
            shot = self.driver.execute_cdp_cmd(
                "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
            )
            path.write_bytes(base64.b64decode(shot["data"]))
        except Exception:  # not Chromium, or the page too large for one capture: the window's part
            self.driver.save_screenshot(str(path))
        return path

    # What a person does.

    def open(self, path: str, step: str | None = None) -> None:
        self.driver.get(self.url + path)
        self._loaded()
        self.shot(step or f"open {path}")

    def fill(self, form: WebElement, **fields: str) -> None:
        for name, value in fields.items():
            field = self.find(f"[name={name}]", form)
            if field.tag_name == "select":
                self.find(f"option[value='{value}']", field).click()
            else:
                field.clear()
                field.send_keys(value)

    def submit(self, form: WebElement, step: str) -> None:
        """Click the form's submit button and wait for the page it leads to."""
        button = self.find(SUBMIT, form)
        self._navigating(button.click)
        self.shot(step)

    def type_and_enter(self, selector: str, value: str, step: str) -> None:
        field = self.find(selector)
        field.clear()
        field.send_keys(value)
        self._navigating(lambda: field.send_keys(Keys.RETURN))
        self.shot(step)

    def sign_in(self, token: str = TOKEN) -> None:
        self.open("/console/login", "login page")
        form = self.form_of("#token")
        self.fill(form, token=token)
        self.submit(form, "signed in" if token == TOKEN else "wrong token")

    def http(self) -> requests.Session:
        """A requests session with the browser's cookies: the same signed-in operator, outside the browser."""
        session = requests.Session()
        for cookie in self.driver.get_cookies():
            session.cookies.set(cookie["name"], cookie["value"], path=cookie.get("path", "/"))
        return session

    def _navigating(self, action) -> None:
        page = self.find("html")
        action()
        WebDriverWait(self.driver, WAIT).until(lambda driver: _gone(page))
        self._loaded()

    def _loaded(self) -> None:
        WebDriverWait(self.driver, WAIT).until(
            lambda driver: driver.execute_script("return document.readyState") == "complete"
        )


def _gone(element: WebElement) -> bool:
    """Whether the page `element` was on has been left. Selenium's staleness_of counts only its stale-element
    error, but Chromium, asked mid-navigation, may answer "Node with given id does not belong to the document"
    (a plain WebDriverException): that too means the old page is gone (seen once in CI)."""
    try:
        element.is_enabled()
    except WebDriverException:  # StaleElementReferenceException is one
        return True
    return False
