"""Chaos: kill -9 each component in turn under simulated traffic.

    python -m feedflow.bench.chaos [--duration 150] [--rate 200] [--out FILE]

On loopback, with processes of its own: the embedded broker, a redis-server, the content,
engagement and learning flows (recovery on), serving, the simulator paced at `--rate` events
per second, and a feed loop asking serving for a feed every 100 ms (simulated users, and
viewers who never engage, whose impressions close as negative labels for the learning flow).
Once everything answers, the faults come one after the other, each after the system has
recovered from the previous:

1. **redis-server** kill -9 and restarted empty on its port (persistence off): the flows stop
   loudly, serving falls back; then `flow content --rebuild`, `flow engagement --rebuild`
   and a plain restart of the learning flow (its model is operator state, on disk);
2. **serving** kill -9 and restarted;
3. the **learning flow** kill -9 and restarted: it resumes its model (the next version's
   sequence number continues where it was);
4. the **content flow** kill -9 and restarted;
5. the **engagement flow** kill -9 and restarted.

A fault's time to recover runs from the kill to the first sign the component works again
with what came after the kill: a probe user's features (engagement, Redis), a probe item in
the catalogue (content), a newer model version (learning), `/readyz` (serving).

When the traffic has ended and the features settled, a clean run — the content and
engagement flows from the topics' start into a second redis-server — must give the same
user features, item stats, popularity boards, co-engagement records and catalogue, byte for
byte. Trending boards are reported apart: a board keeps its best candidates in the order
updates of different items reach it, which a replay interleaves differently from a live run. The
feed loop's answers are summed up: while serving runs, every feed must be a 200 with items,
and its `fallback` is counted by rung.

The simulated catalogue stays as published at the start (`--no-catalogue-changes`): the
engagement flow reads an item's metadata when it applies a view. A clean run reads the whole
catalogue first, removals included, so it judges views of items removed later without their
metadata; live, the simulated viewers watch a new item at the instant it is published, before
the content flow has stored it, and the miss is cached. Either way the two runs differ by
replay, not by faults (see docs/operations.md).

A broker fault is not part of it: the embedded broker keeps its topics in memory, so a
restarted one is empty (a production cluster replicates partitions; no Kafka broker can be
installed here).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import msgspec
import orjson
import redis
from confluent_kafka import Producer

from feedflow.bench.serving_world import PrivateRedis
from feedflow.stack import LocalStack, free_port, redis_answers
from kernel.settings import load_settings
from operators.contracts import TOPIC_ENGAGEMENT, TOPIC_MEDIA
from operators.feature_codecs import decode_co_record, decode_item_stats
from operators.user_engagement import IDLE_FLUSH_S
from operators.user_features import decode_user_features
from state.feature_store import unstamp
from state.model_registry import VERSIONS_KEY
from state.redis_client import JOB, RedisClient, Role, connect

FEATURES: Final = ("ff:{u:*", "ff:{i:*", "ff:{t:*", "ff:{c:*", "ff:item:*")
SEED: Final = 7
# Faster than production on purpose, so a bounded run sees several versions: snapshots every
# second, feeds that close after 2 s without input, a version after 10 examples. And views
# that close after 20 s of their user's inactivity (two heartbeats) instead of 30 min: idle
# timers run on the wall clock, while the simulator runs event time ~80x faster, so with
# production settings an idle user's open view is due up to 30 min after the traffic, and the
# two runs would be compared while a different subset of those timers had fired in each.
FLOW_ENV: Final = {
    "FEEDFLOW_VIEW_INACTIVITY_S": "20",
    "FEEDFLOW_SNAPSHOT_INTERVAL_S": "1",
    "FEEDFLOW_LABEL_IDLE_S": "2",
    "FEEDFLOW_RANKER_MIN_EXAMPLES": "10",
    "FEEDFLOW_RANKER_PUBLISH_EVERY_S": "1",
    "FEEDFLOW_SERVING_REFRESH_MS": "200",
}
ROOT = Path(__file__).resolve().parents[2]


class ChaosError(AssertionError):
    """Something did not recover within its bound."""


@dataclass
class Proc:
    """One child process (its own session, so a kill reaches all of it)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> Proc:
        """Start (or restart) it with extra arguments; itself."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*self.argv, *extra], cwd=ROOT, env=self.env, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        return self

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL to its whole process group, and wait for it."""
        if self.alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM to its process group, then SIGKILL if it is not gone within 10 s."""
        if not self.alive():
            return
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill9()


@dataclass
class FeedLoop:
    """Asks for a feed every 100 ms and keeps what came back (bounded by `stop`)."""

    url: str
    users: list[str]
    answers: list[tuple[float, int, int, str | None]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        """Ask for feeds every 100 ms until `stop` is set or 100,000 were asked (a thread)."""
        rng = random.Random(SEED)
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while not self.stop.wait(0.1) and len(self.answers) < 100_000:
                user = rng.choice(self.users)
                try:
                    r = client.get("/api/v1/content/feed", params={"user_id": user})
                    body = r.json() if r.status_code == 200 else {}
                    answer = (r.status_code, len(body.get("items", ())), body.get("fallback"))
                except (httpx.HTTPError, ValueError):
                    answer = (0, 0, None)
                self.answers.append((time.monotonic(), *answer))


def values(client: RedisClient) -> dict[str, bytes]:
    """Key → value, for every feature and catalogue key (a few hundred bytes each)."""
    out: dict[str, bytes] = {}
    for pattern in FEATURES:
        for key in client.scan_iter(match=pattern, count=1000):
            value = client.get(key)
            if isinstance(value, bytes):
                out[key.decode()] = value
    return out


def count(client: RedisClient, pattern: str) -> int:
    """Keys matching `pattern`."""
    return sum(1 for _ in client.scan_iter(match=pattern, count=1000))


KINDS: Final = {"ff:{u:": "users", "ff:{i:": "items", "ff:{t:": "boards",
                 "ff:{c:": "co-engagement", "ff:item:": "catalogue"}  # fmt: skip


def kind_of(key: str) -> str:
    """What a compared key holds (`users`, `items`, `boards`, `co-engagement`, `catalogue`)."""
    return next((kind for prefix, kind in KINDS.items() if key.startswith(prefix)), "other")


DECODERS: Final[dict[str, Callable[[bytes], Any]]] = {
    "users": decode_user_features, "items": decode_item_stats, "co-engagement": decode_co_record,
}  # fmt: skip


def explain(key: str, live: bytes | None, clean: bytes | None) -> dict[str, Any]:
    """Which fields of a differing value differ, as `field: [live, clean]` (read-only help for
    whoever looks at a failed run: the stamps, then the decoded record's fields)."""
    sides = [unstamp(v) for v in (live, clean)]
    if any(s is None for s in sides):
        return {"present": [live is not None, clean is not None]}
    (ts_a, a), (ts_b, b) = sides  # type: ignore[misc]
    out: dict[str, Any] = {"stamp": [ts_a, ts_b]} if ts_a != ts_b else {}
    decode = DECODERS.get(kind_of(key))
    if decode is None:
        return out
    try:
        fa, fb = msgspec.structs.asdict(decode(a)), msgspec.structs.asdict(decode(b))
    except (msgspec.DecodeError, TypeError) as exc:
        return {**out, "undecodable": str(exc)}
    for name in fa:
        if fa[name] != fb[name]:
            out[name] = [_plain(fa[name]), _plain(fb[name])]
    return out


def _plain(value: Any) -> Any:
    return value.hex() if isinstance(value, bytes) else msgspec.to_builtins(value)


def is_trending_board(key: str) -> bool:
    """A trending board (not a popularity board): the one stored value that depends on the
    order updates of different items reach it (see :mod:`operators.trending`)."""
    return key.startswith("ff:{t:") and not key.startswith("ff:{t:popular:")


def wait(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Seconds until `check()` held (polled every 100 ms); ChaosError after `timeout_s`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if check():
                return time.monotonic() - started
        except redis.RedisError:
            pass
        time.sleep(0.1)
    raise ChaosError(f"{what}: not within {timeout_s:.0f} s")


def settled(read: Callable[[], dict[str, bytes]], timeout_s: float) -> dict[str, bytes]:
    """The values once the last timers have fired and two reads 3 s apart agree: an idle
    user's views close at most `view_inactivity_s` (or `view_close_grace_s` after a stop) of
    processing time after the user's last event, and a quiet user's record is written
    `IDLE_FLUSH_S` after it."""
    flows = load_settings(FLOW_ENV)
    time.sleep(max(flows.view_close_grace_s, flows.view_inactivity_s, IDLE_FLUSH_S) + 3)
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        now = read()
        if now and now == last:
            return now
        last = now
        time.sleep(3.0)
    raise ChaosError(f"features did not settle within {timeout_s:.0f} s")


class Chaos:
    """The system under test and its faults (see module doc)."""

    def __init__(self, root: Path, duration_s: int, rate: int, users: int, items: int) -> None:
        self.root, self.duration_s, self.rate = root, duration_s, rate
        self.users, self.items = users, items
        self.redis = PrivateRedis(root / "redis")
        self.stack = LocalStack(root / "stack", partitions=2, redis_url=self.redis.url)
        self.info = self.stack.up()
        self.client = connect(self.redis.url, Role(2.0, 2.0))
        self.producer = Producer({"bootstrap.servers": self.info.bootstrap, "linger.ms": 0})
        self.port = free_port()
        self.procs: dict[str, Proc] = {}
        self.catalogue_ids: list[str] = []
        self.probes = 0

    def env(self, redis_url: str, index: str) -> dict[str, str]:
        """The environment of a child: the stack, a Redis and an index directory."""
        return {
            **os.environ, **FLOW_ENV, "KAFKA_BOOTSTRAP_SERVERS": self.info.bootstrap,
            "REDIS_URL": redis_url, "FEEDFLOW_INDEX_DIR": str(self.root / index),
        }  # fmt: skip

    def proc(self, name: str, argv: list[str], redis_url: str = "", index: str = "index") -> Proc:
        """A `feedflow` child with a state directory of its own (not started)."""
        state = self.root / name
        state.mkdir(parents=True, exist_ok=True)
        env = {**self.env(redis_url or self.redis.url, index), "FEEDFLOW_STATE_DIR": str(state)}
        me = [sys.executable, "-m", "feedflow.cli"]
        return Proc(name, [*me, *argv], env, self.root / f"{name}.log")

    # --- probes: something written after a fault, and when it shows -----------------------

    def probe_user(self) -> str:
        """Publish one event of a new probe user; the key their features land in."""
        self.probes += 1
        user = f"chaos-probe-{self.probes}"
        event = {"event_id": uuid.uuid4().hex, "event_type": "media_started", "user_id": user,
                 "media_id": self.catalogue_ids[self.probes % len(self.catalogue_ids)],
                 "ts": int(time.time() * 1000), "position_s": 0.0}  # fmt: skip
        self.producer.produce(TOPIC_ENGAGEMENT, orjson.dumps(event), key=user.encode())
        self.producer.flush(10)
        return f"ff:{{u:{user}}}"

    def probe_item(self) -> str:
        """Publish a new probe item; the key its catalogue record lands in."""
        self.probes += 1
        media = f"chaos-item-{self.probes}"
        now = int(time.time() * 1000)
        item = {"media_id": media, "status": "published", "creator_id": "chaos-creator",
                "content_type": "VIDEO", "title": "probe", "description": "", "category": "news",
                "tags": [], "language": "en", "duration_s": 60.0, "published_at": now}  # fmt: skip
        self.producer.produce(TOPIC_MEDIA, orjson.dumps(item), key=media.encode())
        self.producer.flush(10)
        return f"ff:item:{{{media}}}"

    def model_seq(self) -> float:
        """Sequence number of the newest published ranker version (0: none yet)."""
        top = self.client.zrange(VERSIONS_KEY, -1, -1, withscores=True)
        return float(top[0][1]) if top else 0.0

    def ready(self) -> bool:
        """Whether serving answers `/readyz` with 200."""
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    # --- the run ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start every component and wait until the features flow."""
        p = self.procs
        p["content"] = self.proc("content", ["flow", "content"]).start()
        p["simulator"] = self.proc("simulator", [
            "simulate", "--users", str(self.users), "--items", str(self.items),
            "--rate", str(self.rate), "--duration", str(self.duration_s), "--seed", str(SEED),
            "--no-catalogue-changes",  # see the module doc
        ]).start()  # fmt: skip
        wait(lambda: count(self.client, "ff:item:*") >= self.items, 90, "the catalogue")
        self.catalogue_ids = sorted(
            k.decode()[len("ff:item:{") : -1] for k in self.client.scan_iter("ff:item:*")
        )[:50]
        p["engagement"] = self.proc("engagement", ["flow", "engagement"]).start()
        p["learning"] = self.proc("learning", ["flow", "learning"]).start()
        p["serve"] = self.proc("serve", ["serve", "--port", str(self.port)]).start()
        wait(self.ready, 60, "serving ready")
        wait(lambda: count(self.client, "ff:{u:*") >= 10, 90, "user features")

    def fault_redis(self) -> dict[str, float]:
        """Kill redis-server, restart it empty, rebuild; seconds to recover."""
        killed = time.monotonic()
        self.redis.proc.send_signal(signal.SIGKILL)
        self.redis.proc.wait()
        self.redis.proc = subprocess.Popen(self.redis.proc.args, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.STDOUT)  # fmt: skip
        wait(lambda: redis_answers(self.redis.url), 20, "redis back")
        p = self.procs
        for name in ("content", "engagement", "learning"):
            p[name].stop()  # they stopped loudly or will: restart them in order
        p["content"].start("--rebuild")
        wait(lambda: count(self.client, "ff:item:*") >= self.items, 90, "catalogue rebuilt")
        p["engagement"].start("--rebuild")
        p["learning"].start()
        probe = self.probe_user()
        wait(lambda: bool(self.client.exists(probe)), 120, "features after the Redis loss")
        return {"recovered_s": time.monotonic() - killed}

    def fault_serving(self) -> dict[str, float]:
        """Kill serving and restart it; seconds until ready again."""
        killed = time.monotonic()
        self.procs["serve"].kill9()
        self.procs["serve"].start()
        wait(self.ready, 60, "serving ready again")
        return {"recovered_s": time.monotonic() - killed, "down_from": killed}

    def fault_learning(self) -> dict[str, float]:
        """Kill the learning flow and restart it; seconds until a newer model."""
        wait(lambda: self.model_seq() > 0, 90, "a first model version")
        before = self.model_seq()
        killed = time.monotonic()
        self.procs["learning"].kill9()
        self.procs["learning"].start()
        wait(lambda: self.model_seq() > before, 90, "a model version after the restart")
        return {"recovered_s": time.monotonic() - killed, "seq_before": before,
                "seq_after": self.model_seq()}  # fmt: skip

    def fault_content(self) -> dict[str, float]:
        """Kill the content flow and restart it; seconds until a probe item shows."""
        return self._kill_until_probe("content", self.probe_item)

    def fault_engagement(self) -> dict[str, float]:
        """Kill the engagement flow and restart it; seconds until a probe user shows."""
        return self._kill_until_probe("engagement", self.probe_user)

    def _kill_until_probe(self, name: str, probe: Callable[[], str]) -> dict[str, float]:
        """Kill -9 a flow, write a probe while it is down, restart it, wait for the probe."""
        killed = time.monotonic()
        self.procs[name].kill9()
        key = probe()
        self.procs[name].start()
        wait(lambda: bool(self.client.exists(key)), 60, f"{key} after the {name} restart")
        return {"recovered_s": time.monotonic() - killed}

    def clean_run(self, expected: dict[str, bytes]) -> dict[str, bytes]:
        """Content then engagement from the topics' start into a redis-server of their own."""
        with PrivateRedis(self.root / "clean-redis") as clean:
            client = connect(clean.url, JOB)
            items = sum(k.startswith("ff:item:") for k in expected)
            content = self.proc("clean-content", ["flow", "content", "--no-recovery"],
                                clean.url, "clean-index").start()  # fmt: skip
            engagement = None
            try:
                wait(lambda: count(client, "ff:item:*") >= items, 90, "the clean catalogue")
                argv = ["flow", "engagement", "--no-recovery"]
                engagement = self.proc("clean-engagement", argv, clean.url, "clean-index")
                engagement.start()
                wait(lambda: len(values(client)) >= len(expected), 180, "the clean features")
                return settled(lambda: values(client), 120)
            finally:
                if engagement is not None:
                    engagement.stop()
                content.stop()
                client.close()

    def close(self) -> None:
        """Stop every process, the stack and the Redis."""
        for proc in reversed(list(self.procs.values())):
            proc.stop()
        self.producer.flush(5)
        self.client.close()
        self.stack.down(timeout_s=1.0)
        self.redis.stop()


FAULTS: Final = ("redis", "serving", "learning", "content", "engagement")


def run_chaos(
    root: Path,
    duration_s: int = 150,
    rate: int = 200,
    users: int = 300,
    items: int = 400,
    faults: tuple[str, ...] = FAULTS,
) -> dict[str, Any]:
    """Run the faults (see module doc), in their order; plain data of what happened."""
    chaos = Chaos(root, duration_s, rate, users, items)
    viewers = [f"chaos-viewer-{n}" for n in range(20)]
    simulated = [f"s{SEED}-u{n:06d}" for n in range(users)]
    try:
        chaos.start()
        loop = FeedLoop(f"http://127.0.0.1:{chaos.port}", simulated + viewers)
        thread = threading.Thread(target=loop.run, daemon=True)
        thread.start()
        started = time.monotonic()
        done = {name: getattr(chaos, f"fault_{name}")() for name in FAULTS if name in faults}
        traffic_left = chaos.duration_s - (time.monotonic() - started)
        wait(lambda: not chaos.procs["simulator"].alive(), max(traffic_left, 0) + 120,
             "the end of the traffic")  # fmt: skip
        loop.stop.set()
        thread.join(10)
        first = settled(lambda: values(chaos.client), 180)
        clean = chaos.clean_run(first)
        # Read again: a timer of a state restored by the last restart may fire late (the idle
        # time of a restored user starts over at the restart), and the clean run took a while.
        after = values(chaos.client)
    finally:
        chaos.close()
    down = done.get("serving", {"down_from": 0.0, "recovered_s": 0.0})
    outage = (down["down_from"], down["down_from"] + down["recovered_s"])
    served = [a for a in loop.answers if not outage[0] <= a[0] <= outage[1]]
    differing = sorted(k for k in after.keys() | clean.keys() if after.get(k) != clean.get(k))
    trending = [k for k in differing if is_trending_board(k)]
    if differing:  # both runs' values, to read (`--keep DIR`)
        both = {
            k: [v.hex() if v else None for v in (after.get(k), clean.get(k))] for k in differing
        }
        (root / "differences.json").write_text(json.dumps(both, indent=1))
    return {
        "faults": {
            k: {n: round(v, 2) for n, v in f.items() if n != "down_from"} for k, f in done.items()
        },
        "feeds": {
            "asked": len(loop.answers),
            "while_serving_ran": len(served),
            "not_200_or_empty": sum(1 for a in served if a[1] != 200 or a[2] == 0),
            "fallback": dict(Counter(str(a[3]) for a in served)),
        },
        "keys": len(after),
        "identical_to_clean_run": len(differing) == len(trending),
        "trending_boards_differing": len(trending),
        "differing_keys": dict(Counter(kind_of(k) for k in differing)),
        "differing_sample": differing[:10],
        "changed_after_settling": sorted(
            k for k in after.keys() | first.keys() if after.get(k) != first.get(k)
        ),
        "differences": {
            k: explain(k, after.get(k), clean.get(k))
            for k in differing
            if not k.startswith("ff:{t:")
        },
    }


def main(argv: list[str] | None = None) -> int:
    """The command line: run the faults, print the report; 1 if not identical."""
    parser = argparse.ArgumentParser(prog="python -m feedflow.bench.chaos", description=__doc__)
    parser.add_argument("--duration", type=int, default=150, help="seconds of traffic")
    parser.add_argument("--rate", type=int, default=200, help="simulated events per second")
    parser.add_argument("--out", type=Path, help="also write the report here")
    parser.add_argument("--faults", default=",".join(FAULTS), help="which, in this order")
    parser.add_argument("--keep", type=Path, help="work (and leave the logs) in this directory")
    args = parser.parse_args(argv)
    faults = tuple(f for f in args.faults.split(",") if f)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        report = run_chaos(args.keep, args.duration, args.rate, faults=faults)
    else:
        with tempfile.TemporaryDirectory(prefix="feedflow-chaos-") as tmp:
            report = run_chaos(Path(tmp), args.duration, args.rate, faults=faults)
    text = json.dumps(report, indent=2)
    sys.stdout.write(text + "\n")
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0 if report["identical_to_clean_run"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
