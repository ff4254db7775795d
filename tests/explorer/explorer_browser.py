"""Headless Chromium (Debian's `chromium` and `chromium-driver`) driven by Selenium, set up
so that it reaches nothing but the pages it is sent to, and helpers the browser tests
share: screenshots under `.test-artifacts/explorer/`, waits on page events, paint timing.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

ARTIFACTS = Path(__file__).resolve().parents[2] / ".test-artifacts" / "explorer"
# As root Chromium needs --no-sandbox; the rest keep it from calling home (updates, sync,
# field trials, safe browsing, QUIC probes) so that only the explorer is ever reached.
FLAGS = [
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
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider",
    "--no-pings",
    "--no-default-browser-check",
    "--window-size=1280,1000",
]


def available() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    if shutil.which("chromium") is None:
        return "chromium is not installed (scripts/setup installs it)"
    if shutil.which("chromedriver") is None:
        return "chromedriver is not installed (chromium-driver; scripts/setup installs it)"
    return None


def start(profile: Path) -> webdriver.Chrome:
    """A fresh browser with its own profile directory."""
    options = Options()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    # Both paths given: Selenium looks nothing up and downloads nothing.
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_script_timeout(120)
    driver.set_page_load_timeout(120)
    return driver


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(1000, min(int(height) + 40, 6000)))
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1000)
    return path


# Resolves once `selector` matches an element whose data-status is `status`, checking
# after every swap of the live region (the page's own "zos:refreshed" event).
WAIT_STATUS = """
const [selector, status, done] = arguments;
function ok() {
  const el = document.querySelector(selector);
  return el !== null && el.getAttribute("data-status") === status;
}
if (ok()) { done(true); return; }
document.addEventListener("zos:refreshed", function check() {
  if (ok()) { document.removeEventListener("zos:refreshed", check); done(true); }
});
"""

# Resolves at the next swap of the live region.
WAIT_REFRESH = """
const done = arguments[arguments.length - 1];
document.addEventListener("zos:refreshed", () => done(true), { once: true });
"""

WAIT_LIVE = """
const done = arguments[arguments.length - 1];
const conn = document.getElementById("conn");
if (conn.classList.contains("up")) { done(true); return; }
new MutationObserver((_, obs) => {
  if (conn.classList.contains("up")) { obs.disconnect(); done(true); }
}).observe(conn, { attributes: true });
"""

# The page's paint timing, once Chromium has recorded its first contentful paint: a small
# page's load event can come before its first frame is presented, so the entry is waited
# for (an observer of buffered paint entries), not read at once. A page that never paints
# contentfully (none should) answers after 10 s with what there is.
PAINT = """
const done = arguments[arguments.length - 1];
function report() {
  const nav = performance.getEntriesByType("navigation")[0];
  const paint = {};
  for (const e of performance.getEntriesByType("paint")) paint[e.name] = e.startTime;
  done({
    first_contentful_paint: paint["first-contentful-paint"] ?? null,
    first_paint: paint["first-paint"] ?? null,
    response_end: nav.responseEnd,
    dom_content_loaded: nav.domContentLoadedEventEnd,
    load: nav.loadEventEnd,
    bytes: nav.transferSize,
  });
}
const timer = setTimeout(report, 10000);
new PerformanceObserver((list, obs) => {
  if (list.getEntries().some((e) => e.name === "first-contentful-paint")) {
    obs.disconnect();
    clearTimeout(timer);
    report();
  }
}).observe({ type: "paint", buffered: true });
"""


def paint_timing(driver: webdriver.Chrome) -> dict[str, Any]:
    return driver.execute_async_script(PAINT)
