"""Debian's Chromium, headless, driven through its own chromedriver (selenium), for page tests.

Both come from Debian's packages (`make setup` installs them); a machine without them fails
the test that needs them, naming what is missing, rather than skipping it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = ROOT / "build" / "test-artefacts"
T = TypeVar("T")

# The contrast ratio (WCAG 2) of every visible text element against the background it is
# drawn on (the nearest ancestor's opaque background), the worst ones first.
CONTRASTS = """
function lum(c) {
  const [r, g, b] = c.match(/[\\d.]+/g).slice(0, 3).map(Number).map((v) => {
    v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}
function background(el) {
  for (; el; el = el.parentElement) {
    const bg = getComputedStyle(el).backgroundColor;
    const alpha = bg.match(/[\\d.]+/g).length === 4 ? Number(bg.match(/[\\d.]+/g)[3]) : 1;
    if (alpha > 0.5) return bg;
  }
  return "rgb(255, 255, 255)";
}
const out = [];
for (const el of document.querySelectorAll("body *")) {
  const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
  if (!own || !el.offsetParent) continue;
  const a = lum(getComputedStyle(el).color), b = lum(background(el));
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  out.push([Math.round(ratio * 100) / 100, el.tagName + "." + el.className,
            el.textContent.trim().slice(0, 40)]);
}
return out.sort((x, y) => x[0] - y[0]);
"""


def _binary(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is missing: make setup installs Debian's chromium and chromium-driver"
    return found


@contextmanager
def chromium(width: int = 1280, height: int = 1000) -> Iterator[webdriver.Chrome]:
    """A headless Chromium at `width` x `height` CSS pixels, quit on exit."""
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(_binary("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: webdriver.Chrome, check: Callable[[], T], timeout_s: float, what: str) -> T:
    """`check()`'s first truthy value, polled until `timeout_s`; fails naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = check()
        except Exception:  # an element replaced while read: the page is refreshing
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f}s ({driver.current_url})")
        time.sleep(0.2)


def script(driver: webdriver.Chrome, code: str, *args: Any) -> Any:
    """Run JavaScript in the page and return its value."""
    return driver.execute_script(code, *args)


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    """Save a screenshot as a test artefact (`build/test-artefacts/NAME.png`)."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
    return path
