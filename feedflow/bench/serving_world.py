"""A synthetic serving world for the feed benchmark: index snapshot, users, item stats, boards.

Item vectors are the index benchmark's realistic ones (hashing-encoder outputs of a simulated
catalogue, see :func:`feedflow.bench.index_bench.catalogue`); an item's category is its topic.
Creator, content type, language and publication time are drawn per item. The snapshot is
built once per (size, seed) and kept in a cache directory (minutes at 1M items on 2 cores);
later runs register it in a fresh Redis and reuse it. Users are shaped like the flows' own
records: an int8 vector that is the mean of 1-10 items from 1-2 topics, top categories,
creators, recent items, continue watching, consumed and disliked hashes, and the digests of
their recent positive items, each of which has a full co-engagement record (48 neighbours
from the user's topics), so every request reads and scores the co-engagement source.
"""

from __future__ import annotations

import subprocess
import sys
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt

from feedflow.bench.index_bench import catalogue
from feedflow.simulator.vocabulary import CATEGORY_NAMES
from feedflow.stack import free_port, redis_answers, redis_binary
from operators.behaviour import Space
from operators.co_engagement import CoRecord
from operators.content import ItemRecord, Stamp, pack_record
from operators.dedup import id_hash64
from operators.feature_codecs import encode_co_record, encode_item_stats, encode_trending
from operators.item_stats import ItemStatsRecord
from operators.trending import TrendingList
from operators.user_features import UserFeatures, encode_user_features, vector_bytes
from state.behaviour_store import BehaviourStore
from state.feature_store import CO_ENGAGEMENT, ITEM, TRENDING, USER, feature_key, stamp
from state.index_keys import IndexKeys
from state.index_registry import IndexRegistry, VersionInfo
from state.index_replica import RECORDS_FILE, IndexParams, IndexReplica
from state.redis_client import RedisClient
from state.snapshots import DirSnapshotStore
from state.update_log import ADD, LogEntry, UpdateLog

DIM: Final = 64
_records_decoder = msgspec.msgpack.Decoder(list[ItemRecord])
DAY_MS: Final = 86_400_000
LANGUAGES: Final = ("en", "en", "en", "es", "de", "fr")
TYPES: Final = ("VIDEO", "AUDIO")
CO_SEEDS: Final = 8  # a user's recent positive items (the flows' default history)
CO_NEIGHBOURS: Final = 48  # a full record (the flows' default list size)
BEHAVIOUR_ITEMS: Final = 200_000  # items in the behaviour space (those engaged recently)


@dataclass(frozen=True)
class World:
    """What a benchmark needs to know about the world it built."""

    version: str
    items: int
    users: list[str]
    build: dict[str, Any]


def media_id(i: int) -> str:
    """The id of item `i`."""
    return f"m{i:07d}"


def world_version(items: int, seed: int, params: IndexParams) -> str:
    """The index version (and snapshot directory) of one world and graph.

    Example:
        >>> world_version(1000, 7, IndexParams(m=16, ef_construction=200))
        'bench-n1000-s7-m16-c200.1'
    """
    return f"bench-n{items}-s{seed}-m{params.m}-c{params.ef_construction}.1"


def _records(n: int, topics: npt.NDArray[Any], seed: int, now_ms: int) -> list[ItemRecord]:
    rng = np.random.default_rng(seed + 1)
    types = rng.integers(0, 2, n)
    langs = rng.integers(0, len(LANGUAGES), n)
    ages = rng.integers(DAY_MS, 30 * DAY_MS, n)
    durations = rng.integers(60, 3600, n)
    names = CATEGORY_NAMES
    return [
        ItemRecord(
            media_id=media_id(i),
            stamp=Stamp(int(now_ms - ages[i]), i),
            creator_id=f"c{i // 50:06d}",
            content_type=TYPES[types[i]],
            category=names[int(topics[i]) % len(names)],
            language=LANGUAGES[langs[i]],
            duration_s=float(durations[i]),
            published_at=int(now_ms - ages[i]),
        )
        for i in range(n)
    ]


def ensure_snapshot(
    root: Path, items: int, seed: int, params: IndexParams
) -> tuple[VersionInfo, dict[str, Any]]:
    """The cached snapshot of a world of `items` items, built first when missing."""
    store = DirSnapshotStore(root)
    version = world_version(items, seed, params)
    info = VersionInfo(version=version, encoder="hashing-v1", dim=DIM, state="ready")
    found = store.latest(version)
    if found is not None and found[0].items == items:
        return info, {"cached": True, "items": items}
    vectors, topics = catalogue(items, DIM, seed)
    replica = IndexReplica.empty(info, params)
    records = _records(items, topics, seed, int(time.time() * 1000))
    started = time.perf_counter()
    batch = 50_000
    for start in range(0, items, batch):
        chunk = records[start : start + batch]
        replica.index.upsert([r.media_id for r in chunk], vectors[start : start + batch])
        replica.records.update((r.media_id, r) for r in chunk)
        done = min(start + batch, items)
        rate = done / (time.perf_counter() - started)
        sys.stderr.write(f"\rbuilding serving world: {done}/{items} items ({rate:,.0f}/s)")
    sys.stderr.write("\n")
    build_s = time.perf_counter() - started
    replica.save(store)
    return info, {"cached": False, "items": items, "build_s": round(build_s, 1)}


def register(client: RedisClient, keys: IndexKeys, info: VersionInfo) -> None:
    """Make `info` the active version of a fresh Redis."""
    registry = IndexRegistry(client, keys)
    registry.put(info)
    registry.flip(info.version)


def publish_fresh(
    client: RedisClient, keys: IndexKeys, version: str, items: int, count: int, seed: int
) -> list[str]:
    """Append `count` items published in the last 24 h to the update log (as the writer does)."""
    rng = np.random.default_rng(seed + 2)
    vectors, topics = catalogue(count, DIM, seed + 3)
    now = int(time.time() * 1000)
    log = UpdateLog(client, keys, version)
    pipe = client.pipeline(transaction=False)
    ids = []
    for i in range(count):
        mid = media_id(items + i)
        published = now - int(rng.integers(0, DAY_MS))
        record = ItemRecord(
            media_id=mid,
            stamp=Stamp(published, items + i),
            creator_id=f"c{(items + i) // 50:06d}",
            content_type=TYPES[int(rng.integers(0, 2))],
            category=CATEGORY_NAMES[int(topics[i]) % len(CATEGORY_NAMES)],
            language="en",
            duration_s=600.0,
            published_at=published,
        )
        log.append(pipe, LogEntry(ADD, record, vectors[i].tobytes(), b""))
        pipe.set(keys.item(mid), pack_record(record))
        ids.append(mid)
    pipe.execute()
    return ids


def write_item_records(client: RedisClient, root: Path, version: str) -> int:
    """The item store's records (`ff:item:{m}`), as the content flow writes them."""
    found = DirSnapshotStore(root).latest(version)
    if found is None:
        return 0
    records = _records_decoder.decode((found[1] / RECORDS_FILE).read_bytes())
    keys, pipe = IndexKeys(), client.pipeline(transaction=False)
    for record in records:
        pipe.set(keys.item(record.media_id), pack_record(record))
        if len(pipe) >= 10_000:
            pipe.execute()
    pipe.execute()
    return len(records)


def populate(
    client: RedisClient,
    items: int,
    users: int,
    seed: int,
    root: Path,
    version: str,
    behaviour: bool = False,
) -> list[str]:
    """Item records, users, item stats and trending boards (and, if asked, a behaviour-space
    version); returns the user ids."""
    write_item_records(client, root, version)
    vectors, topics = catalogue(items, DIM, seed)
    ids, seeds = write_users(client, vectors, topics, users, seed)
    write_item_stats(client, topics, seed)
    if behaviour:
        write_behaviour(client, root, vectors, seeds, seed)
    return ids


def write_behaviour(
    client: RedisClient,
    root: Path,
    vectors: npt.NDArray[np.float32],
    seeds: Iterable[int],
    seed: int,
) -> None:
    """A behaviour-space version over the users' seed items and a sample of the rest (up to
    :data:`BEHAVIOUR_ITEMS`: the items engaged within a topic's retention), its vectors the
    content vectors bent by noise, published as `feedflow behaviour run` does."""
    rng = np.random.default_rng(seed + 6)
    chosen = set(seeds)
    room = max(min(BEHAVIOUR_ITEMS, len(vectors)) - len(chosen), 0)
    chosen.update(rng.choice(len(vectors), room, replace=False).tolist())
    rows = np.asarray(sorted(chosen), dtype=np.int64)
    noisy = vectors[rows] + rng.normal(0.0, 0.05, (len(rows), vectors.shape[1]))
    space = Space(
        ids=[media_id(int(i)) for i in rows],
        vectors=noisy.astype(np.float32),
        counts=rng.zipf(1.6, len(rows)).clip(2, 100_000).astype(np.int64),
        users=len(rows),
        engagements=len(rows) * 4,
    )
    BehaviourStore(client, DirSnapshotStore(root)).publish(space)


def write_users(
    client: RedisClient,
    vectors: npt.NDArray[np.float32],
    topics: npt.NDArray[Any],
    users: int,
    seed: int,
) -> tuple[list[str], set[int]]:
    """Store `users` user feature records shaped like the engagement flow's; returns the
    user ids and the items some user has among their recent positive items."""
    rng = np.random.default_rng(seed + 4)
    by_topic = [np.flatnonzero(topics == t) for t in range(int(topics.max()) + 1)]
    ids, pipe = [], client.pipeline(transaction=False)
    now = int(time.time() * 1000)
    seeds: dict[int, npt.NDArray[Any]] = {}
    for u in range(users):
        favourites = rng.choice(len(by_topic), int(rng.integers(1, 3)), replace=False)
        pool = np.concatenate([by_topic[int(t)] for t in favourites])
        seen = rng.choice(pool, int(rng.integers(3, 24)))
        for i in seen[:CO_SEEDS].tolist():
            seeds.setdefault(int(i), pool)
        names = [CATEGORY_NAMES[int(t) % len(CATEGORY_NAMES)] for t in favourites]
        feats = UserFeatures(
            ts=now,
            engagements=int(len(seen) * 3),
            vector=vector_bytes(vectors[seen].mean(axis=0)),
            top_categories=tuple(dict.fromkeys(names)),
            genre_affinity_30m=tuple(names[:1]),
            creators=_hashes([f"c{int(i) // 50:06d}" for i in seen[:4]]),
            language="en",
            content_type=TYPES[u % 2] if u % 5 else "MIXED",
            completion_rate_7d=0.6,
            recent=tuple(media_id(int(i)) for i in seen[:3]),
            continue_watching=tuple((media_id(int(i)), 120) for i in seen[3:5]),
            consumed=_hashes([media_id(int(i)) for i in seen[:16]]),
            disliked=_hashes([media_id(int(i)) for i in rng.choice(pool, 2)]),
            co_recent=b"".join(id_hash64(media_id(int(i))) for i in seen[:CO_SEEDS]),
        )
        user = f"bench-u{u:07d}"
        pipe.set(feature_key(USER, user), stamp(now, encode_user_features(feats)))
        ids.append(user)
        if len(pipe) >= 5000:
            pipe.execute()
    pipe.execute()
    write_co_records(client, seeds, rng, now)
    return ids, set(seeds)


def write_co_records(
    client: RedisClient, seeds: dict[int, npt.NDArray[Any]], rng: np.random.Generator, now: int
) -> None:
    """A full co-engagement record (neighbours from the seed's user's categories) for every
    item some user has among their recent positive items."""
    pipe = client.pipeline(transaction=False)
    for item, pool in seeds.items():
        neighbours = rng.choice(pool, CO_NEIGHBOURS, replace=False)
        counts = np.sort(rng.integers(500, 40_000, CO_NEIGHBOURS))[::-1]
        record = CoRecord(media_id(item), now, int(rng.integers(20, 5000)), tuple(
            (media_id(int(n)), int(c)) for n, c in zip(neighbours, counts, strict=True)
        ))  # fmt: skip
        key = feature_key(CO_ENGAGEMENT, id_hash64(record.media_id).hex())
        pipe.set(key, stamp(now, encode_co_record(record)))
        if len(pipe) >= 5000:
            pipe.execute()
    pipe.execute()


def _hashes(ids: list[str]) -> bytes:
    return np.asarray([zlib.crc32(i.encode()) for i in ids], dtype="<u4").tobytes()


def write_item_stats(client: RedisClient, topics: npt.NDArray[Any], seed: int) -> None:
    """Engagement stats for every item, and trending boards per type and category."""
    items = len(topics)
    rng = np.random.default_rng(seed + 5)
    views = rng.zipf(1.6, items).clip(0, 5000)
    like = rng.beta(8, 3, items)
    completion = rng.beta(3, 3, items)
    now = int(time.time() * 1000)
    pipe = client.pipeline(transaction=False)
    for i in range(items):
        rec = ItemStatsRecord(
            version=1, media_id=media_id(i), ts=now, views_1h=int(views[i]),
            plays_24h=int(views[i]) * 10, plays_total=int(views[i]) * 100,
            like_ratio=round(float(like[i]), 4), completion_rate=round(float(completion[i]), 4),
            mean_watch_fraction=round(float(completion[i]), 4), trending_score=float(views[i]),
        )  # fmt: skip
        pipe.set(feature_key(ITEM, media_id(i)), stamp(now, encode_item_stats(rec)))
        if len(pipe) >= 10_000:
            pipe.execute()
    pipe.execute()
    _write_boards(client, views, topics, seed, now)


def _write_boards(
    client: RedisClient, views: npt.NDArray[Any], topics: npt.NDArray[Any], seed: int, now: int
) -> None:
    types = np.random.default_rng(seed + 1).integers(0, 2, len(views))  # as in _records
    top = np.argsort(-views, kind="stable")[:200_000]
    boards: dict[str, list[tuple[str, float]]] = {"all": []}
    for i in top.tolist():
        entry = (media_id(i), float(views[i]))
        category = "category:" + CATEGORY_NAMES[int(topics[i]) % len(CATEGORY_NAMES)]
        for board in ("all", f"type:{TYPES[types[i]]}", category):
            chosen = boards.setdefault(board, [])
            if len(chosen) < 100:
                chosen.append(entry)
    for board, entries in boards.items():
        payload = encode_trending(TrendingList(ts=now, items=tuple(entries)))
        client.set(feature_key(TRENDING, board), stamp(now, payload))


@dataclass(frozen=True)
class RedisTls:
    """Files of a TLS-only redis-server: its certificate and key, and the CA clients trust."""

    cert: Path
    key: Path
    ca: Path


class PrivateRedis:
    """A redis-server of its own on a free loopback port, stopped on exit; with a password
    and/or TLS only when asked (then `url` carries them: `redis://:pw@…`, `rediss://…`)."""

    def __init__(self, workdir: Path, password: str = "", tls: RedisTls | None = None) -> None:
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        argv = [redis_binary(), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(workdir)]  # fmt: skip
        if tls is None:
            argv += ["--port", str(self.port)]
        else:
            argv += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(tls.cert),
                     "--tls-key-file", str(tls.key), "--tls-ca-cert-file", str(tls.ca),
                     "--tls-auth-clients", "no"]  # fmt: skip
        if password:
            argv += ["--requirepass", password]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        auth = f":{password}@" if password else ""
        scheme = "rediss" if tls is not None else "redis"
        query = f"?ssl_ca_certs={tls.ca}" if tls is not None else ""
        self.url = f"{scheme}://{auth}127.0.0.1:{self.port}/0{query}"
        deadline = time.monotonic() + 10
        while not redis_answers(self.url):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("the benchmark's redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        """Terminate the server."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> PrivateRedis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
