"""Headless Chromium driven over the DevTools protocol, with the standard library only.

Chromium's `--remote-debugging-pipe` speaks the DevTools protocol over file
descriptors 3 (commands in) and 4 (replies and events out), as JSON messages
ending in a NUL byte: no websocket, no port, no extra package. `Browser`
opens pages, collects every console message, JavaScript exception, log
entry and network request of each page, evaluates JavaScript and takes
full-page screenshots.

CI installs Debian's `chromium` (`.ci/run`); `find_chromium()` is None
where it is missing, and the tests that need it skip saying so.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# Offline and quiet: no background fetches (this machine has no network), no sandbox (root).
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
    "--remote-debugging-pipe",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium process; `open(url)` loads a page in a fresh tab."""

    def __init__(self, executable: str, timeout: float = 60.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="metasearch-chromium-")
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()
        # The shell puts the pipe ends on fds 3 and 4, where Chromium expects them (through
        # spare high fds, in case either end already is 3 or 4).
        script = (
            f'exec "$0" "$@" 200<&{to_browser_read} 201>&{from_browser_write} '
            "3<&200 4>&201 200<&- 201>&-"
        )
        self.process = subprocess.Popen(
            ["bash", "-c", script, executable, *FLAGS, f"--user-data-dir={self.profile}"],
            pass_fds=(to_browser_read, from_browser_write),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self._events: queue.Queue = queue.Queue()
        self._lock = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    # ---------------------------------------------------------------- the pipe

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._lock:
                    self._replies[-1] = {"closed": True}
                    self._lock.notify_all()
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "id" in message:
                    with self._lock:
                        self._replies[message["id"]] = message
                        self._lock.notify_all()
                else:
                    self._events.put(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Sends one command and waits for its reply; raises on a protocol error."""
        with self._lock:
            self._next_id += 1
            number = self._next_id
        message = {"id": number, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        with self._lock:
            while number not in self._replies:
                if -1 in self._replies:
                    raise RuntimeError(f"chromium closed the pipe during {method}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"chromium did not answer {method} in {self.timeout}s")
                self._lock.wait(left)
            reply = self._replies.pop(number)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    # ---------------------------------------------------------------- pages

    def open(self, url: str, width: int = 1366, height: int = 800) -> Page:
        """Loads `url` in a new tab `width` CSS pixels wide; returns once its load event fired."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        page = Page(self, session, url, width)
        self._drain(page)
        page.events.clear()  # what about:blank did is not the page's
        self.send("Page.navigate", {"url": url}, session=session)
        deadline = time.monotonic() + self.timeout
        while not any(e["method"] == "Page.loadEventFired" for e in page.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not load in {self.timeout}s")
            self._drain(page, wait=0.1)
        # Anything the page does just after its load event (late requests, errors).
        settle = time.monotonic() + 0.5
        while time.monotonic() < settle:
            self._drain(page, wait=0.1)
        return page

    def _drain(self, page: Page, wait: float = 0.0) -> None:
        try:
            event = self._events.get(timeout=wait) if wait else self._events.get_nowait()
        except queue.Empty:
            return
        while True:
            if event.get("sessionId") == page.session:
                page.events.append(event)
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                try:
                    self.send("Browser.close")
                except (RuntimeError, TimeoutError, OSError):
                    pass
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=10)
        finally:
            for fd in (self._to_browser, self._from_browser):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    """A loaded tab: its DevTools events, JavaScript evaluation and screenshots."""

    def __init__(self, browser: Browser, session: str, url: str, width: int):
        self.browser, self.session, self.url, self.width = browser, session, url, width
        self.events: list[dict[str, Any]] = []

    def _of(self, method: str) -> list[dict[str, Any]]:
        self.browser._drain(self)
        return [e["params"] for e in self.events if e["method"] == method]

    def console_errors(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions and error-level log entries."""
        found = [
            f"console.{p['type']}: {[a.get('value', a.get('description')) for a in p['args']]}"
            for p in self._of("Runtime.consoleAPICalled")
            if p["type"] in ("error", "assert", "warning")
        ]
        found += [
            f"exception: {p['exceptionDetails'].get('text')}"
            for p in self._of("Runtime.exceptionThrown")
        ]
        found += [
            f"log {p['entry']['source']}: {p['entry']['text']}"
            for p in self._of("Log.entryAdded")
            if p["entry"]["level"] in ("error", "warning")
        ]
        return found

    def requests(self) -> list[str]:
        """The URL of every request the page made (the document's own included)."""
        return [p["request"]["url"] for p in self._of("Network.requestWillBeSent")]

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression evaluated in the page."""
        result = self.browser.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True},
            session=self.session,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (all of its height) at the page's width."""
        metrics = self.browser.send("Page.getLayoutMetrics", session=self.session)
        height = int(metrics["cssContentSize"]["height"]) + 1
        data = self.browser.send(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1},
            },
            session=self.session,
        )["data"]
        path.write_bytes(base64.b64decode(data))
        return path
