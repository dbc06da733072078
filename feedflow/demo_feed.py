"""The demo's proof that the system works: wait for a personalised feed, then print it.

A feed is personalised when serving answers it without falling back (the user has enough
engagement, Redis answered) and at least one item is there because of something the user
watched. The user is the most engaged one among the first simulated users found in Redis
whose A/B arm is personalised (the permanent holdback never gets a personalised feed).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

import httpx
import redis

from operators.user_features import UserFeatures, decode_user_features
from state.feature_store import USER, RedisFeatureStore
from state.redis_client import FLOW, RedisClient, connect

DEMO_WAIT_S: Final = 240.0
SAMPLE: Final = 10
MIN_ENGAGEMENTS: Final = 10  # a history worth showing off


class Child(Protocol):
    """What the demo knows of a component (see feedflow.demo.Component)."""

    name: str
    proc: Any


def most_engaged_user(
    client: RedisClient, scan: int = 300, keep: Callable[[str], bool] = lambda _: True
) -> tuple[str, UserFeatures] | None:
    """A user with some history, the most engaged among the first `scan` found and kept."""
    users = []
    for key in client.scan_iter("ff:{u:*", count=1000):
        users.append(key.decode()[len("ff:{u:") : -1])
        if len(users) >= scan:
            break
    found = RedisFeatureStore(client).get_many(USER, users)
    warm = [(u, decode_user_features(raw)) for u, raw in zip(users, found, strict=True) if raw]
    warm = [(u, f) for u, f in warm if f.engagements >= MIN_ENGAGEMENTS and f.vector and keep(u)]
    return max(warm, key=lambda uf: uf[1].engagements) if warm else None


def personalised(body: dict[str, Any]) -> bool:
    """No fallback, and something the user watched explains an item."""
    reasons = [i["reason"]["type"] for i in body.get("items", [])]
    return body.get("fallback") is None and "because_you_watched" in reasons


def show_sample_feed(
    parts: Sequence[Child],
    url: str,
    redis_url: str,
    timeout_s: float,
    keep: Callable[[str], bool] = lambda _: True,
) -> bool:
    """Wait (bounded) until a feed is personalised and print it; False if it never was.

    `keep`: which users may be shown (those whose A/B arm is personalised).
    """
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll is noise here
    client = connect(redis_url, FLOW)
    started = time.monotonic()
    last: tuple[str, UserFeatures, dict[str, Any]] | None = None
    with contextlib.closing(client), httpx.Client(base_url=url, timeout=5.0) as http:
        while time.monotonic() - started < timeout_s:
            _check_children(parts)
            last = _try_feed(client, http, keep) or last
            if last is not None and personalised(last[2]):
                sys.stdout.write(f"feeds are personalised ({time.monotonic() - started:.0f}s)\n")
                _print_feed(url, *last)
                return True
            time.sleep(2.0)
    sys.stdout.write(f"no personalised feed within {timeout_s:.0f}s; see the logs\n")
    if last is not None:
        _print_feed(url, *last)
    return False


def _check_children(parts: Sequence[Child]) -> None:
    for comp in parts:
        code = comp.proc.poll() if comp.proc is not None else None
        if code is not None and code != 0:
            raise SystemExit(f"{comp.name} exited with {code}; see its log")


def _try_feed(
    client: RedisClient, http: httpx.Client, keep: Callable[[str], bool]
) -> tuple[str, UserFeatures, dict[str, Any]] | None:
    try:
        if http.get("/readyz").status_code != 200:
            return None
        found = most_engaged_user(client, keep=keep)
        if found is None:
            return None
        user, features = found
        r = http.get("/api/v1/content/feed", params={"user_id": user, "limit": SAMPLE})
        return (user, features, r.json()) if r.status_code == 200 else None
    except (httpx.HTTPError, redis.RedisError):
        return None


def _print_feed(url: str, user: str, features: UserFeatures, body: dict[str, Any]) -> None:
    out = sys.stdout
    out.write(f"feed URL: {url}/api/v1/content/feed?user_id={user}&limit={SAMPLE}\n")
    likes = ", ".join(features.top_categories) or "nothing yet"
    out.write(
        f"sample feed for {user} ({features.engagements} engagements; likes {likes};"
        f" prefers {features.content_type or 'no type'}), fallback: {body.get('fallback')}\n"
    )
    for n, item in enumerate(body.get("items", []), 1):
        reason = item["reason"]
        why = reason["type"].replace("_", " ")
        if item["source"] == "continue_watching":
            why = "continue watching"
        elif "anchor_media_id" in reason:
            why += f" {reason['anchor_media_id']}"
        out.write(
            f"  {n:2}. {item['media_id']:<14} {item['content_type']:<6}"
            f" {item['category']:<12} {item['score']:>7.3f}  {why}\n"
        )
    out.write(f"explore this user's feed, features and items: {url}/explore#user={user}\n")
    out.flush()
