"""`feedflow inspect user ID` / `inspect item ID`: what is stored, as a reader sees it.

`catalogue` shows the stored features under the feature catalogue's names
(:mod:`operators.feature_catalogue`, `docs/features.md`); an item's `publish_age_hours` is
computed at the time of the call, as serving computes it per request.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Final

import msgspec

from feedflow.output import add_json_flag, emit
from kernel.settings import Settings
from operators import feature_catalogue as catalogue
from operators.creator_stats import decode_creator
from operators.dedup import id_hash64
from operators.feature_catalogue import values
from operators.feature_codecs import decode_co_record, decode_item_stats
from operators.user_features import UserFeatures, decode_user_features, vector_of
from state.feature_store import (
    CO_ENGAGEMENT,
    CREATOR,
    ITEM,
    USER,
    RedisFeatureStore,
    feature_key,
)
from state.index_keys import IndexKeys
from state.index_registry import IndexRegistry
from state.item_store import ItemStore
from state.redis_client import FLOW, connect

MISSING: Final = 1
EXIT_CODES: Final = {MISSING: "nothing is stored for the id"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `feedflow inspect`."""
    p = sub.add_parser(
        "inspect",
        description="Print the stored features of one user or one item.",
    )
    p.add_argument("kind", choices=["user", "item"])
    p.add_argument("id", help="user_id or media_id")
    add_json_flag(p)


def as_dict(record: msgspec.Struct) -> dict[str, Any]:
    """Field names and plain values of a record (stored records are positional arrays)."""
    return {name: msgspec.to_builtins(getattr(record, name)) for name in record.__struct_fields__}


def user_view(features: UserFeatures) -> dict[str, Any]:
    """A user's record with packed fields unpacked for people."""
    view = as_dict(features)
    vector = vector_of(features)
    view["vector"] = None if vector is None else [round(float(x), 3) for x in vector]
    view["cold_start"] = features.cold_start
    view["hours"] = list(features.hours)
    view["creators"] = len(features.creator_hashes())
    view["consumed"] = len(features.consumed_hashes())
    view["disliked"] = len(features.disliked_hashes())
    view["co_recent"] = [d.hex() for d in features.co_seeds()]
    return view


def _plain(named: dict[str, Any]) -> dict[str, Any]:
    return {k: msgspec.to_builtins(v) for k, v in named.items()}


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run `feedflow inspect`; returns the exit code (1 when nothing is stored for the id)."""
    settings.require("redis_url")
    client = connect(settings.redis_url, FLOW)
    store = RedisFeatureStore(client)
    if args.kind == "user":
        raw = store.get_many(USER, [args.id])[0]
        found = None if raw is None else user_view(decode_user_features(raw))
        out: dict[str, Any] = {"user_id": args.id, "key": feature_key(USER, args.id)}
        out["features"] = found
        if raw is not None:
            out["catalogue"] = _plain(values(catalogue.USER, decode_user_features(raw)))
        out["ttl_s"] = client.ttl(feature_key(USER, args.id))
    else:
        keys = IndexKeys()
        version = IndexRegistry(client, keys).active()
        [item] = ItemStore(client, keys).features([args.id], version)
        raw = store.get_many(ITEM, [args.id])[0]
        digest = id_hash64(args.id).hex()
        co = store.get_many(CO_ENGAGEMENT, [digest])[0]
        out = {
            "media_id": args.id,
            "index_version": version,
            "metadata": None if item is None else as_dict(item.record),
            "has_vector": item is not None and item.vector is not None,
            "stats": None if raw is None else as_dict(decode_item_stats(raw)),
            "co_engagement_key": feature_key(CO_ENGAGEMENT, digest),
            "co_engagement": None if co is None else as_dict(decode_co_record(co)),
        }
        named = values(catalogue.ITEM, decode_item_stats(raw)) if raw is not None else {}
        if item is not None and item.record.published_at:
            age_h = (time.time() * 1000 - item.record.published_at) / 3_600_000
            named["publish_age_hours"] = round(age_h, 2)
        if item is not None:
            creator = store.get_many(CREATOR, [item.record.creator_id])[0]
            subscribers = decode_creator(creator).subscribers if creator is not None else 0
            named["creator_subscriber_count"] = subscribers
        out["catalogue"] = _plain(named)
    emit(out, args.json)
    missing = out.get("features") is None and out.get("metadata") is None and not out.get("stats")
    return MISSING if missing else 0
