"""Fake vendor servers in a background thread, and the fake Persona's and Verisoul's control APIs, for the tests."""

from __future__ import annotations

import contextlib
import threading

import requests
from flask import Flask
from werkzeug.serving import WSGIRequestHandler, make_server


class QuietHandler(WSGIRequestHandler):
    def log(self, *args, **kwargs):
        pass


@contextlib.contextmanager
def serve(app: Flask):
    """`app` on a free local port until the block ends; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
    # a short poll interval: shutdown() waits for one, and stub servers start and stop in a single test
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()


class FakeHostControl:
    """The control API of scripts/fake_host.py, the host application receiving notifications."""

    def __init__(self, url: str):
        self.url = url

    @property
    def webhook_url(self) -> str:
        return self.url + "/webhooks"

    def reset(self) -> None:
        requests.post(self.url + "/_control/reset", json={}, timeout=5).raise_for_status()

    def configure(self, **switches) -> None:
        requests.post(self.url + "/_control/config", json=switches, timeout=5).raise_for_status()

    def calls(self) -> list[dict]:
        return requests.get(self.url + "/_control/calls", timeout=5).json()

    def accepted(self) -> list[dict]:
        """The notifications the host took (verified and answered 2xx), in order of arrival."""
        return [call["body"] for call in self.calls() if call["verified"] and call["status"] < 300]


class FakePersonaControl:
    """The control API of scripts/fake_persona.py."""

    def __init__(self, url: str):
        self.url = url

    def _post(self, path: str, body) -> None:
        requests.post(self.url + path, json=body, timeout=5).raise_for_status()

    def reset(self) -> None:
        self._post("/_control/reset", {})

    def configure(self, **switches) -> None:
        self._post("/_control/config", switches)

    def store_events(self, *documents: dict) -> None:
        self._post("/_control/events", list(documents))

    def store_inquiries(self, *documents: dict) -> None:
        self._post("/_control/inquiries", list(documents))

    def calls(self) -> list[dict]:
        return requests.get(self.url + "/_control/calls", timeout=5).json()


# Where the fake Verisoul serves each API flavor (clients/verisoul.py): it mounts lists under /lists.
FLAVOR_PREFIX = {"account": "", "lists": "/lists"}


class FakeVerisoulControl:
    """The control API of scripts/fake_verisoul.py."""

    def __init__(self, url: str):
        self.url = url

    def configure(self, **switches) -> None:
        requests.post(f"{self.url}/_control/config", json=switches).raise_for_status()

    def create_account(self, account_id: str, linked: int = 0) -> None:
        requests.post(f"{self.url}/_control/accounts/{account_id}", json={"numAccounts": linked}).raise_for_status()

    def calls(self) -> list[dict]:
        return requests.get(f"{self.url}/_control/calls").json()

    def account(self, account_id: str) -> dict:
        return requests.get(f"{self.url}/_control/accounts").json().get(account_id, {})
