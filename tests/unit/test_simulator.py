"""The traffic simulator, judged by what lands on the topics."""

from __future__ import annotations

import argparse
import io
import itertools
from collections import Counter, defaultdict
from typing import Any

import orjson
import pytest

from feedflow.simulator.command import add_parser, run
from feedflow.simulator.engine import SimConfig, Simulation, Summary
from feedflow.simulator.writers import JsonlSink, ListSink
from kernel.settings import Settings
from operators.contracts import (
    TOPIC_ENGAGEMENT,
    TOPIC_MEDIA,
    EngagementEvent,
    MediaPublished,
    Rejection,
    decode_engagement,
    decode_media,
)

START = 1_700_000_000_000
BASE = SimConfig(users=150, items=600, rate=3000, duration_s=10, seed=11, start_ms=START)


def _run(config: SimConfig, now_ms: int = 0) -> tuple[Simulation, ListSink, Summary]:
    sim = Simulation(config, now_ms=now_ms)
    sink = ListSink()
    return sim, sink, sim.run(sink)


def _jsonl(config: SimConfig) -> bytes:
    buf = io.BytesIO()
    Simulation(config, now_ms=0).run(JsonlSink(buf))
    return buf.getvalue()


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    """One mid-sized run, decoded: media by id, engagement events in emission order."""
    sim, sink, _ = _run(
        SimConfig(users=200, items=800, rate=6000, duration_s=20, seed=5, start_ms=START)
    )
    media: dict[str, MediaPublished] = {}
    removed: list[MediaPublished] = []
    events: list[tuple[str, int, EngagementEvent]] = []
    for topic, key, ts, value in sink.messages:
        if topic == TOPIC_MEDIA:
            item = decode_media(value.encode())
            assert isinstance(item, MediaPublished), (item, value)
            (removed if item.status == "removed" else []).append(item)
            media.setdefault(item.media_id, item)
        else:
            ev = decode_engagement(value.encode())
            assert isinstance(ev, EngagementEvent), (ev, value)
            events.append((key, ts, ev))
    return {"sim": sim, "sink": sink, "media": media, "removed": removed, "events": events}


def test_same_seed_same_bytes_and_another_seed_differs() -> None:
    first, second = _jsonl(BASE), _jsonl(BASE)
    assert first == second
    assert len(first) > 100_000
    other = SimConfig(**{**BASE.__dict__, "seed": 12})
    assert _jsonl(other) != first


def test_jsonl_lines_carry_topic_key_event_time_and_payload_text() -> None:
    lines = _jsonl(BASE).splitlines()
    topics: Counter[str] = Counter()
    for line in lines:
        record = orjson.loads(line)
        assert set(record) == {"topic", "key", "ts", "value"}
        payload = orjson.loads(record["value"])
        topics[record["topic"]] += 1
        if record["topic"] == TOPIC_MEDIA:
            assert record["key"] == payload["media_id"]
        else:
            assert record["key"] == payload["user_id"]
            assert record["ts"] == payload["ts"]
    assert topics[TOPIC_MEDIA] >= BASE.items
    assert topics[TOPIC_ENGAGEMENT] > 10 * topics[TOPIC_MEDIA]


def test_every_payload_decodes_and_every_event_has_context(world: dict[str, Any]) -> None:
    events = world["events"]
    assert len({ev.event_id for _, _, ev in events}) == len(events)
    for key, ts, ev in events:
        assert key == ev.user_id and ts == ev.ts
        assert ev.session_id and ev.content_type in ("VIDEO", "AUDIO")
        assert ev.device and ev.country and ev.language
        if ev.media_id is not None:
            assert ev.content_type == world["media"][ev.media_id].content_type


def test_all_behaviours_occur(world: dict[str, Any]) -> None:
    seen = Counter(ev.event_type for _, _, ev in world["events"])
    expected = {
        "media_started", "media_progress", "media_paused", "media_seeked", "media_stopped",
        "media_completed", "media_replay", "media_skipped", "media_paused_early", "media_liked",
        "media_disliked", "media_shared", "media_added_to_playlist", "subscription_to_creator",
    }  # fmt: skip
    assert expected <= set(seen)
    assert seen["media_progress"] > seen["media_started"] > seen["media_liked"]


def test_catalogue_mixes_video_and_audio_of_all_lengths(world: dict[str, Any]) -> None:
    items = [m for m in world["media"].values() if m.status == "published"]
    kinds = Counter(m.content_type for m in items)
    assert kinds["VIDEO"] > 0.3 * len(items) and kinds["AUDIO"] > 0.2 * len(items)
    durations = sorted(m.duration_s or 0 for m in items)
    assert durations[0] < 60 and durations[-1] > 1800
    assert len({m.category for m in items}) >= 10 and len({m.language for m in items}) >= 5
    for m in items:
        assert m.title and m.description and m.tags


def test_catalogue_arrives_over_time_and_some_items_are_removed(world: dict[str, Any]) -> None:
    sim = world["sim"]
    start, end = sim.plan.start_ms, sim.plan.end_ms
    published = [
        (ts, orjson.loads(v)) for t, _, ts, v in world["sink"].messages if t == TOPIC_MEDIA
    ]
    initial = [p for ts, p in published if p["published_at"] < start and p["status"] == "published"]
    assert len(initial) == sim.config.items
    # The initial catalogue comes first; new items and removals happen inside the span.
    assert all(p["published_at"] < start for _, p in published[: len(initial)])
    later = published[len(initial) :]
    assert any(p["status"] == "published" for _, p in later)
    assert world["removed"] and all(start <= ts < end for ts, _ in later)


def test_removed_items_are_not_started_after_removal(world: dict[str, Any]) -> None:
    removed_at = {
        orjson.loads(v)["media_id"]: ts
        for t, _, ts, v in world["sink"].messages
        if t == TOPIC_MEDIA and b'"removed"' in v.encode()
    }
    for _, ts, ev in world["events"]:
        if ev.event_type == "media_started" and ev.media_id in removed_at:
            assert ts < removed_at[ev.media_id]


def _views(events: list[tuple[str, int, EngagementEvent]]) -> list[list[EngagementEvent]]:
    """Each user's events split into views (a view begins with media_started)."""
    by_user: dict[str, list[EngagementEvent]] = defaultdict(list)
    for _, _, ev in events:
        by_user[ev.user_id].append(ev)
    views = []
    for evs in by_user.values():
        current: list[EngagementEvent] = []
        for ev in evs:
            if ev.event_type in ("media_started", "media_skipped") and current:
                views.append(current)
                current = []
            current.append(ev)
        views.append(current)
    return views


def test_each_user_is_in_time_order_and_the_stream_nearly_so(world: dict[str, Any]) -> None:
    last: dict[str, int] = {}
    for _, ts, ev in world["events"]:
        assert ts >= last.get(ev.user_id, 0)
        last[ev.user_id] = ts
    stamps = [ts for _, ts, _ in world["events"]]
    assert stamps == sorted(stamps)


def test_heartbeats_are_ten_seconds_of_playback_apart(world: dict[str, Any]) -> None:
    checked = 0
    for view in _views(world["events"]):
        for a, b in itertools.pairwise(view):
            if a.event_type == b.event_type == "media_progress":
                assert b.position_s - a.position_s == 10.0  # type: ignore[operator]
                assert b.ts - a.ts >= 10_000
                checked += 1
    assert checked > 1000


def test_seeks_say_where_they_started(world: dict[str, Any]) -> None:
    seeks = [ev for _, _, ev in world["events"] if ev.event_type == "media_seeked"]
    assert seeks
    assert any(ev.position_s < ev.from_position_s for ev in seeks)
    assert any(ev.position_s > ev.from_position_s for ev in seeks)


def test_users_watch_what_they_like_longer_and_complete_it_more(world: dict[str, Any]) -> None:
    truth = {u["user_id"]: u for u in world["sim"].truth()["users"]}
    media = world["media"]
    stats: dict[bool, Counter[str]] = {True: Counter(), False: Counter()}
    liked_w, disliked_w = [], []
    for _, _, ev in world["events"]:
        if ev.media_id is None:
            continue
        u = truth[ev.user_id]
        weight = u["category_weights"][media[ev.media_id].category]
        fav = media[ev.media_id].category in u["top_categories"]
        stats[fav][ev.event_type] += 1
        if ev.event_type == "media_liked":
            liked_w.append(weight)
        elif ev.event_type == "media_disliked":
            disliked_w.append(weight)
    top, rest = stats[True], stats[False]
    assert top["media_completed"] / top["media_started"] > 1.5 * (
        rest["media_completed"] / rest["media_started"]
    )
    early = ("media_paused_early", "media_skipped", "media_disliked")
    assert sum(top[k] for k in early) / top["media_started"] < 0.5 * (
        sum(rest[k] for k in early) / rest["media_started"]
    )
    assert (
        top["media_progress"] / top["media_started"]
        > rest["media_progress"] / rest["media_started"]
    )
    assert sum(liked_w) / len(liked_w) > 3 * sum(disliked_w) / len(disliked_w)


def test_planted_tastes_are_recoverable_from_behaviour(world: dict[str, Any]) -> None:
    truth = {u["user_id"]: u for u in world["sim"].truth()["users"]}
    media = world["media"]
    seconds: dict[str, Counter[str]] = defaultdict(Counter)
    starts: dict[str, Counter[str]] = defaultdict(Counter)
    for _, _, ev in world["events"]:
        if ev.event_type == "media_progress":
            seconds[ev.user_id][media[ev.media_id].category] += 10
        elif ev.event_type == "media_started":
            starts[ev.user_id][ev.content_type] += 1
    active = [u for u, s in seconds.items() if sum(s.values()) >= 1800]
    assert len(active) > 100
    top_ok = sum(seconds[u].most_common(1)[0][0] in truth[u]["top_categories"] for u in active)
    type_ok = sum(
        starts[u].most_common(1)[0][0] == truth[u]["preferred_content_type"] for u in active
    )
    assert top_ok >= 0.8 * len(active)
    assert type_ok >= 0.8 * len(active)


@pytest.mark.parametrize(
    ("users", "rate", "duration", "start"),
    [
        (500, 20_000, 10, START),
        (40, 5_000, 20, START + 7 * 3_600_000),
        (5_000, 10_000, 10, START + 13 * 3_600_000),
    ],
)
def test_rate_times_duration_events(users: int, rate: float, duration: float, start: int) -> None:
    config = SimConfig(
        users=users, items=500, rate=rate, duration_s=duration, seed=3, start_ms=start
    )
    sim, sink, _ = _run(config)
    engagement = sum(1 for m in sink.messages if m[0] == TOPIC_ENGAGEMENT)
    # Sessions are lumpy (a podcast binge is hundreds of events), so small budgets vary more.
    assert engagement == pytest.approx(rate * duration, rel=0.15)
    assert sim.plan.end_ms - sim.plan.start_ms == round(duration * sim.plan.speedup * 1000)


def test_span_ends_now_so_nothing_is_in_the_future() -> None:
    now = START + 123_456
    config = SimConfig(users=100, items=300, rate=2000, duration_s=5, seed=1)
    sim, sink, _ = _run(config, now_ms=now)
    assert sim.plan.end_ms == now
    assert sim.plan.start_ms == now - round(5 * sim.plan.speedup * 1000)
    stamps = [ts for t, _, ts, _ in sink.messages if t == TOPIC_ENGAGEMENT]
    assert min(stamps) >= sim.plan.start_ms and max(stamps) < now


def test_explicit_speedup_sets_the_span() -> None:
    config = SimConfig(
        users=50, items=100, rate=100, duration_s=60, seed=1, start_ms=START, speedup=10
    )
    sim, _, _ = _run(config)
    assert (sim.plan.start_ms, sim.plan.end_ms) == (START, START + 600_000)


def test_malformed_share_is_about_f_and_every_one_is_rejected() -> None:
    config = SimConfig(**{**BASE.__dict__, "malformed": 0.1})
    _, sink, summary = _run(config)
    engagement = [v for t, _, _, v in sink.messages if t == TOPIC_ENGAGEMENT]
    rejected = [v for v in engagement if isinstance(decode_engagement(v.encode()), Rejection)]
    assert len(rejected) == summary.malformed
    assert len(rejected) / len(engagement) == pytest.approx(0.1, abs=0.015)
    assert all(count > 0 for count in summary.malformed_kinds.values())
    assert any(len(v.encode()) > 64 * 1024 for v in rejected)
    media = [v for t, _, _, v in sink.messages if t == TOPIC_MEDIA]
    assert all(not isinstance(decode_media(v.encode()), Rejection) for v in media)


def test_malformed_leave_the_valid_traffic_as_it_was() -> None:
    plain = _run(BASE)[1].messages
    noisy = _run(SimConfig(**{**BASE.__dict__, "malformed": 0.2}))[1].messages
    assert len(plain) == len(noisy)
    same = sum(a == b for a, b in zip(plain, noisy, strict=True))
    assert same == pytest.approx(0.8 * len(plain), rel=0.05)


def _cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="feedflow")
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["simulate", *argv])


def test_command_writes_jsonl_truth_and_summary(tmp_path: Any, capsys: Any) -> None:
    out, truth = tmp_path / "traffic.jsonl", tmp_path / "truth.json"
    args = _cli(
        "--users", "80", "--items", "200", "--rate", "1000", "--duration", "5", "--seed", "9",
        "--malformed", "0.05", "--out", str(out), "--truth", str(truth),
        "--start-ms", str(START), "--json",
    )  # fmt: skip
    assert run(args, Settings()) == 0
    summary = orjson.loads(capsys.readouterr().out)
    lines = out.read_bytes().splitlines()
    assert summary["events"] == len(lines)
    assert summary["topics"][TOPIC_MEDIA] >= 200 and summary["malformed"] > 0
    assert summary["achieved_rate"] > 0 and summary["start_ms"] == START
    planted = orjson.loads(truth.read_bytes())
    assert len(planted["users"]) == 80
    user = planted["users"][0]
    assert sum(user["category_weights"].values()) == pytest.approx(1.0, abs=1e-4)
    assert user["preferred_content_type"] in ("VIDEO", "AUDIO") and user["language"]
    assert len(user["top_categories"]) == 3 and user["favourite_creators"]


def test_command_rejects_impossible_arguments() -> None:
    from feedflow.simulator.errors import SimulatorError

    with pytest.raises(SimulatorError, match="malformed"):
        run(_cli("--malformed", "1.5", "--out", "unused.jsonl"), Settings())
    with pytest.raises(SystemExit):
        _cli("--speedup", "fast")
