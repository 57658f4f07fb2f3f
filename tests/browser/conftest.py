"""The operators' console in a real browser: Debian's headless Chromium driven by Selenium through Debian's
chromedriver, against the Procfile's web process (gunicorn) on a real Redis and a fresh SQLite file.

Chromium and chromedriver come from scripts/browser_deps (apt-get, as root); where it cannot install them the
browser tests are skipped with its message. Selenium is given chromedriver's path, so Selenium Manager never
looks for (or downloads) a driver or a browser. Every step's screenshot, and the page at a failure, is kept under
var/test-artifacts/browser/<test name>/."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from runtime.config import Config
from store.db import migrate
from tests.browser.console import TOKEN, Console
from tests.helpers.in_process import clear_job_caches
from tests.helpers.paths import ROOT
from tests.helpers.stack import Stack, exited
from tests.payloads import SECRET

BROWSER_DEPS = ROOT / "scripts" / "browser_deps"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = ROOT / "var" / "test-artifacts" / "browser"
WINDOW = "1280,1000"


@pytest.fixture(scope="session")
def browser_binaries() -> None:
    """Chromium and chromedriver installed (scripts/browser_deps, once a session), else the browser tests skipped
    with the script's reason; in CI (CI=true, root on Debian: the script can install them) they fail instead, so
    that a green run never hides them."""
    try:
        done = subprocess.run([BROWSER_DEPS], capture_output=True, text=True, timeout=600)
        problem = None if done.returncode == 0 else (done.stderr or done.stdout).strip()[-1000:]
    except (OSError, subprocess.TimeoutExpired) as error:
        problem = f"did not run: {error}"
    if problem is not None:
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(f"scripts/browser_deps: {problem}")


@pytest.fixture(scope="module")
def console_config(redis_server_url, tmp_path_factory) -> Config:
    """A migrated SQLite file and the session's Redis (flushed), shared by the module's tests: each uses
    reference ids of its own."""
    url = f"sqlite:///{tmp_path_factory.mktemp('console-db') / 'console.db'}"
    migrate(url)
    connection = Redis.from_url(redis_server_url)
    connection.flushdb()
    connection.close()
    return Config(webhook_secrets=(SECRET,), redis_url=redis_server_url, database_url=url, admin_api_token=TOKEN)


@pytest.fixture(scope="module")
def console_redis(console_config) -> Iterator[Redis]:
    connection = Redis.from_url(console_config.redis_url)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def console_url(browser_binaries, console_config, tmp_path_factory) -> Iterator[str]:
    """The Procfile's web process with the console enabled (ADMIN_API_TOKEN set), for the module."""
    stack = Stack(console_config.redis_url, console_config.database_url, tmp_path_factory.mktemp("console-web"))
    stack.env["ADMIN_API_TOKEN"] = TOKEN
    stack.env["WEB_CONCURRENCY"] = "1"
    stack.start("web")
    try:
        stack.wait_ready()
    except TimeoutError:
        stack.stop()
        pytest.fail(f"gunicorn did not start: {exited(stack)}; logs in {stack.log_dir}")
    yield stack.url
    stack.stop()


@pytest.fixture(scope="module")
def jobs_environment(console_config) -> Iterator[None]:
    """workers.jobs (process_event, a SimpleWorker's jobs) in this process, on the console's database and Redis."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PERSONA_WEBHOOK_SECRETS", SECRET)
        patch.setenv("REDIS_URL", console_config.redis_url)
        patch.setenv("DATABASE_URL", console_config.database_url)
        for name in ("PERSONA_API_KEY", "PERSONA_API_URL", "VERISOUL_API_URL", "VERISOUL_API_KEY"):
            patch.delenv(name, raising=False)
        clear_job_caches()
        yield
        clear_job_caches()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item, for the driver fixture to see whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def artifacts(request) -> Path:
    """var/test-artifacts/browser/<test name>/, emptied: this run's screenshots only."""
    path = ARTIFACTS / re.sub(r"[^\w.\[\]-]+", "_", request.node.name)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture
def driver(browser_binaries, artifacts, tmp_path, request) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--no-proxy-server",  # only 127.0.0.1 is visited, whatever proxy the environment names
        f"--window-size={WINDOW}",
    ):
        options.add_argument(argument)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(artifacts / "chromedriver.log"))
    browser = webdriver.Chrome(service=service, options=options)
    browser.set_page_load_timeout(30)
    try:
        yield browser
    finally:
        report = getattr(request.node, "report_call", None)
        if report is None or report.failed:
            try:
                browser.save_screenshot(str(artifacts / "failure.png"))
                (artifacts / "failure.html").write_text(browser.page_source)
            except Exception as error:  # the browser itself may be what failed
                (artifacts / "failure.txt").write_text(f"no screenshot: {error!r}\n")
        browser.quit()


@pytest.fixture
def console(driver, console_url, artifacts) -> Console:
    return Console(driver, console_url, artifacts)
