"""Debian's headless Chromium for report tests: print to PDF, and a small DevTools-protocol client
(websockets) that records console errors and every network request while a page loads. Never
downloads a browser; quiet flags keep it off the network."""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

from tests.helpers.common import need

QUIET_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-default-browser-check",
    "--disable-dev-shm-usage",
]


def chromium() -> str:
    return need("chromium")


def pdf_pages(pdf: bytes) -> int:
    """Number of page objects (``/Type /Page``, not ``/Pages``) in a PDF."""
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", pdf))


def print_to_pdf(url: str, out: Path, timeout: float = 90.0) -> bytes:
    # (ignore_cleanup_errors: Chromium's helpers may still be writing the profile as it exits)
    with tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True) as ud:
        subprocess.run(
            [chromium(), *QUIET_FLAGS, f"--user-data-dir={ud}", "--no-pdf-header-footer",
             f"--print-to-pdf={out}", url],
            check=True, capture_output=True, timeout=timeout,
        )
    return out.read_bytes()


class DevTools:
    """One headless Chromium with ``--remote-debugging-port=0``, driven over its websocket."""

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self._ud = tempfile.TemporaryDirectory(prefix="chromium-cdp-")
        self.proc = subprocess.Popen(
            [chromium(), *QUIET_FLAGS, f"--user-data-dir={self._ud.name}", "--remote-debugging-port=0",
             "--remote-debugging-address=127.0.0.1", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        port_file = Path(self._ud.name) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AssertionError("chromium did not start its DevTools endpoint")
            time.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        self.ws = connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=timeout)
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True) -> dict[str, Any]:
        mid = next(self._ids)
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no reply to {method}")
            reply = json.loads(self.ws.recv(timeout=left))
            if reply.get("id") == mid:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str) -> dict[str, Any]:
        for e in self.events:
            if e["method"] == method:
                return e
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == method:
                    return msg
        raise AssertionError(f"no {method} event")

    def open(self, url: str) -> None:
        """A fresh tab with Runtime, Log, Network and Page events on, then load ``url``."""
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.send(f"{domain}.enable")
        self.events.clear()
        self.send("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")
        time.sleep(0.3)  # let late console messages arrive
        self.send("Runtime.evaluate", {"expression": "1"})  # drains pending events

    def evaluate(self, expression: str) -> Any:
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in res:
            raise AssertionError(f"evaluation failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def console_errors(self) -> list[str]:
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(json.dumps(p.get("args")))
            elif e["method"] == "Runtime.exceptionThrown":
                out.append(json.dumps(p.get("exceptionDetails")))
            elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(p["entry"].get("text", ""))
        return out

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"]

    def screenshot(self, width: int = 1280, height: int = 900) -> bytes:
        """A PNG of the whole page at ``width`` CSS pixels."""
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        res = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        return base64.b64decode(res["data"])

    def print_pdf(self) -> bytes:
        res = self.send("Page.printToPDF", {"preferCSSPageSize": True, "printBackground": True})
        return base64.b64decode(res["data"])

    def close(self) -> None:
        try:
            if hasattr(self, "ws"):
                self.ws.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            # Chromium's helper processes can still be writing the profile for a moment after the
            # browser exits: retry, bounded, then leave what is left to the temp directory reaper.
            for _ in range(40):
                try:
                    self._ud.cleanup()
                    break
                except OSError:
                    time.sleep(0.25)
            else:
                shutil.rmtree(self._ud.name, ignore_errors=True)
