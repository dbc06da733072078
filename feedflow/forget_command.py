"""`feedflow forget USER_ID` / `forget --verify USER_ID`: erase a user everywhere.

`forget` publishes an erasure request on `feedflow.erasure` (key: the user id), deletes
what it can reach directly — the user's features, the user's weights in every weekly
version, and the user's rows in the event lake (every file holding one is rewritten) — and
appends an audit entry naming the user by a keyed digest only. The flows
drop their per-user state when they read the request and acknowledge it; events of the
erased history are never applied again (:mod:`operators.erasure`).

`--verify` checks every store and prints one line per store: `clean`, `pending` (a flow has
not acknowledged yet, or a key is still there) or `by design` (a store that holds no
per-user data, and why). Exit code 0 when everything is clean, 1 while something is
pending; `--wait S` polls up to S seconds for the flows. It appends an audit entry too.
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any, Final

from confluent_kafka import KafkaException, Producer

from feedflow.output import add_json_flag, emit
from flows.erasure_in import read_erasures
from flows.lake_sink import lake_of
from flows.topic_reader import TopicReadError
from kernel.errors import FeedflowError
from kernel.settings import Settings
from operators.contracts import TOPIC_ERASURE, ErasureRequest, encode
from state.erasure_log import ErasureLog
from state.feature_store import USER, feature_key
from state.lake import Lake
from state.redis_client import JOB, RedisClient, connect
from state.weights_registry import WeightsRegistry, user_key

# The flows that keep per-user state and acknowledge erasures (flows.engagement,
# flows.learning use these names as FLOW_ID).
ACKING_FLOWS: Final = ("engagement", "learning")
CLEAN, PENDING, BY_DESIGN = "clean", "pending", "by design"
# Stores that hold no per-user data, and why; `--verify` reports them without a check.
BY_CONSTRUCTION: Final = {
    "content flow": "keeps items and creators, no user state; does not read erasures",
    "item stats, boards, co-engagement": "counts over many users, no user id",
    "behaviour space": "item vectors only; a user is folded in per request; the weekly "
    "run skips erased users",
    "cold-start lists": "per cohort; the weekly run skips erased users",
    "online ranker": "weights over features, no user id",
    "serving": "no store; its last-known-features cache (used only while Redis is down) "
    "drops the user on the next read or by eviction",
    "topics": "append-only: raw events and impressions go with the topics' retention",
}
LAKE_AGAIN: Final = "row(s) written before the flows read the request: run `forget` again"
PENDING_EXIT: Final = 1
EXIT_CODES: Final = {
    0: "done (--verify: every store is clean)",
    PENDING_EXIT: "--verify: a store is still pending",
}


class ForgetError(FeedflowError):
    """The erasure request could not be published."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `feedflow forget`."""
    p = sub.add_parser(
        "forget",
        description="Erase a user: publish an erasure request every flow applies, delete the "
        "user's stored features and weights, and keep an audit entry without the raw id. "
        "--verify reports every store checked (exit 1 while something is pending).",
    )
    p.add_argument("user_id")
    p.add_argument("--verify", action="store_true", help="check every store instead")
    p.add_argument("--wait", type=float, default=0.0, help="verify: poll up to S seconds")
    add_json_flag(p)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run `feedflow forget`; returns the exit code."""
    settings.require("redis_url")
    settings.require("kafka_bootstrap_servers")
    client = connect(settings.redis_url, JOB)
    try:
        if args.verify:
            report = verify(settings, client, args.user_id, args.wait)
            emit(report, args.json)
            return 0 if report["complete"] else PENDING_EXIT
        emit(forget(settings, client, args.user_id), args.json)
        return 0
    finally:
        client.close()


def forget(settings: Settings, client: RedisClient, user_id: str) -> dict[str, Any]:
    """Publish the request, delete the user's keys, audit; what was done."""
    request = ErasureRequest(
        user_id=user_id, ts=int(time.time() * 1000), request_id=uuid.uuid4().hex
    )
    publish(settings, request)
    deleted = delete_keys(client, user_id)
    lake = lake_of(settings)
    lake_rows = sum(lake.forget(user_id).values()) if lake is not None else 0
    detail = {"ts": request.ts, "keys_deleted": len(deleted), "lake_rows_deleted": lake_rows}
    audit = ErasureLog(client).audit("forget", user_id, request.request_id, detail)
    return {
        "request_id": request.request_id,
        "ts": request.ts,
        "topic": TOPIC_ERASURE,
        "keys_deleted": len(deleted),
        "lake_rows_deleted": lake_rows,
        "audit_entry": audit,
        "next": "the flows drop the user as they read the request; "
        "check with `feedflow forget --verify USER_ID`",
    }


def publish(settings: Settings, request: ErasureRequest) -> None:
    """Put the request on the erasure topic and wait until the broker has it."""
    errors: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    producer = Producer(settings.kafka(**{"acks": "all", "enable.idempotence": True}))
    try:
        producer.produce(
            TOPIC_ERASURE, encode(request), key=request.user_id.encode(), on_delivery=delivered
        )
        left = producer.flush(30)
    except KafkaException as exc:
        raise ForgetError(f"{TOPIC_ERASURE}: {exc}") from exc
    if errors or left:
        raise ForgetError(f"{TOPIC_ERASURE}: not delivered ({errors or 'timed out'})")


def user_keys(client: RedisClient, user_id: str) -> list[str]:
    """Every Redis key that can hold the user's data: features, and weights per version
    (manifests are kept forever, so every version that ever existed is named)."""
    versions = WeightsRegistry(client, 0).manifests()
    return [feature_key(USER, user_id), *(user_key(user_id, v) for v in sorted(versions))]


def delete_keys(client: RedisClient, user_id: str) -> list[str]:
    """Delete the user's keys; the ones that existed."""
    return _per_key(client, user_keys(client, user_id), "delete")


def _per_key(client: RedisClient, keys: list[str], command: str) -> list[str]:
    """`command` (`delete`, `exists`) on each key in one round trip; the keys it counted."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        getattr(pipe, command)(key)
    return [k for k, n in zip(keys, pipe.execute(), strict=True) if n]


def verify(
    settings: Settings, client: RedisClient, user_id: str, wait_s: float = 0.0
) -> dict[str, Any]:
    """Every store's state for the user (see module doc), polled up to `wait_s` (the topic
    is read once: only the flows' acknowledgements and the keys can change meanwhile)."""
    try:
        mine = [r for r in read_erasures(settings) if r.user_id == user_id]
    except TopicReadError as exc:
        raise ForgetError(f"cannot read {TOPIC_ERASURE}: {exc}") from exc
    log = ErasureLog(client)
    deadline = time.monotonic() + wait_s
    while True:
        report = _check(client, log, user_id, mine, lake_of(settings))
        if report["complete"] or time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    states = {name: s["state"] for name, s in report["stores"].items()}
    log.audit("verify", user_id, report["request_id"] or "", {"stores": states})
    return report


def _check(
    client: RedisClient,
    log: ErasureLog,
    user_id: str,
    mine: list[ErasureRequest],
    lake: Lake | None = None,
) -> dict[str, Any]:
    request = max(mine, key=lambda r: r.ts) if mine else None
    stores: dict[str, dict[str, Any]] = {
        "erasure topic": {
            "state": CLEAN if request else PENDING,
            "detail": f"{len(mine)} request(s)" if mine else "no request for this user",
        }
    }
    left = _per_key(client, user_keys(client, user_id), "exists")
    stores["redis"] = {
        "state": PENDING if left else CLEAN,
        "detail": f"{len(left)} key(s) still there" if left else "features and weights gone",
    }
    acks = log.acks(request.request_id) if request else {}
    for flow in ACKING_FLOWS:
        done = flow in acks
        stores[f"{flow} flow"] = {
            "state": CLEAN if done else PENDING,
            "detail": "state dropped" if done else "not acknowledged yet (is it running?)",
        }
    if lake is not None:
        left_rows = lake.holds(user_id)
        stores["event lake"] = {
            "state": PENDING if left_rows else CLEAN,
            "detail": LAKE_AGAIN if left_rows else "no row of the user",
        }
    for name, why in BY_CONSTRUCTION.items():
        stores[name] = {"state": BY_DESIGN, "detail": why}
    complete = all(s["state"] != PENDING for s in stores.values())
    return {
        "user": log.digest(user_id),
        "request_id": request.request_id if request else None,
        "complete": complete,
        "stores": stores,
    }
