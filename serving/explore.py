"""The feed explorer: `/explore`, a page that shows what Feedflow recommends, and why.

Off unless `FEEDFLOW_SERVING_EXPLORE=1` (or `feedflow serve --explore`); `feedflow demo` turns
it on and prints its address. The page is one static file (HTML, CSS and plain JavaScript: no
build step, nothing fetched from elsewhere, so it works offline) over a read-only JSON API:

- `/explore/api/users?q=PREFIX`: users whose id starts with PREFIX, most engaged first (a
  bounded SCAN of the user keys: at most :data:`SCAN_CALLS` calls per Redis node);
- `/explore/api/user/{id}`: the user's features and feed. The feed comes from the feed
  pipeline itself, as a preview: no impression is published, and it counts in neither the
  coverage nor the popular-share metrics (its stage timings do count, as any feed's);
- `/explore/api/item/{id}`: an item's metadata, stats and trending score, its nearest items
  in the content index and the items engaged with together with it;
- `/explore/api/trending?board=NAME` (or `content_type=`, `category=`): one trending board
  (everyone's by default), and the names of the boards held;
- `/explore/api/status`: the index version, its size and the age of its newest change; when
  a flow last wrote features (wall clock) and the newest event reflected in the item stats;
  the model and weights versions.

Titles come from each item's stored source event, one MGET per listing. The explorer shows
user ids and what each one watched: enable it only where everyone who can reach serving may
see that (an internal port), never on the public feed endpoint.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import redis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kernel.settings import DEFAULTS
from operators import feature_catalogue as catalogue
from operators.co_engagement import WEIGHT_SCALE
from operators.content import ItemRecord
from operators.contracts import MediaPublished, decode_media
from operators.dedup import id_hash64
from operators.feature_codecs import decode_co_record, decode_item_stats
from operators.keys import board_name
from operators.user_features import UserFeatures, decode_user_features
from serving import params
from serving.errors import (
    BadParameterError,
    NotReadyError,
    StoreUnavailableError,
    UnknownBoardError,
    UnknownItemError,
)
from serving.feed import FeedRequest, FeedService, Trace
from state.feature_store import (
    CO_ENGAGEMENT,
    ITEM,
    LAST_WRITE_KEY,
    USER,
    RedisFeatureStore,
    feature_key,
)
from state.feature_store import StoreUnavailableError as StoreFailure
from state.item_store import ItemStore
from state.redis_client import RedisClient, nodes

PAGE: Final = Path(__file__).with_name("static") / "explore.html"
SCAN_CALLS: Final = 50  # SCAN calls per node for one user search (COUNT 1000 each)
SEARCH_KEEP: Final = 200  # users read per search, of which the most engaged are listed
LISTED: Final = 20
_GLOB: Final = str.maketrans({c: "\\" + c for c in "*?[]\\"})
_FAILURES: Final = (redis.RedisError, OSError, StoreFailure)

Json = dict[str, Any]


@dataclass(frozen=True)
class Pending:
    """The part of an answer that reads Redis, to run on the thread pool."""

    finish: Callable[[], Json]


def _fields(record: msgspec.Struct) -> Json:
    """A stored record (a positional array on the wire) by field name."""
    return {f: msgspec.to_builtins(getattr(record, f)) for f in record.__struct_fields__}


def _plain(named: dict[str, Any]) -> Json:
    return {k: msgspec.to_builtins(v) for k, v in named.items()}


@dataclass
class Explorer:
    """The explorer's reads: the feed service's in-process state plus Redis.

    `client`: a Redis client for the explorer's own reads (searches and listings); the feed
    preview reads through the feed service's clients as any feed does.
    """

    service: FeedService
    client: RedisClient
    items: ItemStore
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self.store = RedisFeatureStore(self.client, attempts=1)  # a person waits: no retries

    def users(self, prefix: str, limit: int = LISTED) -> Json:
        """Users whose id starts with `prefix`, most engaged first."""
        pattern = feature_key(USER, prefix.translate(_GLOB) + "*")
        found: list[str] = []
        head, tail = len(feature_key(USER, "")) - 1, -1
        for node in nodes(self.client):
            cursor, calls = 0, 0
            while len(found) < SEARCH_KEEP and calls < SCAN_CALLS:
                cursor, keys = node.scan(cursor, match=pattern, count=1000)
                found += [_text(k)[head:tail] for k in keys]
                calls += 1
                if cursor == 0:
                    break
        found = found[:SEARCH_KEEP]
        raws = self.store.get_many(USER, found)
        listed = [(u, decode_user_features(r)) for u, r in zip(found, raws, strict=True) if r]
        listed.sort(key=lambda uf: (-uf[1].engagements, uf[0]))
        return {
            "query": prefix,
            "users": [
                {
                    "user_id": u,
                    "engagements": f.engagements,
                    "cold_start": f.cold_start,
                    "arm": self.service.arm_of(u).name,
                }
                for u, f in listed[:limit]
            ],
        }

    def user(self, user_id: str, limit: int) -> Pending:
        """A user's features and feed: the feed now (a preview: nothing published, nothing
        counted), the titles and the recent items' records when the pending part runs."""
        arm, trace = self.service.arm_of(user_id), Trace()
        request = FeedRequest(user_id, limit, None, LIMITS.diversity)
        feed = self.service.feed(request, trace, publish=False)
        fetched = trace.fetched  # the features the feed was made from: no second read
        assert fetched is not None
        features = fetched.features

        def finish() -> Json:
            items = feed["items"]
            anchors = [i["reason"].get("anchor_media_id") for i in items]
            recent = list(features.recent) if features is not None else []
            titles = self.titles([*(i["media_id"] for i in items), *filter(None, anchors), *recent])
            for item in items:
                item["title"] = titles.get(item["media_id"], "")
                if anchor := item["reason"].get("anchor_media_id"):
                    item["reason"]["anchor_title"] = titles.get(anchor, "")
            return {
                "user_id": user_id,
                "arm": arm.name,
                "personalised": arm.personalised,
                "read": fetched.status,
                "features": None if features is None else self._features(features, titles),
                "weights_version": self.service.weekly.version,
                "has_weights": fetched.weights is not None,
                "feed": feed,
            }

        return Pending(finish)

    def _features(self, f: UserFeatures, titles: dict[str, str]) -> Json:
        records = self.service.catalogue.items(f.recent)
        mix: dict[str, int] = {}
        for r in records:
            if r is not None:
                mix[r.content_type] = mix.get(r.content_type, 0) + 1
        recent = [
            self._card(r, titles) if r is not None else {"media_id": m, "title": "", "gone": True}
            for m, r in zip(f.recent, records, strict=True)
        ]
        return {
            "engagements": f.engagements,
            "cold_start": f.cold_start,
            "event_time_ms": f.ts,
            "top_categories": list(f.top_categories),
            "session_categories": list(f.genre_affinity_30m),
            "content_type": f.content_type,
            "recent_mix": mix,
            "language": f.language,
            "completion_rate_7d": f.completion_rate_7d,
            "avg_session_s": f.avg_session_s,
            "subscriptions": f.subscriptions,
            "recent": recent,
        }

    def item(self, media_id: str, limit: int) -> Json:
        """An item's metadata, stats, content neighbours and co-engaged items."""
        index = self.service.catalogue
        record = index.items([media_id])[0]
        if record is None:
            raise UnknownItemError(f"media_id {media_id!r} is not in the served index")
        hits = index.similar(media_id, limit)
        digest = id_hash64(media_id).hex()
        [raw_stats] = self.store.get_many(ITEM, [media_id])
        [raw_co] = self.store.get_many(CO_ENGAGEMENT, [digest])
        co = decode_co_record(raw_co) if raw_co is not None else None
        neighbours = list(co.neighbours[:limit]) if co is not None else []
        stats = decode_item_stats(raw_stats) if raw_stats is not None else None
        ids = [media_id, *(m for m, _ in hits), *(m for m, _ in neighbours)]
        titles = self.titles(ids)
        return {
            "item": {
                **self._card(record, titles),
                "tags": list(record.tags),
                "language": record.language,
                "duration_s": record.duration_s,
                "published_at": record.published_at,
            },
            "stats": None if stats is None else _fields(stats),
            "features": {} if stats is None else _plain(catalogue.values(catalogue.ITEM, stats)),
            "similar": self._scored(hits, titles),
            # Links as the co-engagement record counts them: 1 for a pair watched one after
            # the other, less for pairs further apart in a user's history.
            "co_engaged": self._scored([(m, n / WEIGHT_SCALE) for m, n in neighbours], titles),
            "co_engagements": co.engagements if co is not None else 0,
        }

    def trending(self, name: str, limit: int) -> Json:
        """One board's items, and the names of the boards this process holds."""
        boards = self.service.trending
        if name not in boards.names():
            raise UnknownBoardError(f"no trending board {name!r} is held here")
        board = list(boards.board(name))[:limit]
        titles = self.titles([m for m, _ in board])
        names = [n for n in boards.names() if boards.board(n)]
        return {"board": name, "boards": names, "items": self._scored(board, titles)}

    def status(self) -> Json:
        """How fresh what is served is."""
        now_ms = self.clock() * 1000
        index = self.service.catalogue
        log_id = getattr(index, "log_id", None)
        changed = int(log_id.split("-")[0]) if log_id else None
        top = [m for m, _ in self.service.trending.board(board_name())][:50]
        stamps = [decode_item_stats(r).ts for r in self.store.get_many(ITEM, top) if r]
        newest = max(stamps, default=None)
        raw = self.client.get(LAST_WRITE_KEY)
        written = int(raw) if raw is not None else None
        return {
            "index": {
                "version": index.version,
                "items": len(index),
                "last_change_ms": changed,
                "last_change_age_s": _age(now_ms, changed),
            },
            "features": {
                "last_write_ms": written,
                "last_write_age_s": _age(now_ms, written),
                "newest_item_event_ms": newest,
                "newest_item_event_age_s": _age(now_ms, newest),
            },
            "model_version": self.service.models.model.version,
            "weights_version": self.service.weekly.version,
            "now_ms": int(now_ms),
        }

    def titles(self, ids: Sequence[str]) -> dict[str, str]:
        """Each item's title, from its stored source event ("" when none is stored)."""
        unique = list(dict.fromkeys(ids))
        if not unique:
            return {}
        out = {}
        for media_id, raw in zip(unique, self.items.sources(unique), strict=True):
            event = decode_media(raw) if raw is not None else None
            out[media_id] = event.title if isinstance(event, MediaPublished) else ""
        return out

    def _card(self, record: ItemRecord, titles: dict[str, str]) -> Json:
        return {
            "media_id": record.media_id,
            "title": titles.get(record.media_id, ""),
            "content_type": record.content_type,
            "category": record.category,
            "creator_id": record.creator_id,
        }

    def _scored(self, pairs: Sequence[tuple[str, float]], titles: dict[str, str]) -> list[Json]:
        records = self.service.catalogue.items([m for m, _ in pairs])
        return [
            {**self._card(r, titles), "score": round(score, 4)}
            for (_, score), r in zip(pairs, records, strict=True)
            if r is not None
        ]


def _text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key


def _age(now_ms: float, then_ms: int | None) -> float | None:
    return None if then_ms is None else round(max(now_ms - then_ms, 0) / 1000, 1)


LIMITS: Final = params.Limits(LISTED, 50, DEFAULTS.feed_diversity)  # the page's list sizes


def routes(
    explorer: Explorer, ready: Callable[[], bool], json: Callable[[Any], Response]
) -> list[Route]:
    """The page and its API.

    Reads that touch Redis run on the thread pool: a slow Redis holds a worker thread, never
    the event loop every feed request shares. A user's feed preview is the exception: it runs
    on the event loop, as every feed does (the feed service is not shared across threads).
    """
    page = PAGE.read_bytes()

    async def index(_: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8")

    def answer(read: Callable[[Request], Any]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if not ready():
                raise NotReadyError("the index is not loaded yet; see /readyz")
            try:
                body = read(request)
                if isinstance(body, Pending):
                    body = await run_in_threadpool(body.finish)
            except _FAILURES as exc:
                raise StoreUnavailableError(f"Redis did not answer: {exc}") from exc
            return json(body)

        return endpoint

    def query(request: Request) -> dict[str, str]:
        return params.query(request.scope["query_string"])

    def users(request: Request) -> Pending:
        prefix = query(request).get("q", "")
        if len(prefix) > params.MAX_ID:
            raise BadParameterError("q", f"at most {params.MAX_ID} characters")
        return Pending(lambda: explorer.users(prefix))

    def user(request: Request) -> Pending:
        user_id = params.identifier(request.path_params["user_id"], "user_id")
        limit = params.limit(query(request).get("limit"), LIMITS)
        return explorer.user(user_id, limit)

    def item(request: Request) -> Pending:
        media_id = params.identifier(request.path_params["media_id"], "media_id")
        limit = params.limit(query(request).get("limit"), LIMITS)
        return Pending(lambda: explorer.item(media_id, limit))

    def trending(request: Request) -> Pending:
        q = query(request)
        name = q.get("board") or board_name(
            content_type=params.content_type(q.get("content_type")),
            category=params.category(q.get("category")),
        )
        limit = params.limit(q.get("limit"), LIMITS)
        return Pending(lambda: explorer.trending(name, limit))

    return [
        Route("/explore", index),
        Route("/explore/api/users", answer(users)),
        Route("/explore/api/user/{user_id:path}", answer(user)),
        Route("/explore/api/item/{media_id:path}", answer(item)),
        Route("/explore/api/trending", answer(trending)),
        Route("/explore/api/status", answer(lambda _: Pending(explorer.status))),
    ]
