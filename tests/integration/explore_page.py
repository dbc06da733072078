"""The feed explorer (`/explore`) as a person uses it, in headless Chromium on a live stack.

What is checked is what a person would notice: the feed renders as cards with reasons; an
anchor ("because you watched …") opens that item with its neighbours; a new play by the user
shows in the page without a reload; every control has a label, text has WCAG AA contrast,
and at phone width nothing runs off the side and search still works. Screenshots are written
to `build/test-artefacts/` (the README's picture is the desktop one).
"""

from __future__ import annotations

import time
import uuid

import httpx
import orjson
from confluent_kafka import Producer
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.integration.browser import CONTRASTS, chromium, screenshot, script, wait

MIN_CONTRAST = 4.5  # WCAG 2 AA, normal text


def explore_in_browser(page: str, user: str, bootstrap: str) -> None:
    """Drive the explorer at `page` (its URL, `#user=` naming `user`) through every check."""
    base = page.split("/explore", 1)[0]
    with chromium() as driver:
        driver.get(page)
        cards = wait(driver, lambda: driver.find_elements(By.CSS_SELECTOR, "#feed li.card"),
                     30, "the feed's cards")  # fmt: skip
        assert len(cards) >= 5, driver.find_element(By.ID, "feed").text
        reasons = [c.find_element(By.CSS_SELECTOR, ".reason").text for c in cards]
        assert all(reasons), reasons
        assert any(r.startswith("Because you watched ") for r in reasons), reasons
        accessible(driver)

        # An anchor opens the item it names, with its neighbours.
        anchor = driver.find_element(By.CSS_SELECTOR, "#feed a.anchor")
        anchor_id, anchor_title = anchor.get_attribute("data-item"), anchor.text
        anchor.click()
        wait(driver, lambda: driver.find_element(By.ID, "item-title").text == anchor_title,
             15, f"the item panel for {anchor_id}")  # fmt: skip
        assert f"item={anchor_id}" in driver.current_url
        assert driver.find_element(By.ID, "item-panel").is_displayed()
        similar = driver.find_elements(By.CSS_SELECTOR, "#item li.card")
        assert similar, driver.find_element(By.ID, "item").text

        # A new play by the user reaches the page while it is open (no reload).
        script(driver, "window.notReloaded = true")
        engagements = int(driver.find_element(By.ID, "engagements").text)
        recent = [e.get_attribute("data-media-id")
                  for e in driver.find_elements(By.CSS_SELECTOR, "#recent li")]  # fmt: skip
        unseen = [c.get_attribute("data-media-id") for c in similar]
        played = play(bootstrap, base, user, [m for m in unseen if m and m not in recent])
        first_recent = "#recent li:first-child"
        wait(driver,
             lambda: driver.find_element(By.CSS_SELECTOR, first_recent).get_attribute(
                 "data-media-id") == played,
             30, f"{played} first among the user's recent items")  # fmt: skip
        assert int(driver.find_element(By.ID, "engagements").text) > engagements
        assert script(driver, "return window.notReloaded === true"), "the page was reloaded"
        screenshot(driver, "explore")

        # A title is text: markup in a published event is shown, never run.
        hostile = publish_hostile(bootstrap, base)
        script(driver, "location.hash = arguments[0]", f"user={user}&item={hostile['media_id']}")
        wait(driver, lambda: driver.find_element(By.ID, "item-title").text == hostile["title"],
             15, "the hostile title shown as text")  # fmt: skip
        assert not driver.find_elements(By.CSS_SELECTOR, "#item img, #item-title b")
        assert script(driver, "return window.pwned === undefined"), "a title's markup ran"

        # Phone width: nothing runs off the side, and searching still works.
        driver.set_window_size(390, 844)
        time.sleep(0.5)
        width, inner = script(driver, "return [document.documentElement.scrollWidth, innerWidth]")
        assert width <= inner, f"the page is {width}px wide in a {inner}px window"
        search = driver.find_element(By.ID, "q")
        search.clear()
        search.send_keys(user)

        def found() -> list[str]:  # the list narrowed to the user (ids are fixed-width)
            listed = [b.text for b in driver.find_elements(By.CSS_SELECTOR, "#users button")]
            return listed if listed and all(t.startswith(user) for t in listed) else []

        assert len(wait(driver, found, 15, f"only {user} listed at phone width")) == 1
        screenshot(driver, "explore-phone")


def accessible(driver: WebDriver) -> None:
    """Labels on every control, a page language, and AA contrast on every visible text."""
    unlabelled = script(
        driver,
        """return [...document.querySelectorAll("input, select")]
        .filter((el) => !el.labels || el.labels.length === 0).map((el) => el.id)""",
    )
    assert not unlabelled, f"controls without a label: {unlabelled}"
    assert script(driver, "return document.documentElement.lang") == "en"
    measured = script(driver, CONTRASTS)
    assert len(measured) > 20, measured  # the cards' texts among them
    worst = [c for c in measured if c[0] < MIN_CONTRAST]
    assert not worst, f"text below {MIN_CONTRAST}:1 contrast: {worst[:5]}"


def play(bootstrap: str, base: str, user: str, candidates: list[str]) -> str:
    """`user` plays the first of `candidates` short enough to be watched whole within the flow's
    allowed lateness, to the end, ending now (started, then completed, on the broker)."""
    with httpx.Client(base_url=base) as http:
        items = [http.get(f"/explore/api/item/{m}").raise_for_status().json()["item"]
                 for m in candidates]  # fmt: skip
    item = next((i for i in items if i["duration_s"] <= 300), None)
    assert item is not None, f"no short item among {candidates}"
    now, duration = int(time.time() * 1000), float(item["duration_s"])
    common = {"user_id": user, "media_id": item["media_id"], "content_type": item["content_type"]}
    producer = Producer({"bootstrap.servers": bootstrap})
    for kind, ts, position in (("media_started", now - int(duration * 1000), 0.0),
                               ("media_completed", now, duration)):  # fmt: skip
        event = {"event_id": uuid.uuid4().hex, "event_type": kind, "ts": ts,
                 "position_s": position, **common}  # fmt: skip
        producer.produce("user.engagement.events", orjson.dumps(event), key=user.encode())
    assert producer.flush(10) == 0, "the broker did not take the events"
    return str(item["media_id"])


def publish_hostile(bootstrap: str, base: str) -> dict[str, object]:
    """An item whose title is markup, published and searchable in serving's index."""
    event = {
        "media_id": f"hostile-{uuid.uuid4().hex[:8]}", "creator_id": "c-hostile",
        "content_type": "VIDEO", "category": "cooking", "language": "en", "duration_s": 60.0,
        "title": '<img src=x onerror="window.pwned=1">Fish & <b>chips</b>',
        "published_at": int(time.time() * 1000), "tags": ["test"],
    }  # fmt: skip
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce("media.published", orjson.dumps(event), key=str(event["media_id"]).encode())
    assert producer.flush(10) == 0, "the broker did not take the item"
    deadline = time.monotonic() + 15
    with httpx.Client(base_url=base) as http:
        while http.get(f"/explore/api/item/{event['media_id']}").status_code != 200:
            assert time.monotonic() < deadline, "the published item never became searchable"
            time.sleep(0.2)
    return event
