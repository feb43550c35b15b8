"""Headless Chromium driven over the DevTools protocol, with the standard library only.

Chromium is started with ``--remote-debugging-pipe``: it reads protocol messages from
file descriptor 3 and writes to 4, each a JSON object ended by a NUL byte. That needs
no WebDriver, no websocket library and no port, and downloads nothing: the browser is
the one Debian's ``chromium`` package installs (``DETLLM_CHROMIUM`` names another).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    named = os.environ.get("DETLLM_CHROMIUM")
    if named:
        return named if os.access(named, os.X_OK) else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageLoad:
    """What a page did while it loaded: console messages, errors and requests."""

    url: str
    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    """URLs the page asked for and the browser did not refuse (the page's own among them)."""
    blocked: list[str] = field(default_factory=list)
    """URLs asked for and refused before going out (``csp``, say), with the reason."""


class Browser:
    """One headless Chromium; ``load`` opens a page in a fresh tab, 1280 px wide."""

    def __init__(self, executable: str, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="detllm-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire() -> None:
            # Both ends must sit at 3 and 4 in the child, inheritable, whatever numbers the pipes got.
            a, b = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self.process = subprocess.Popen(  # noqa: S603 - a fixed argument list
            [
                executable, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                f"--user-data-dir={self.profile}", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--disable-default-apps", "--hide-scrollbars",
                "--mute-audio", "about:blank",
            ],
            preexec_fn=wire,  # noqa: PLW1509 - only dup2 calls
            close_fds=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        self.version = self.call("Browser.getVersion")["product"]

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    # -- the protocol ---------------------------------------------------------------------

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise EOFError("Chromium closed its DevTools pipe")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)  # type: ignore[no-any-return]

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float | None = None) -> dict[str, Any]:
        self._next_id += 1
        ident = self._next_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            answer = self._read(deadline)
            if answer.get("id") == ident:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})  # type: ignore[no-any-return]
            self._events.append(answer)

    def _wait_for(self, method: str, session: str) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            for event in self._events:
                if event.get("method") == method and event.get("sessionId") == session:
                    return
            self._events.append(self._read(deadline))

    # -- pages ----------------------------------------------------------------------------

    def load(self, path: Path, width: int = 1280, height: int = 900, *, scripts: bool = True) -> Tab:
        """Open ``path`` in a new tab and wait for its load event (``scripts=False``: with
        JavaScript turned off for the page, as a reader might have it)."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.call(f"{domain}.enable", session=session)
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
        if not scripts:
            self.call("Emulation.setScriptExecutionDisabled", {"value": True}, session=session)
        self._events = [e for e in self._events if e.get("sessionId") != session]
        url = path.resolve().as_uri()
        self.call("Page.navigate", {"url": url}, session=session)
        self._wait_for("Page.loadEventFired", session)
        # Let anything the page might start (it should start nothing) reach the event queue.
        time.sleep(0.2)
        self.call("Runtime.evaluate", {"expression": "1"}, session=session)
        load = PageLoad(url=url)
        asked: dict[str, str] = {}
        for event in self._events:
            if event.get("sessionId") != session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert", "warning"):
                load.console_errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                load.exceptions.append(json.dumps(params.get("exceptionDetails", {}))[:500])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
                load.log_errors.append(params["entry"].get("text", ""))
            elif method == "Network.requestWillBeSent":
                asked[params.get("requestId", "")] = params.get("request", {}).get("url", "")
            elif method == "Network.loadingFailed" and params.get("blockedReason"):
                refused = asked.pop(params.get("requestId", ""), "?")
                load.blocked.append(f"{refused} ({params['blockedReason']})")
        load.requests = list(asked.values())
        return Tab(self, session, target, load)


@dataclass
class Tab:
    browser: Browser
    session: str
    target: str
    load: PageLoad

    def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` evaluated in the page (by DevTools, not by the page)."""
        result = self.browser.call("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                                   session=self.session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path, width: int = 1280, max_height: int = 6000) -> Path:
        """A PNG of the page, ``width`` px wide, as tall as the page (at most ``max_height``)."""
        import base64

        height = min(int(self.evaluate("document.documentElement.scrollHeight")), max_height)
        data = self.browser.call("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        }, session=self.session)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self.browser.call("Target.closeTarget", {"targetId": self.target})
